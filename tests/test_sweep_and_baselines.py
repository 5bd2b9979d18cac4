"""The sweep, the baseline policies and the demo/eval commands on the tiny model with cheap objectives."""

import json

import numpy as np
import pytest

from paretoalign.core import ConfigError, Preference
from paretoalign.data import ScoredResponse, read_jsonl
from paretoalign.evaluation import weight_grid
from paretoalign.evaluation.sweep import evaluate
from paretoalign.objectives.normalization import fit_reference_normalization
from paretoalign.generation import BasePolicy, GenerationConfig
from paretoalign.interfaces.cli import main
from paretoalign.methods.best_of_n import BestOfNPolicy, best_of_n_kl
from paretoalign.methods.prompting import INSTRUCTIONS, PromptingPolicy, steering_text
from paretoalign.objectives import Objective, count_words, load_objectives

PROMPTS = ["Explain the sky.", "How do I cook rice?", "Write a poem about the sea."]
CONFIG = GenerationConfig(max_new_tokens=12, temperature=1.0, batch_size=8, seed=3)


@pytest.fixture(scope="module")
def length_objectives(tiny):
    objectives = load_objectives("conciseness,informativeness")
    fit_reference_normalization(objectives, BasePolicy(*tiny), PROMPTS, CONFIG)
    return objectives


def test_sweep_measures_every_grid_point(tiny, length_objectives):
    grid = weight_grid(["conciseness", "informativeness"], 3)
    result = evaluate(BasePolicy(*tiny), length_objectives, PROMPTS, grid, samples_per_prompt=2, config=CONFIG,
                      progress=False)
    assert [p.weights for p in result.points] == [g.as_dict() for g in grid]
    first = result.points[0]
    assert first.responses == 6 and first.tokens > 0 and first.seconds > 0
    assert first.rewards["conciseness"] == pytest.approx(-first.rewards["informativeness"])
    # the base policy ignores the preference: later points reuse the first point's answers
    assert all(p.tokens == 0 and p.rewards == first.rewards for p in result.points[1:])


def test_sweep_carries_the_policys_training_cost(tiny, length_objectives):
    policy = BasePolicy(*tiny)
    policy.training_cost = {"generated_tokens": 120, "trained_tokens": 900, "wall_time_s": 4.5}
    grid = weight_grid(["conciseness", "informativeness"], 2)
    result = evaluate(policy, length_objectives, PROMPTS, grid, config=CONFIG, progress=False)
    assert (result.training_generated_tokens, result.trained_tokens, result.training_seconds) == (120, 900, 4.5)


def test_kl_of_the_reference_sampled_untruncated_is_zero(tiny, length_objectives):
    grid = [Preference.parse("conciseness=0.5,informativeness=0.5")]
    result = evaluate(BasePolicy(*tiny), length_objectives, PROMPTS, grid, config=CONFIG, progress=False)
    assert abs(result.points[0].kl) < 1e-3
    colder = evaluate(BasePolicy(*tiny), length_objectives, PROMPTS * 4, grid,
                      config=GenerationConfig(max_new_tokens=12, temperature=0.5, seed=3), progress=False)
    assert colder.points[0].kl > 0.1


def test_sweep_refuses_bad_input(tiny, length_objectives):
    grid = weight_grid(["conciseness", "informativeness"], 3)
    policy = BasePolicy(*tiny)
    with pytest.raises(ConfigError, match="positive integer"):
        evaluate(policy, length_objectives, PROMPTS, grid, samples_per_prompt=0, progress=False)
    with pytest.raises(ConfigError, match="no prompts"):
        evaluate(policy, length_objectives, [], grid, progress=False)
    with pytest.raises(ConfigError, match="normalization"):
        evaluate(policy, load_objectives("conciseness,informativeness"), PROMPTS, grid, progress=False)


class ExclamationMarks(Objective):
    """A real, cheap objective the prompting baseline has no instruction for."""

    name = "excitement"
    description = "exclamation marks"

    def score(self, prompts, responses):
        return np.array([r.count("!") for r in responses], dtype=float)


def test_grid_on_objectives_a_policy_cannot_steer_is_refused(tiny, length_objectives):
    excitement = ExclamationMarks()
    excitement.fit_normalization(PROMPTS, ["a!", "b", "c!!"])
    grid = weight_grid(["conciseness", "excitement"], 3)
    with pytest.raises(ConfigError, match="cannot be steered on excitement"):
        evaluate(PromptingPolicy(*tiny), [*length_objectives, excitement], PROMPTS, grid, progress=False)


