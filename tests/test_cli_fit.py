"""``paretoalign fit`` / ``METHOD STAGE`` / ``generate --run`` on the tiny model, and their one-line errors."""

from __future__ import annotations

import json

import pytest

from paretoalign.interfaces.cli import main

SOUPS_FLAGS = ["--prompts", "3", "--samples", "2", "--max-new-tokens", "6", "--epochs", "1", "--batch-size", "2",
               "--lr", "1e-3", "--max-length", "160", "--no-progress"]


@pytest.fixture(scope="module")
def soups_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "soups"
    assert main(["fit", "soups", "--objectives", "conciseness,simplicity", "--out", str(out),
                 "--model", str(tiny_model_dir), *SOUPS_FLAGS]) == 0
    return out


def _one_line_error(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err, err
    assert "\n" not in err and "Traceback" not in err


def test_fit_writes_a_finished_run_and_generate_answers_with_it(soups_run, capsys):
    manifest = json.loads((soups_run / "manifest.json").read_text())
    assert manifest["method"] == "soups" and manifest["status"] == "finished"
    assert manifest["fingerprint"]["config"]["trainer"] == "dpo"  # the quick preset
    assert main(["generate", "--run", str(soups_run), "--preference", "conciseness=0.3,simplicity=0.7",
                 "--prompt", "How do I cook rice?", "--prompt", "Name a colour.", "--max-new-tokens", "5",
                 "--jsonl", "--scores", "--dtype", "float32"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["prompt"] for row in rows] == ["How do I cook rice?", "Name a colour."]
    for row in rows:
        assert row["preference"] == {"conciseness": 0.3, "simplicity": 0.7}
        assert row["finish_reason"] in ("eos", "length") and row["cut_off"] == (row["finish_reason"] == "length")
        assert row["steering"]["merge_weights"] == {"conciseness": 0.3, "simplicity": 0.7}
        assert set(row["scores"]) == {"conciseness", "simplicity"} and row["scores"]["conciseness"] <= 0


def test_a_second_fit_with_the_same_flags_does_nothing(soups_run, tiny_model_dir, capsys):
    before = (soups_run / "manifest.json").read_text()
    assert main(["soups", "train", "--objectives", "conciseness,simplicity", "--out", str(soups_run),
                 "--model", str(tiny_model_dir), *SOUPS_FLAGS]) == 0
    captured = capsys.readouterr()
    assert "finished soups run with these settings; nothing to do" in captured.err
    assert (soups_run / "manifest.json").read_text() == before


def test_a_stage_command_stops_after_its_stage_and_fit_goes_on(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "staged"
    argv = ["--objectives", "conciseness,simplicity", "--out", str(out), "--model", str(tiny_model_dir), *SOUPS_FLAGS]
    assert main(["soups", "samples", *argv]) == 0
    assert "stopped after samples" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and list(manifest["stages"]) == ["samples"]
    assert main(["fit", "soups", *argv]) == 0
    assert "stages done: samples" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"


def test_bad_input_is_one_line_exit_2(soups_run, tiny_model_dir, tmp_path, capsys):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("learning_rate: 0.1\n")
    base = ["--objectives", "conciseness,simplicity", "--model", str(tiny_model_dir)]
    _one_line_error(capsys, ["fit", "soups", *base, "--out", str(tmp_path / "a"), "--config", str(yaml_file)],
                    "unknown setting 'learning_rate' for SoupsConfig; its settings are: model, trainer")
    _one_line_error(capsys, ["fit", "soups", *base, "--out", str(tmp_path / "b"), "--batch-size", "many"],
                    "batch_size must be an integer, got 'many'")
    _one_line_error(capsys, ["fit", "soups", *base, "--out", str(soups_run), *SOUPS_FLAGS[:-1], "--lr", "0.5"],
                    "was fitted with another config.lr (0.001, not 0.5); pass --overwrite")
    _one_line_error(capsys, ["fit", "mod", *base, "--out", str(soups_run)], "holds a 'soups' run, not a 'mod' one")
    _one_line_error(capsys, ["generate", "--run", str(tmp_path / "nowhere"), "--prompt", "hi"], "does not exist")
    _one_line_error(capsys, ["generate", "--run", str(soups_run), "--prompt", "hi", "--preference", "friendliness=1"],
                    "unknown objective 'friendliness'; known objectives: conciseness, simplicity")
    _one_line_error(capsys, ["generate", "--run", str(soups_run), "--prompt", "hi", "--preference",
                             "conciseness=1", "--constraint", "length_cost<=4", "--dtype", "float32"],
                    "method 'soups' takes no constraints")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
