"""``paretoalign serve``: the flags it refuses, and a fitted soups run served to an OpenAI client end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import openai
import pytest

from paretoalign.core.errors import ConfigError
from paretoalign.interfaces.serve_cli import build_parser, is_loopback, load_served_models, settings_from_args
from paretoalign.methods import get_recipe

SERVE = "import sys; from paretoalign.interfaces.serve_cli import main; sys.exit(main(sys.argv[1:]))"
TINY_SOUPS = dict(prompts=3, samples=2, max_new_tokens=6, epochs=1, batch_size=2, lr=1e-3, max_length=160,
                  progress=False)


def settings(*flags: str):
    return settings_from_args(build_parser().parse_args(["base", *flags]))


@pytest.mark.parametrize("host, expected", [("127.0.0.1", True), ("127.0.0.5", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("192.168.1.4", False),
                                            ("example.org", False)])
def test_loopback_addresses(host, expected):
    assert is_loopback(host) is expected


def test_an_open_address_needs_a_key_or_insecure(monkeypatch):
    with pytest.raises(ConfigError, match="without an API key.*--insecure"):
        settings("--host", "0.0.0.0")
    assert settings("--host", "0.0.0.0", "--insecure").api_key is None
    monkeypatch.setenv("PARETO_TEST_KEY", "k3y")
    assert settings("--host", "0.0.0.0", "--api-key-env", "PARETO_TEST_KEY").api_key == "k3y"
    monkeypatch.setenv("PARETO_TEST_KEY", " ")
    with pytest.raises(ConfigError, match="PARETO_TEST_KEY, which is not set or empty"):
        settings("--api-key-env", "PARETO_TEST_KEY")


@pytest.mark.parametrize("flags, message", [(["--max-batch-size", "0"], "--max-batch-size must be >= 1"),
                                            (["--max-queue", "-1"], "--max-queue must be >= 1"),
                                            (["--request-timeout", "0"], "--request-timeout > 0"),
                                            (["--port", "70000"], "--port must be between")])
def test_bad_limits_are_one_line_errors(flags, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(*flags)


def test_runs_that_cannot_be_served_are_refused(tmp_path):
    for folder in ("a/run", "b/run"):
        (tmp_path / folder).mkdir(parents=True)
    with pytest.raises(ConfigError, match="both be served as 'run'"):
        load_served_models([str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")])
    (tmp_path / "notes").mkdir()
    with pytest.raises(ConfigError, match="not a paretoalign run"):
        load_served_models([str(tmp_path / "notes")])


@pytest.fixture(scope="module")
def soups_run(tiny_model_dir, tmp_path_factory):
    recipe = get_recipe("soups")
    config = recipe.config("quick", model=str(tiny_model_dir), **TINY_SOUPS)
    return recipe.fit("conciseness,informativeness", tmp_path_factory.mktemp("runs") / "demo-soups", config).path


def test_serve_a_soups_run_to_an_openai_client_with_a_key(soups_run):
    env = {**os.environ, "PARETO_SERVE_KEY": "serve-key", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", SERVE, str(soups_run), "--port", "0", "--api-key-env", "PARETO_SERVE_KEY",
               "--device", "cpu", "--dtype", "float32"]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = _port_from_log(server)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="serve-key", max_retries=0)
        (card,) = client.models.list().data
        assert card.id == "demo-soups" and card.model_dump()["method"] == "soups"
        assert [o["name"] for o in card.model_dump()["objectives"]] == ["conciseness", "informativeness"]
        answer = client.chat.completions.create(
            model="demo-soups", messages=[{"role": "user", "content": "How do I cook rice?"}], max_tokens=8, seed=0,
            extra_body={"preference": "conciseness=0.8,informativeness=0.2", "return_scores": True})
        assert answer.model_dump()["preference_applied"]["weights"] == pytest.approx(
            {"conciseness": 0.8, "informativeness": 0.2})
        assert set(answer.choices[0].model_dump()["scores"]) == {"conciseness", "informativeness"}
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="guess", max_retries=0).models.list()
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0


def _port_from_log(server: subprocess.Popen, timeout: float = 120) -> int:
    """The port uvicorn reports once it listens (``--port 0`` picks a free one)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line and server.poll() is not None:
            break
        seen.append(line)
        match = re.search(r"running on http://127\.0\.0\.1:(\d+)", line, re.IGNORECASE)
        if match:
            return int(match.group(1))
    raise AssertionError("the server did not start:\n" + "".join(seen[-20:]))