def test_prompting_words_weights_as_emphasis_and_keeps_the_plain_prompt(tiny):
    text = steering_text(Preference.parse("simplicity=0.8,informativeness=0.2"))
    assert text == f"Most importantly: {INSTRUCTIONS['simplicity']} To a lesser degree: {INSTRUCTIONS['informativeness']}"
    assert steering_text(Preference.parse("simplicity=1,informativeness=0")) == INSTRUCTIONS["simplicity"].join(
        ["Most importantly: ", ""])
    assert "informativeness" not in steering_text(Preference.parse("simplicity=0.9,informativeness=0.1"))
    policy = PromptingPolicy(*tiny)
    steered = policy.steer(PROMPTS, Preference.parse("conciseness=0.5,friendliness=0.5"))
    assert all(s.startswith(p) and INSTRUCTIONS["conciseness"] in s for s, p in zip(steered, PROMPTS))
    responses = policy.generate(PROMPTS, Preference.parse("conciseness=1"), CONFIG)
    assert [r.prompt for r in responses] == PROMPTS
    with pytest.raises(ConfigError, match="no instruction for excitement"):
        policy.steer(PROMPTS, Preference.parse("excitement=1"))


def test_best_of_n_keeps_the_best_sample_and_accounts_for_its_cost(tiny, length_objectives):
    base = BasePolicy(*tiny).generate(PROMPTS, None, CONFIG)
    policy = BestOfNPolicy(*tiny, length_objectives, n=4)
    best = policy.generate(PROMPTS, Preference.parse("conciseness=1,informativeness=0"), CONFIG)
    # the base sample is candidate 0 of each prompt (same per-prompt seed), so best-of-4 is never longer
    assert all(count_words(b.text) <= count_words(a.text) for a, b in zip(base, best))
    pool = policy._cache[1]
    longest = policy.generate(PROMPTS, Preference.parse("conciseness=0,informativeness=1"), CONFIG)
    assert policy._cache[1] is pool  # the samples do not depend on the preference: drawn once, re-ranked
    assert all(count_words(b.text) >= count_words(a.text) for a, b in zip(base, longest))
    assert [count_words(b.text) for b in best] != [count_words(b.text) for b in longest]
    assert all(r.meta["generated_tokens"] >= len(r.token_ids) for r in best)
    assert best[0].meta["kl_selection"] == pytest.approx(np.log(4) - 3 / 4) == best_of_n_kl(4)
    with pytest.raises(ConfigError):
        BestOfNPolicy(*tiny, length_objectives, n=0)


def _eval_argv(tiny_model_dir, out, *extra):
    return ["eval", "base,prompting,best_of_n", "--model", str(tiny_model_dir), "--objectives",
            "conciseness,informativeness", "--out", str(out), "--eval-prompts", "3", "--points", "3",
            "--max-new-tokens", "8", "--dtype", "float32", *extra]


def test_eval_command_writes_results_plots_and_report(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_eval_argv(tiny_model_dir, out)) == 0
    printed = capsys.readouterr().out
    assert "best_of_n *" in printed and "report.html" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"base", "prompting", "best_of_n"}
    assert results["reference_point"] == {"conciseness": -1.0, "informativeness": -1.0}
    assert all(len(m["points"]) == 3 for m in results["methods"].values())
    assert results["methods"]["base"]["min_steerability"] is None  # the base model ignores the preference
    assert set(results["methods"]["prompting"]["steerability"]) == {"conciseness", "informativeness"}
    assert all(0 <= point["cut_off"] <= 1 for m in results["methods"].values() for point in m["points"])
    assert "steer" in printed and "cut" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["normalization"]["conciseness"]["std"] > 0
    for artifact in ("front.png", "kl.png", "report.html"):
        assert (out / artifact).stat().st_size > 1000

    prompts = tmp_path / "mine.jsonl"
    prompts.write_text('{"prompt": "Name a colour."}\n{"prompt": "Count to three."}\n')
    again = tmp_path / "again"
    assert main(["eval", str(out), "--prompts", str(prompts), "--out", str(again), "--points", "3",
                 "--max-new-tokens", "8"]) == 0
    rerun = json.loads((again / "manifest.json").read_text())
    assert rerun["normalization"] == manifest["normalization"]  # the stored scale is reused
    assert json.loads((again / "results.json").read_text())["prompts"] == 2


def _adapter_bytes(run):
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("adapter_model.safetensors"))}


