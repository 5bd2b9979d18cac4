"""MAVIS training data: trees of partial responses, their Monte-Carlo values, and Arrow shards on disk.

A tree grows from one prompt, layer by layer: the root gets ``root_branching`` children, every other
node ``branching``, for ``depth`` layers; each layer appends a chunk of a random length (drawn once per
layer and collection, so the whole layer decodes as one batch). A response that samples EOS stops
growing and is a leaf early.

Values. A leaf's value is the objective's normalized reward of its full response (``Objective.reward``:
``direction·(raw − mean)/std`` with the objective's stored statistics, so 0 is the reference model's
average and 1 one standard deviation better). An inner node's value is the mean of its children's.
``future_kl`` is E[Σ log π/π_ref] over the tokens sampled below a node (0 at leaves; mean over
children of their chunk's log-ratio plus their own future_kl), so the soft-value target of iterations
≥ 1 is ``value − η·future_kl`` (:func:`value_records`). Trees sampled from π_ref itself have log-ratio
0 except where EOS was banned.

On disk a shard is one Parquet file (zstd), one row per node: the root row holds the prompt and its
token ids, every other row only its own chunk and its parent's row number, so nothing is stored twice.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ...core.errors import ConfigError, DataError
from ...core.files import atomic_path, existing_file
from ...generation import GenerationConfig
from ...generation.chat import pad_id, pad_left, prompt_token_ids
from ...generation.decoding import decode_loop, eos_token_ids, evaluation_mode
from ...generation.sampling import TokenSampler
from ...generation.value_guided import GuidanceSettings, ValueGuidedScorer, guided_sampler_config
from ...objectives import stats_to_dict
from ...objectives.base import Objective

METADATA_KEY = b"paretoalign.mavis"
VALUE_PREFIX = "value:"


@dataclass(frozen=True)
class TreeShape:
    """Branching, depth and chunk lengths of the trees (defaults: METHODS.md), and the share of bottom
    nodes kept for training."""

    root_branching: int = 4
    branching: int = 2
    depth: int = 5
    chunk_min: int = 8
    chunk_max: int = 24
    keep_bottom: float = 0.5

    def __post_init__(self) -> None:
        for name in ("root_branching", "branching", "depth", "chunk_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tree {name} must be >= 1, got {getattr(self, name)}")
        if self.chunk_max < self.chunk_min:
            raise ConfigError(f"chunk_max ({self.chunk_max}) must be >= chunk_min ({self.chunk_min})")
        if not 0 < self.keep_bottom <= 1:
            raise ConfigError(f"keep_bottom must be in (0, 1], got {self.keep_bottom}")


@dataclass
class _Node:
    tree: int
    parent: int
    depth: int
    tokens: list[int]
    finished: bool = False
    log_ratio: float = 0.0


class _LogRatioRecorder:
    """A chooser that samples with ``sampler`` and adds log π(a) − log π_ref(a) of each drawn token to its row."""

    def __init__(self, sampler: TokenSampler, scorer: ValueGuidedScorer, rows: int) -> None:
        self.sampler, self.scorer = sampler, scorer
        self.log_ratio = [0.0] * rows

    def __call__(self, scores: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, logprobs = self.sampler(scores, rows)
        reference = self.scorer.reference_logprobs.gather(-1, tokens[:, None]).squeeze(-1)
        for row, ratio in zip(rows, (logprobs - reference).tolist()):
            self.log_ratio[row] += ratio
        return tokens, logprobs


@dataclass
class TreeSampler:
    """Samples tree chunks from the reference tilted by ``guidance`` (none: π_ref itself, untruncated)."""

    reference_model: object
    tokenizer: object
    guidance: Sequence[tuple[float, object]] = ()
    settings: GuidanceSettings | None = None
    temperature: float = 1.0
    batch_size: int = 16

    def __post_init__(self) -> None:
        vocab = self.reference_model.get_output_embeddings().weight.shape[0]
        self.settings = self.settings or GuidanceSettings(beta=0.0, top_k=vocab)
        self.settings.check_vocabulary(vocab)
        self.eos_ids = eos_token_ids(self.reference_model, self.tokenizer)

    def continue_all(self, sequences: Sequence[list[int]], length: int, seeds: Sequence[int],
                     first_step: bool) -> list[tuple[list[int], bool, float]]:
        """``(chunk, ended with EOS, Σ log π/π_ref)`` of up to ``length`` new tokens after each sequence."""
        results = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            results.extend(self._continue_batch(sequences[chunk], length, seeds[chunk], first_step))
        return results

    def _continue_batch(self, sequences, length, seeds, first_step):
        model = self.reference_model
        config = GenerationConfig(max_new_tokens=length, temperature=self.temperature)
        banned = 1 if first_step and self.settings.ban_eos_first else 0
        scorer = ValueGuidedScorer(model, self.guidance, self.settings, temperature=self.temperature,
                                   eos_ids=self.eos_ids, eos_banned_steps=banned)
        recorder = _LogRatioRecorder(TokenSampler(guided_sampler_config(config), seeds, model.device), scorer,
                                     len(sequences))
        input_ids, attention_mask = pad_left(sequences, pad_id(self.tokenizer))
        decoded = decode_loop(scorer, recorder, input_ids.to(model.device), attention_mask.to(model.device),
                              max_new_tokens=length, eos_ids=self.eos_ids)
        return [(d.token_ids, d.finish_reason == "eos", ratio) for d, ratio in zip(decoded, recorder.log_ratio)]


def _grow(sampler: TreeSampler, prompt_ids: list[list[int]], shape: TreeShape, rng: random.Random) -> list[_Node]:
    """All nodes of one tree per prompt, layer by layer, each layer decoded as one batch."""
    nodes = [_Node(tree, -1, 0, ids) for tree, ids in enumerate(prompt_ids)]
    paths = [list(ids) for ids in prompt_ids]
    frontier = list(range(len(nodes)))
    for depth in range(1, shape.depth + 1):
        width = shape.root_branching if depth == 1 else shape.branching
        parents = [index for index in frontier if not nodes[index].finished for _ in range(width)]
        if not parents:
            break
        length = rng.randint(shape.chunk_min, shape.chunk_max)
        seeds = [rng.getrandbits(62) for _ in parents]
        grown = sampler.continue_all([paths[p] for p in parents], length, seeds, first_step=depth == 1)
        frontier = []
        for parent, (chunk, finished, ratio) in zip(parents, grown):
            nodes.append(_Node(nodes[parent].tree, parent, depth, chunk, finished, ratio))
            paths.append(paths[parent] + chunk)
            frontier.append(len(nodes) - 1)
    return nodes


def _response_texts(tokenizer, nodes: list[_Node], indices: Sequence[int], prompt_lengths: list[int],
                    eos_ids: set[int]) -> list[str]:
    """The response text of each node in ``indices`` (everything after its prompt, without a final EOS)."""
    texts = []
    for index in indices:
        ids = _path_ids(nodes, index)[prompt_lengths[nodes[index].tree]:]
        if ids and ids[-1] in eos_ids:
            ids = ids[:-1]
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts


def _path_ids(nodes: Sequence[_Node], index: int) -> list[int]:
    chunks = []
    while index >= 0:
        chunks.append(nodes[index].tokens)
        index = nodes[index].parent
    return [token for chunk in reversed(chunks) for token in chunk]


def back_up(parents: Sequence[int], log_ratios: Sequence[float], leaf_values: Mapping[int, float]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per node (children after their parent): its value, the leaf's own or the mean of its children's;
    and its future KL, the mean over children of (their chunk's log π/π_ref + their future KL), 0 at leaves."""
    children: dict[int, list[int]] = {}
    for index, parent in enumerate(parents):
        children.setdefault(parent, []).append(index)
    values, future = np.zeros(len(parents)), np.zeros(len(parents))
    for index in reversed(range(len(parents))):
        below = children.get(index, [])
        if not below:
            values[index] = leaf_values[index]
            continue
        values[index] = np.mean([values[child] for child in below])
        future[index] = np.mean([log_ratios[child] + future[child] for child in below])
    return values, future


