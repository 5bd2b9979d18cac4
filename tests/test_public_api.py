import subprocess
import sys

import paretoalign


def test_every_public_name_resolves():
    for name in paretoalign.__all__:
        assert getattr(paretoalign, name) is not None, name


def test_import_and_help_do_not_load_torch():
    code = "import sys, paretoalign, paretoalign.interfaces.cli as c; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_of_every_command_loads_no_model_library():
    """--help answers in well under a second because no command's parser imports torch, transformers or peft."""
    code = """
import contextlib, io, sys
from paretoalign.interfaces.cli import main
from paretoalign.methods import RECIPES
commands = [["--help"], ["fit", "--help"], ["generate", "--help"], ["eval", "--help"], ["demo", "--help"]]
commands += [["fit", name, "--help"] for name in RECIPES]
for argv in commands:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        main(argv)
    assert "usage:" in out.getvalue(), argv
print(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