def test_trained_methods_share_policies_and_a_rerun_reloads_them(tiny_model_dir, tmp_path, capsys):
    """MOD reuses the soups' per-objective adapters and RiC their base-model samples, even when listed first (soups
    is fitted first); ``eval RUN_DIR`` copies and reloads them without training."""
    out = tmp_path / "trained"
    argv = _eval_argv(tiny_model_dir, out)
    argv[1] = "mod,soups,ric"
    assert main(argv) == 0
    assert "train tok" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["base", "mod", "soups", "ric"]  # the base model's row is always there
    soups, mod, ric = (results["methods"][name]["cost"] for name in ("soups", "mod", "ric"))
    assert soups["trained_tokens"] > 0 and soups["training_seconds"] > 0
    assert {k: soups[k] for k in ("trained_tokens", "training_generated_tokens")} == \
        {k: mod[k] for k in ("trained_tokens", "training_generated_tokens")}
    assert ric["training_generated_tokens"] == soups["training_generated_tokens"] > 0  # the samples' cost
    sampled = read_jsonl(out / "methods" / "soups" / "data" / "samples.jsonl", ScoredResponse)
    offline = read_jsonl(out / "methods" / "ric" / "data" / "offline.jsonl", ScoredResponse)
    assert [(r.prompt, r.response) for r in offline] == [(r.prompt, r.response) for r in sampled]
    assert sorted(p.name for p in (out / "methods").iterdir()) == ["mod", "ric", "soups"]
    trained = _adapter_bytes(out / "methods" / "soups")
    assert _adapter_bytes(out / "methods" / "mod").values().__len__() == 2
    assert sorted(_adapter_bytes(out / "methods" / "mod").values()) == sorted(trained.values())

    again = tmp_path / "again"
    assert main(["eval", str(out), "--out", str(again), "--points", "3", "--max-new-tokens", "8",
                 "--eval-prompts", "3", "--dtype", "float32"]) == 0
    assert _adapter_bytes(again / "methods" / "soups") == trained  # copied, not retrained
    rerun = json.loads((again / "results.json").read_text())
    assert rerun["methods"]["soups"]["cost"]["trained_tokens"] == soups["trained_tokens"]
    rewards = [[p["rewards"] for p in run["methods"]["soups"]["points"]] for run in (results, rerun)]
    assert rewards[0] == rewards[1]  # same adapters, same seeds, same answers

    runs = [str(out / "methods" / "soups"), str(again / "methods" / "soups")]  # two runs of one method, side by side
    both = tmp_path / "both"
    assert main(["eval", ",".join(runs), "--out", str(both), "--points", "3", "--max-new-tokens", "8",
                 "--eval-prompts", "3", "--dtype", "float32"]) == 0
    side_by_side = json.loads((both / "results.json").read_text())["methods"]
    assert list(side_by_side) == ["base", *(f"soups@{run}" for run in runs)]
    raw = [[p["raw"] for p in side_by_side[f"soups@{run}"]["points"]] for run in runs]
    assert raw[0] == raw[1] == [p["raw"] for p in results["methods"]["soups"]["points"]]  # the same adapters
    capsys.readouterr()
    assert main(["eval", f"{runs[0]},{runs[0]}", "--out", str(tmp_path / "twice")]) == 2
    assert "given twice" in capsys.readouterr().err and not (tmp_path / "twice").exists()

    before = (out / "methods" / "soups" / "manifest.json").read_text()
    other = tmp_path / "other-seed"
    assert main(["eval", str(out), "--out", str(other), "--points", "3", "--max-new-tokens", "8",
                 "--eval-prompts", "3", "--dtype", "float32", "--seed", "1"]) == 0
    assert json.loads((other / "methods" / "soups" / "manifest.json").read_text())["fingerprint"]["seed"] == 1
    assert (out / "methods" / "soups" / "manifest.json").read_text() == before  # the first run is untouched


def test_eval_bad_input_is_one_line_exit_2(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_text("meow")
    cases = [
        (_eval_argv(tiny_model_dir, tmp_path / "a", "--prompts", str(empty)), "empty"),
        (_eval_argv(tiny_model_dir, tmp_path / "b", "--samples", "0"), "--samples must be > 0"),
        (_eval_argv(tiny_model_dir, foreign), "not a paretoalign run"),
        (["eval", "nope", "--out", str(tmp_path / "c")], "unknown method 'nope'"),
        (["eval", str(tmp_path / "missing"), "--out", str(tmp_path / "c")], "does not exist"),
        (_eval_argv(tiny_model_dir, tmp_path / "d")[:5] + ["conciseness,humor", "--out", str(tmp_path / "d")],
         "unknown objective 'humor'"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