def collect_trees(
    sampler: TreeSampler,
    prompts: Sequence[str],
    objectives: Sequence[Objective],
    shape: TreeShape = TreeShape(),
    *,
    seed: int = 0,
    shard: str = "shard0",
    policy: str = "reference",
) -> pa.Table:
    """Grow one tree per prompt with ``sampler``, score its leaves with every objective (normalized
    rewards) and back the values up; returns the shard's table (see the module docstring)."""
    if not prompts:
        raise ConfigError("no prompts to grow trees from; give at least one")
    if not objectives:
        raise ConfigError("trees need at least one objective to score their leaves")
    tokenizer = sampler.tokenizer
    prompt_ids = prompt_token_ids(tokenizer, prompts)
    rng = random.Random(seed)
    with torch.inference_mode(), evaluation_mode(sampler.reference_model):
        nodes = _grow(sampler, prompt_ids, shape, rng)
    has_child = {node.parent for node in nodes}
    leaves = [index for index in range(len(nodes)) if index not in has_child]
    texts = _response_texts(tokenizer, nodes, leaves, [len(ids) for ids in prompt_ids], sampler.eos_ids)
    leaf_prompts = [prompts[nodes[index].tree] for index in leaves]
    columns = {}
    parents, log_ratios = [node.parent for node in nodes], [node.log_ratio for node in nodes]
    for objective in objectives:
        rewards = objective.reward(leaf_prompts, texts)
        columns[VALUE_PREFIX + objective.name], future = back_up(parents, log_ratios, dict(zip(leaves, rewards.tolist())))
    keep = [node.depth > 0 and (node.depth < shape.depth or rng.random() < shape.keep_bottom) for node in nodes]
    table = pa.table({
        "tree": [f"{shard}/{node.tree}" for node in nodes],
        "parent": pa.array(parents, pa.int32()),
        "depth": pa.array([node.depth for node in nodes], pa.int16()),
        "prompt": [prompts[node.tree] if node.depth == 0 else None for node in nodes],
        "tokens": pa.array([node.tokens for node in nodes], pa.list_(pa.int32())),
        "finished": [node.finished for node in nodes],
        "log_ratio": log_ratios,
        "future_kl": future,
        "keep": keep,
        **{name: pa.array(values, pa.float64()) for name, values in columns.items()},
    })
    info = {"objectives": [o.name for o in objectives], "stats": stats_to_dict(objectives), "policy": policy,
            "shape": asdict(shape), "seed": seed}
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()})


