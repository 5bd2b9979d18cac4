"""The bodies of the psoups stages (see ``recipe``). Each records what it finished in the run manifest as it goes
(per dimension), so an interrupted stage resumes with the next dimension."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import ConfigError, DataError
from ...core.rundir import RunDirectory
from ..common.objective_policies import folder_name, train_dpo_adapter, train_each, train_ppo_adapter
from .dimensions import Dimension, combinations, parse_dimensions, steer
from .recipe import PSoupsConfig

if TYPE_CHECKING:
    from ...data import PreferencePair
    from ...objectives.base import Objective
    from ...objectives.judges import Judge

ROLLOUTS_DIR = "data/rollouts"
ANNOTATIONS_DIR = "data/annotations"
REWARD_MODELS_DIR = "reward_models"
BASELINES_DIR = "baselines"
JUDGE_CACHE = "judge_cache"


# ---------------------------------------------------------------------------------------------- dimensions


def run_dimensions(run: RunDirectory, config: PSoupsConfig, objectives: Sequence[Objective]) -> list[Dimension]:
    """The run's dimensions: as recorded by its first stage, else parsed from the settings and recorded."""
    if "dimensions" not in run.manifest:
        dimensions = parse_dimensions(config.dimensions, [o.name for o in objectives])
        run.manifest["dimensions"] = [_dimension_dict(d) for d in dimensions]
        run.save_manifest()
    return stored_dimensions(run)


def stored_dimensions(run: RunDirectory) -> list[Dimension]:
    """The dimensions a run recorded (read only: loading a run writes nothing)."""
    return [Dimension(d["name"], d["text"], tuple(d["judged_by"]) if d["judged_by"] else None, d["axis"])
            for d in run.manifest.get("dimensions", [])]


def _dimension_dict(dimension: Dimension) -> dict[str, Any]:
    return {"name": dimension.name, "text": dimension.text,
            "judged_by": list(dimension.judged_by) if dimension.judged_by else None, "axis": dimension.axis}


def dimension_judge(spec: str, dimensions: Sequence[Dimension], *, seed: int = 0,
                    cache_dir: str | Path | None = None) -> Judge:
    """The judge of ``spec`` able to judge every dimension: the objectives judge learns which objective reads each
    one (free-text dimensions need a language-model judge); an API judge caches verdicts in ``cache_dir``."""
    from ...objectives.judges import DIMENSION_OBJECTIVES, load_judge
    from ...objectives.registry import parse_objective_spec

    head, options = parse_objective_spec(spec)
    kind = head.partition(":")[0]
    extra: dict[str, Any] = {} if "seed" in options else {"seed": seed}
    if kind == "objectives":
        free = [d.name for d in dimensions if d.judged_by is None]
        if free:
            raise ConfigError(f"the objectives judge cannot judge the free-text dimension(s) {', '.join(free)}; name "
                              "each after an objective (e.g. simplicity=...) or use --judge local or api:<model>")
        extra["dimensions"] = {**DIMENSION_OBJECTIVES, **{d.name: d.judged_by for d in dimensions}}
    if kind == "api" and cache_dir is not None and "cache_dir" not in options:
        extra["cache_dir"] = str(cache_dir)
    return load_judge(spec, **extra)


def criterion(dimension: Dimension) -> Any:
    """What a judge compares on for ``dimension``: its preference text, under its name."""
    from ...objectives.judges import Criterion

    return Criterion(dimension.text, dimension.name)


def win_rate_combinations(dimensions: Sequence[Dimension]) -> list[tuple[Any, list[Any]]]:
    """The paper's evaluation grid: each combination of dimensions (one per axis) as a uniform preference over them,
    with the criteria it is judged on (each dimension of the combination)."""
    from ...core.preference import Preference

    return [(Preference.parse({d.name: 1.0 / len(combo) for d in combo}, normalize=True), [criterion(d) for d in combo])
            for combo in combinations(dimensions)]


# ---------------------------------------------------------------------------------------------- rollouts


def instructions_from(dataset: str, count: int, seed: int) -> list[str]:
    """The first ``count`` distinct prompts of a prompt dataset's train split (shipped set, file or mixture spec)."""
    from ...data import load_mixture

    prompts = list(dict.fromkeys(record.prompt for record in load_mixture([dataset], seed=seed)))
    if not prompts:
        raise DataError(f"dataset {dataset!r} has no prompts in its train split; give another --dataset")
    return prompts[:count]


