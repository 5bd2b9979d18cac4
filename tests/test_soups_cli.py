"""``paretoalign soups train|generate`` on the tiny model, through the top-level command line."""

from __future__ import annotations

import json

import pytest

from paretoalign.interfaces.cli import main

TRAIN_FLAGS = ["--trainer", "dpo", "--train-prompts", "3", "--samples", "2", "--max-new-tokens", "8", "--epochs", "1"]


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def soup_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("soup-run") / "run"
    argv = ["soups", "train", "--objectives", "conciseness,informativeness", "--out", str(out),
            "--model", str(tiny_model_dir), *TRAIN_FLAGS]
    assert main(argv) == 0
    return out


def test_train_writes_a_run_directory_with_adapters_and_compute(soup_run, tiny_model_dir):
    manifest = json.loads((soup_run / "manifest.json").read_text())
    assert manifest["method"] == "soups" and manifest["objectives"] == ["conciseness", "informativeness"]
    assert manifest["base_model"] == str(tiny_model_dir.resolve())
    assert manifest["budget"]["prompts"] == 3 and manifest["budget"]["samples"] == 2
    for name in ("conciseness", "informativeness"):
        artifact = manifest["artifacts"][f"adapter:{name}"]
        assert artifact["kind"] == "adapter" and (soup_run / artifact["path"] / "adapter_config.json").is_file()
    compute = json.loads((soup_run / manifest["artifacts"]["compute"]["path"]).read_text())
    assert manifest["training_cost"] == {k: compute[k] for k in ("generated_tokens", "trained_tokens", "wall_time_s")}
    assert compute["generated_tokens"] > 0 and compute["trained_tokens"] > 0


def test_generate_merges_for_the_preference_and_repeats_with_a_seed(capsys, soup_run):
    argv = ["soups", "generate", str(soup_run), "--preference", "conciseness=0.3,informativeness=0.7",
            "--prompt", "How do I cook rice?", "--prompt", "Write a short poem about the sea.",
            "--max-new-tokens", "6", "--seed", "3", "--dtype", "float32"]
    code, first, err = _run(capsys, argv)
    assert code == 0, err
    assert len(first.strip("\n").split("\n\n")) >= 1
    assert _run(capsys, argv)[1] == first


@pytest.mark.parametrize("argv_tail, fragment", [
    (["--preference", "conciseness=0.5,friendliness=0.5"], "unknown objective 'friendliness'"),
    (["--preference", "conciseness=0.5,informativeness=0.7"], "weights sum to 1.2"),
])
def test_generate_errors_are_one_line_exit_2(capsys, soup_run, argv_tail, fragment):
    code, _, err = _run(capsys, ["soups", "generate", str(soup_run), "--prompt", "hi", *argv_tail])
    assert code == 2
    assert err.count("\n") == 1 and fragment in err


def test_train_refuses_bad_input_in_one_line(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    cases = [
        (["--objectives", "conciseness", "--out", str(tmp_path)], "is not a paretoalign run"),
        (["--objectives", "nope", "--out", str(tmp_path / "new")], "unknown objective 'nope'"),
        (["--objectives", "conciseness", "--out", str(tmp_path / "new"), "--epochs", "0"], "--epochs must be > 0"),
        (["--objectives", "conciseness", "--out", str(tmp_path / "new"), "--samples", "1"], "samples must be >= 2"),
    ]
    for tail, fragment in cases:
        code, _, err = _run(capsys, ["soups", "train", *tail])
        assert code == 2 and err.count("\n") == 1 and fragment in err, err
    code, _, err = _run(capsys, ["soups", "generate", str(tmp_path), "--preference", "a=1", "--prompt", "hi"])
    assert code == 2 and "not a paretoalign run directory" in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["soups", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "generate" in out