def tree_info(table: pa.Table) -> dict:
    """The collection facts stored with a shard: objectives and their normalization stats, sampling policy,
    shape, seed."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError("this Parquet file holds no MAVIS trees (no paretoalign.mavis metadata); collect it with "
                        "'paretoalign mavis collect'")
    return json.loads(raw)


def write_shard(table: pa.Table, path: str | Path) -> Path:
    """Write a shard atomically (zstd Parquet); a killed write leaves no half-file."""
    tree_info(table)
    with atomic_path(path) as staged:
        pq.write_table(table, staged, compression="zstd")
    return Path(path)


def read_shards(paths: Iterable[str | Path]) -> pa.Table:
    """One table from one or more shards: concatenated after checking they hold the same objectives and
    columns and share no tree id. Parent row numbers are shifted to the merged table's rows."""
    tables, offset = [], 0
    for path in paths:
        table = pq.read_table(existing_file(path, "MAVIS tree shard"))
        tree_info(table)
        if tables and not table.schema.equals(tables[0].schema, check_metadata=False):
            raise DataError(f"shard {str(path)!r} has other columns than the first shard; merge shards collected "
                            "for the same objectives")
        if tables and tree_info(table)["objectives"] != tree_info(tables[0])["objectives"]:
            raise DataError(f"shard {str(path)!r} was scored on other objectives than the first shard")
        parents = np.asarray(table["parent"].to_numpy())
        shifted = pa.array(np.where(parents >= 0, parents + offset, -1), pa.int32())
        tables.append(table.set_column(table.schema.get_field_index("parent"), "parent", shifted))
        offset += table.num_rows
    if not tables:
        raise ConfigError("no shards given; pass at least one Parquet file of trees")
    merged = pa.concat_tables(tables).replace_schema_metadata(tables[0].schema.metadata)
    roots = [tree for tree, depth in zip(merged["tree"].to_pylist(), merged["depth"].to_pylist()) if depth == 0]
    if len(roots) != len(set(roots)):
        raise DataError("two shards share tree ids; collect each shard with its own --shard name")
    return merged


def merge_shards(paths: Sequence[str | Path], output: str | Path) -> Path:
    """Concatenate shards (see :func:`read_shards`) into one Parquet file, atomically."""
    return write_shard(read_shards(paths), output)


def value_records(table: pa.Table, objective: str, eta: float = 0.0) -> list[dict]:
    """Training records ``{"input_ids", "target"}`` of the kept nodes: prompt + response so far, and the
    soft value ``value − η·future_kl`` of ``objective`` (η = 0: the plain Monte-Carlo value)."""
    column = VALUE_PREFIX + objective
    if column not in table.column_names:
        have = ", ".join(tree_info(table)["objectives"])
        raise DataError(f"the trees hold no values for objective {objective!r} (they have: {have}); "
                        "collect trees scored on it")
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    parents = table["parent"].to_pylist()
    tokens = table["tokens"].to_pylist()
    nodes = [_Node(0, parent, 0, chunk) for parent, chunk in zip(parents, tokens)]
    values, future, keep = table[column].to_numpy(), table["future_kl"].to_numpy(), table["keep"].to_pylist()
    return [{"input_ids": _path_ids(nodes, index), "target": float(values[index] - eta * future[index])}
            for index in range(len(nodes)) if keep[index]]
