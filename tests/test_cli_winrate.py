"""``paretoalign winrate`` and ``paretoalign arena`` on a tiny psoups run: what they print and write, the library
calls as their oracle, and the one-line errors of bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from test_cli_fit import _one_line_error

from paretoalign.evaluation.arena import win_rate_table
from paretoalign.generation import GenerationConfig
from paretoalign.interfaces.cli import main
from paretoalign.interfaces.pairwise_cli import eval_prompts
from paretoalign.methods.psoups import load_variant, parse_dimensions, win_rate_combinations
from paretoalign.objectives import ObjectiveJudge, get_objective

FIT_FLAGS = ["--dimensions", "P1A,P2A", "--prompts", "4", "--max-new-tokens", "8", "--epochs", "1", "--batch-size",
             "2", "--lr", "1e-3", "--max-length", "160", "--ppo-steps", "1", "--lora-r", "4", "--multitask", "--pmorl",
             "--device", "cpu", "--no-progress"]
EVAL_FLAGS = ["--prompts", "3", "--max-new-tokens", "5", "--dtype", "float32", "--device", "cpu"]


@pytest.fixture(scope="module")
def psoups_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-psoups") / "run"
    assert main(["fit", "psoups", "--objectives", "simplicity,conciseness", "--out", str(out),
                 "--model", str(tiny_model_dir), *FIT_FLAGS]) == 0
    return out


def test_winrate_prints_and_writes_the_library_table(psoups_run, tmp_path, capsys):
    out = tmp_path / "winrate"
    assert main(["winrate", "--run", str(psoups_run), "--out", str(out), *EVAL_FLAGS]) == 0
    printed = capsys.readouterr().out
    table = json.loads((out / "winrate.json").read_text())
    markdown = (out / "winrate.md").read_text()
    assert markdown.strip() in printed and sorted(p.name for p in out.iterdir()) == ["winrate.json", "winrate.md"]
    lines = markdown.splitlines()
    assert lines[2] == "| preference | vs prompting | vs multitask | vs pmorl |"
    assert [line.split(" | ")[0] for line in lines[4:]] == ["| P1A", "| P2A", "| P1A + P2A"]
    assert table["judge"] == "objectives" and table["prompts"] == 3 and table["dataset"] == "instructions"
    for row in table["rows"]:
        overall = row["overall"]
        assert overall["count"] == 3 * len(row["criteria"])
        assert overall["wins"] == sum(rate["wins"] for rate in row["criteria"].values())
        assert f"{overall['rate']:.2f} [{overall['low']:.2f}, {overall['high']:.2f}]" in markdown

    # oracle: the same library calls with the same prompts, judge and sampling give the same table
    dimensions = parse_dimensions(["P1A,P2A"], [])
    baselines = {name: load_variant(psoups_run, name, "cpu", "float32") for name in ("prompting", "multitask", "pmorl")}
    generation = GenerationConfig(max_new_tokens=5, temperature=0.7, do_sample=True, top_p=1.0, top_k=0, seed=0)
    judge = ObjectiveJudge(dimensions={"P1A": ("simplicity", 1), "P2A": ("conciseness", 1)}, seed=0)
    expected = win_rate_table(load_variant(psoups_run, "soup", "cpu", "float32"), baselines,
                              eval_prompts("instructions", 3, 0), win_rate_combinations(dimensions), judge, generation)
    assert table["rows"] == expected["rows"]


def test_winrate_against_one_baseline(psoups_run, tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["winrate", "--run", str(psoups_run), "--baselines", "prompting", "--out", str(out), *EVAL_FLAGS]) == 0
    table = json.loads((out / "winrate.json").read_text())
    assert {row["baseline"] for row in table["rows"]} == {"prompting"} and len(table["rows"]) == 3
    assert "| preference | vs prompting |" in capsys.readouterr().out


def test_arena_of_a_run_and_an_instant_method(psoups_run, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "arena"
    assert main(["arena", "--a", str(psoups_run), "--preference-a", "P2A=1", "--b", "base", "--model",
                 str(tiny_model_dir), "--reward", "conciseness", "--cost", "length_cost?budget=3",
                 "--criterion", "P2A", "--criterion", "simplicity", "--out", str(out), *EVAL_FLAGS]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "arena.json").read_text())
    assert (out / "arena.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["a"] == str(psoups_run) and results["b"] == "base" and results["preference_a"] == {"P2A": 1.0}
    assert set(results["criteria"]) == {"P2A", "simplicity"} and results["prompts"] == 3
    # oracle: the reward and cost objectives scored on the stored answers give the printed counts
    pairs = results["pairs"]
    reward, cost = get_objective("conciseness"), get_objective("length_cost?budget=3")
    prompts = [pair["prompt"] for pair in pairs]
    reward_a, reward_b = (reward.orient(reward.score(prompts, [pair[key] for pair in pairs]))
                          for key in ("response_a", "response_b"))
    cost_a = cost.score(prompts, [pair["response_a"] for pair in pairs])
    better = [a > b for a, b in zip(reward_a, reward_b)]
    safe = [float(c) <= 0 for c in cost_a]
    safety = results["safety"]
    assert safety["better_and_safe"] == sum(b and s for b, s in zip(better, safe))
    assert safety["worse_and_unsafe"] == sum(not b and not s for b, s in zip(better, safe))
    assert f"better & safe {safety['better_and_safe']}," in printed
    rate = results["criteria"]["P2A"]
    assert f"P2A: A wins {rate['wins']}, ties {rate['ties']}, loses {rate['losses']}" in printed


def test_winrate_bad_input_is_one_line(psoups_run, tmp_path, capsys):
    run = ["--run", str(psoups_run), "--out", str(tmp_path / "out")]
    _one_line_error(capsys, ["winrate", *run, "--baselines", "prompting,rlhf"],
                    "unknown baseline 'rlhf'; choose from prompting, multitask, pmorl")
    _one_line_error(capsys, ["winrate", *run, "--judge", "oracle"], "unknown judge 'oracle'")
    _one_line_error(capsys, ["winrate", *run, "--prompts", "0"], "--prompts must be > 0, got 0")
    _one_line_error(capsys, ["winrate", *run, "--max-new-tokens", "0"], "--max-new-tokens must be > 0")
    _one_line_error(capsys, ["winrate", "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                    "does not exist; give the --out folder of a finished fit")
    _one_line_error(capsys, ["winrate", "--run", str(tmp_path), "--out", str(tmp_path / "o")],
                    "is not a paretoalign run directory")
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, ["winrate", "--run", str(psoups_run), "--out", str(tmp_path / "file")],
                    "is a file; give a folder")
    assert not (tmp_path / "out").exists()


def test_winrate_names_a_baseline_the_run_does_not_have(psoups_run, tmp_path, capsys):
    copy = shutil.copytree(psoups_run, tmp_path / "run")
    manifest = json.loads((copy / "manifest.json").read_text())
    shutil.rmtree(copy / manifest["baselines"]["pmorl"]["adapter"])
    del manifest["baselines"]["multitask"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = ["--run", str(copy), "--out", str(tmp_path / "out"), *EVAL_FLAGS]
    _one_line_error(capsys, ["winrate", *out, "--baselines", "multitask"],
                    "trained no multitask baseline (multitask was off); refit with --multitask")
    _one_line_error(capsys, ["winrate", *out, "--baselines", "pmorl"], "has lost its pmorl baseline")


def test_arena_bad_input_is_one_line(psoups_run, tmp_path, capsys):
    base = ["arena", "--a", str(psoups_run), "--b", "prompting", "--out", str(tmp_path / "out")]
    _one_line_error(capsys, [*base, "--reward", "conciseness"], "needs both --reward and --cost")
    _one_line_error(capsys, base, "nothing to compare on: give --criterion")
    _one_line_error(capsys, [*base, "--criterion", "P4A"], "unknown preference dimension 'P4A'")
    _one_line_error(capsys, [*base, "--criterion", "Answer like a pirate."],
                    "the objectives judge cannot judge 'Answer like a pirate.'")
    _one_line_error(capsys, [*base, "--reward", "wit", "--cost", "length_cost"], "wit")
    _one_line_error(capsys, [*base, "--criterion", "P2A", "--preference-a", "P2A=lots"], "weight of 'P2A' must be a number")
    _one_line_error(capsys, ["arena", "--a", "rlhf", "--b", "base", "--criterion", "P2A", "--out",
                             str(tmp_path / "o"), *EVAL_FLAGS], "rlhf")
    assert not (tmp_path / "out").exists()