def rollouts(run: RunDirectory, objectives: list[Objective], config: PSoupsConfig) -> dict:
    """Stage ``rollouts``: ``samples`` answers per instruction with each dimension's preference text appended."""
    from ...data import write_jsonl
    from ...generation import GenerationConfig, generate
    from ...models import load_model

    dimensions = run_dimensions(run, config, objectives)
    if config.annotations:
        return {"from_annotations": config.annotations, "generated_tokens": 0, "trained_tokens": 0}
    _check_judge(dimension_judge(config.judge, dimensions, seed=config.seed))
    instructions = instructions_from(config.dataset, config.prompts, config.seed)
    generation = GenerationConfig(max_new_tokens=config.max_new_tokens, min_new_tokens=1,
                                  temperature=config.temperature, seed=config.seed, batch_size=32,
                                  progress=config.progress)
    done = run.manifest.setdefault("rollouts", {})
    model = tokenizer = None
    for dimension in dimensions:
        if dimension.name in done:
            continue
        if model is None:
            model, tokenizer = load_model(config.model, device=config.device)
        prompts = [steer(instruction, [dimension.text]) for instruction in instructions]
        expanded = [prompt for prompt in prompts for _ in range(config.samples)]
        responses = generate(model, tokenizer, expanded, generation)
        rows = [{"dimension": dimension.name, "instruction": instruction, "prompt": prompt,
                 "responses": [r.text for r in responses[i * config.samples:(i + 1) * config.samples]]}
                for i, (instruction, prompt) in enumerate(zip(instructions, prompts))]
        path = f"{ROLLOUTS_DIR}/{folder_name(dimension.name)}.jsonl"
        write_jsonl(run.path / path, rows)
        done[dimension.name] = {"file": path, "instructions": len(rows), "responses": len(responses),
                                "generated_tokens": sum(len(r.token_ids) for r in responses)}
        run.save_manifest()
    return {"generated_tokens": sum(entry["generated_tokens"] for entry in done.values()), "trained_tokens": 0}


def _check_judge(judge: Judge) -> None:
    """A judge that cannot run (an API judge without its key or the openai package) fails before any rollout."""
    from ...objectives.judges import ApiJudge

    if isinstance(judge, ApiJudge):
        judge._client()  # builds the client only: no request is sent


# ---------------------------------------------------------------------------------------------- annotation


def annotate_rows(judge: Judge, dimension: Dimension, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One annotation per pair of answers (1st vs 2nd, 3rd vs 4th, ...) of each rollout row: the judge sees the
    instruction and compares under the dimension's preference (its order randomization un-swapped in
    ``Judge.compare``); the verdict keeps the judge's prompt and raw answer."""
    pairs = [(row, row["responses"][i], row["responses"][i + 1])
             for row in rows for i in range(0, len(row["responses"]) - 1, 2)]
    verdicts = judge.compare([row["instruction"] for row, _, _ in pairs], [a for _, a, _ in pairs],
                             [b for _, _, b in pairs], criterion(dimension))
    return [{"dimension": dimension.name, "instruction": row["instruction"], "prompt": row["prompt"],
             "response_a": a, "response_b": b, "verdict": verdict.to_dict()}
            for (row, a, b), verdict in zip(pairs, verdicts)]


def annotate(run: RunDirectory, objectives: list[Objective], config: PSoupsConfig) -> dict:
    """Stage ``annotate``: every pair of rollouts judged under its dimension (or an earlier run's annotations)."""
    from ...data import read_jsonl, write_jsonl

    dimensions = run_dimensions(run, config, objectives)
    done = run.manifest.setdefault("annotations", {})
    imported = _imported_annotations(config.annotations, dimensions) if config.annotations else None
    judge = None
    for dimension in dimensions:
        if dimension.name in done:
            continue
        if imported is not None:
            rows = imported[dimension.name]
        else:
            judge = judge or dimension_judge(config.judge, dimensions, seed=config.seed,
                                             cache_dir=run.path / JUDGE_CACHE)
            rollout_rows = read_jsonl(run.path / run.manifest["rollouts"][dimension.name]["file"])
            rows = annotate_rows(judge, dimension, rollout_rows)
        path = f"{ANNOTATIONS_DIR}/{folder_name(dimension.name)}.jsonl"
        write_jsonl(run.path / path, rows)
        choices = [row["verdict"]["verdict"] for row in rows]
        done[dimension.name] = {"file": path, "judge": rows[0]["verdict"]["judge"] if rows else config.judge,
                                "pairs": len(rows), "a": choices.count("a"), "b": choices.count("b"),
                                "ties": choices.count("tie"),
                                "swapped": sum(bool(row["verdict"]["swapped"]) for row in rows)}
        run.save_manifest()
    return {"pairs": sum(entry["pairs"] for entry in done.values()),
            "ties": sum(entry["ties"] for entry in done.values()), "generated_tokens": 0, "trained_tokens": 0}


