import os
import sys
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import make_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny random Llama + ChatML BPE tokenizer (seed 0)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory):
    """A second tiny model with the same architecture and tokenizer but other weights (seed 1)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-b"), seed=1)


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """The tiny model loaded once, in eval mode, with a left-padding tokenizer: (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    return model, tokenizer


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Tiny models run fastest on one thread and don't stall when the machine is busy; integration tests on
    the real model keep every thread."""
    if request.node.get_closest_marker("integration") or "torch" not in sys.modules:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state; a test module that built an Accelerator (ours or TRL's)
    with other settings must not leak it into the next module."""
    yield
    if "accelerate.state" in sys.modules:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


def _fail_if_ours(show, message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` that raises a deprecation warning whose caller is paretoalign code. transformers
    attributes a deprecated forward argument to torch's ``Module.__call__``, which pyproject's module filters
    cannot see through, so the stack is walked past torch's module plumbing to the call that passed it."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename, frame.f_lineno) != (filename, lineno):
        frame = frame.f_back
    plumbing = frame is not None and frame.f_globals.get("__name__") == "torch.nn.modules.module"
    while frame is not None and frame.f_globals.get("__name__") == "torch.nn.modules.module":
        frame = frame.f_back
    caller = frame.f_globals.get("__name__", "") if frame is not None else ""
    if plumbing and issubclass(category, (DeprecationWarning, FutureWarning)) and caller.startswith("paretoalign."):
        raise message if isinstance(message, Warning) else category(message)
    show(message, category, filename, lineno, file, line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item):
    """Within pytest's warning capture: deprecated forward arguments passed by our code fail the test."""
    show = warnings.showwarning
    warnings.showwarning = lambda *args: _fail_if_ours(show, *args)
    try:
        return (yield)
    finally:
        warnings.showwarning = show