def _imported_annotations(path: str, dimensions: Sequence[Dimension]) -> dict[str, list[dict[str, Any]]]:
    """An annotation file's rows by dimension, refused when its dimensions (names or texts) are not this run's."""
    from ...data import read_jsonl

    rows = read_jsonl(path)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(str(row.get("dimension")), []).append(row)
    wanted = [d.name for d in dimensions]
    if sorted(by_name) != sorted(wanted):
        raise DataError(f"annotation file {path!r} is for dimensions {', '.join(sorted(by_name))}, not this run's "
                        f"{', '.join(wanted)}; give the annotations of a run with the same dimensions")
    for dimension in dimensions:
        for row in by_name[dimension.name]:
            if row.get("prompt") != steer(row.get("instruction", ""), [dimension.text]) or "verdict" not in row:
                raise DataError(f"annotation file {path!r} has a {dimension.name} row whose prompt does not carry this "
                                f"run's text for {dimension.name} ({dimension.text[:40]!r}...); use matching dimensions")
    return by_name


def annotation_rows(run: RunDirectory, dimension: Dimension) -> list[dict[str, Any]]:
    from ...data import read_jsonl

    return read_jsonl(run.path / run.manifest["annotations"][dimension.name]["file"])


def preference_pairs(run: RunDirectory, dimension: Dimension) -> list[PreferencePair]:
    """The judged pairs of ``dimension`` as (preference prompt, preferred, other); ties carry no preference."""
    from ...data import PreferencePair

    pairs = []
    for row in annotation_rows(run, dimension):
        choice = row["verdict"]["verdict"]
        if choice != "tie":
            chosen, rejected = (row["response_a"], row["response_b"])[:: 1 if choice == "a" else -1]
            pairs.append(PreferencePair(prompt=row["prompt"], chosen=chosen, rejected=rejected,
                                        objective=dimension.name))
    if not pairs:
        raise DataError(f"every pair of {dimension.name} was judged a tie, so there is nothing to learn from; "
                        "raise prompts or max_new_tokens, or use another judge")
    return pairs


def run_instructions(run: RunDirectory, dimensions: Sequence[Dimension]) -> list[str]:
    """The instructions the run rolled out (or imported), in order."""
    return list(dict.fromkeys(row["instruction"] for d in dimensions for row in annotation_rows(run, d)))


# ---------------------------------------------------------------------------------------------- reward models


def _skipped(reason: str) -> dict:
    return {"skipped": reason, "generated_tokens": 0, "trained_tokens": 0}


def reward_models(run: RunDirectory, objectives: list[Objective], config: PSoupsConfig) -> dict:
    """Stage ``reward-models``: a Bradley-Terry reward model per dimension on its judged pairs, with normalization
    statistics fitted on the dimension's rollouts and its accuracy on the pairs it was trained on."""
    if not config.needs_reward_models:
        return _skipped("not needed: DPO policies learn from the judged pairs and pmorl is off")
    dimensions = {d.name: d for d in run_dimensions(run, config, objectives)}

    def train_one(name: str, output_dir: Path):
        from ...core.runtime import autocast_precision
        from ...training import RewardModelConfig, run_training

        pairs = preference_pairs(run, dimensions[name])
        settings = RewardModelConfig(
            model=config.model, output_dir=str(output_dir), overwrite=True, epochs=config.rm_epochs, lr=config.rm_lr,
            batch_size=config.batch_size, max_length=config.max_length, lora_r=config.lora_r,
            lora_alpha=config.lora_alpha, seed=config.seed, device=config.device,
            mixed_precision=autocast_precision(config.device), progress=config.progress)
        result = run_training("reward-model", settings, train_data=pairs)
        return result, {"steps": result.steps, "pairs": len(pairs), **_fit_reward(result.model_dir, run, dimensions[name],
                                                                                  pairs, config.device)}

    return train_each(run, list(dimensions), train_one, key="reward_models", folder=REWARD_MODELS_DIR, field="model")


def _fit_reward(model_dir: Path, run: RunDirectory, dimension: Dimension, pairs: list[PreferencePair],
                device: str) -> dict[str, Any]:
    """Normalization statistics on every rollout of the dimension, and the share of pairs scored the right way."""
    import numpy as np

    from ...training import as_objective

    objective = as_objective(model_dir, name=f"{dimension.name}_reward", device=device)
    rows = annotation_rows(run, dimension)
    prompts = [row["prompt"] for row in rows for _ in range(2)]
    answers = [answer for row in rows for answer in (row["response_a"], row["response_b"])]
    stats = objective.fit_normalization(prompts, answers, source=f"{len(answers)} rollouts of {dimension.name}")
    chosen = objective.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = objective.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    return {"stats": stats.to_dict(), "train_accuracy": round(float(np.mean(chosen > rejected)), 4)}


def reward_objective(run: RunDirectory, dimension: Dimension, device: str) -> Objective:
    """The dimension's trained reward model as a normalized objective."""
    from ...objectives.base import NormStats
    from ...training import as_objective

    entry = run.manifest.get("reward_models", {}).get(dimension.name)
    if entry is None:
        raise ConfigError(f"{str(run.path)!r} has no reward model for {dimension.name!r}; run its reward-models stage")
    objective = as_objective(run.path / entry["model"], name=f"{dimension.name}_reward", device=device)
    objective.stats = NormStats.from_dict(entry["stats"])
    return objective


# ---------------------------------------------------------------------------------------------- policies


def train(run: RunDirectory, objectives: list[Objective], config: PSoupsConfig) -> dict:
    """Stage ``train``: a LoRA policy per dimension, by DPO on its judged pairs or PPO on its reward model over the
    instructions with its preference text."""
    dimensions = {d.name: d for d in run_dimensions(run, config, objectives)}

    def train_one(name: str, output_dir: Path):
        dimension = dimensions[name]
        if config.trainer == "dpo":
            return train_dpo_adapter(preference_pairs(run, dimension), output_dir, config)
        prompts = [{"prompt": steer(i, [dimension.text])} for i in run_instructions(run, [dimension])]
        return train_ppo_adapter(reward_objective(run, dimension, config.device), prompts, output_dir, config)

    return train_each(run, list(dimensions), train_one)


def multitask(run: RunDirectory, objectives: list[Objective], config: PSoupsConfig) -> dict:
    """Stage ``multitask`` (baseline): one LoRA SFT on every dimension's preferred answers, each with its prompt."""
    if not config.multitask:
        return _skipped("multitask is off")
    dimensions = run_dimensions(run, config, objectives)

    def train_one(name: str, output_dir: Path):
        from ...core.runtime import autocast_precision
        from ...training import SFTConfig, run_training

        records = [{"prompt": pair.prompt, "response": pair.chosen} for d in dimensions for pair in preference_pairs(run, d)]
        settings = SFTConfig(model=config.model, output_dir=str(output_dir), overwrite=True, epochs=config.epochs,
                             lr=config.lr, batch_size=config.batch_size, max_length=config.max_length,
                             lora_r=config.lora_r, lora_alpha=config.lora_alpha, seed=config.seed, device=config.device,
                             mixed_precision=autocast_precision(config.device), progress=config.progress)
        result = run_training("sft", settings, train_data=records)
        return result, {"trainer": "sft", "examples": len(records), "steps": result.steps}

    return train_each(run, ["multitask"], train_one, key="baselines", folder=BASELINES_DIR)


def pmorl_prompts(instructions: Sequence[str], dimensions: Sequence[Dimension]) -> list[str]:
    """Each instruction with one combination of preference texts, the combinations taken in turn."""
    sets = combinations(dimensions)
    return [steer(instruction, [d.text for d in sets[i % len(sets)]]) for i, instruction in enumerate(instructions)]


def pmorl(run: RunDirectory, objectives: list[Objective], config: PSoupsConfig) -> dict:
    """Stage ``pmorl`` (baseline): one LoRA PPO policy on prompts with sets of preference texts, rewarded with the
    mean normalized reward of the response under those dimensions' reward models."""
    if not config.pmorl:
        return _skipped("pmorl is off")
    dimensions = run_dimensions(run, config, objectives)

    def train_one(name: str, output_dir: Path):
        from .rewards import PreferenceConditionedReward

        reward = PreferenceConditionedReward({d.name: reward_objective(run, d, config.device) for d in dimensions},
                                             dimensions)
        prompts = [{"prompt": prompt} for prompt in pmorl_prompts(run_instructions(run, dimensions), dimensions)]
        result, details = train_ppo_adapter(reward, prompts, output_dir, config)
        return result, {**details, "combinations": len(combinations(dimensions))}

    return train_each(run, ["pmorl"], train_one, key="baselines", folder=BASELINES_DIR)
