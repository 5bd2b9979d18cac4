"""MAVIS training data: trees of partial responses, their Monte-Carlo values, and Arrow shards on disk.

A tree grows from one prompt, layer by layer: the root gets ``root_branching`` children, every other
node ``branching``, for ``depth`` chunk layers; each chunk layer appends a chunk of a random length (drawn
once per layer and collection, so the whole layer decodes as one batch). A final layer then completes every
unfinished node with one child that runs to EOS or to the decoding length (``max_new_tokens`` response
tokens), so every leaf is a complete answer. A response that samples EOS (or reaches the decoding length)
earlier stops growing and is a leaf there.

Values. A leaf's value is the objective's normalized reward of its complete response (``Objective.reward``:
``direction·(raw − mean)/std`` with the objective's stored statistics, so 0 is the reference model's
average and 1 one standard deviation better). An inner node's value is the mean of its children's.
``future_kl`` is E[Σ log π/π_ref] over the tokens sampled below a node (0 at leaves; mean over
children of their chunk's log-ratio plus their own future_kl), so the soft-value target of iterations
≥ 1 is ``value − η·future_kl`` (:func:`value_records`). Trees sampled from π_ref's top-k have the log-ratio
of that truncation (and of the first token's EOS ban).

On disk a shard is one Parquet file (zstd), one row per node: the root row holds the prompt and its
token ids, every other row only its own chunk and its parent's row number, so nothing is stored twice;
``finished`` marks a node whose response ends there (EOS or the decoding length).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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
from .recipe import TreeShape

METADATA_KEY = b"paretoalign.mavis"
VALUE_PREFIX = "value:"


@dataclass
class _Node:
    tree: int
    parent: int
    depth: int
    tokens: list[int]
    finished: bool = False
    log_ratio: float = 0.0


TREE_TOP_K = 40
"""Tokens of π_ref a tree without guidance samples from (the original's trees: top-k 40)."""


class _LogRatioRecorder:
    """A chooser that samples with ``sampler`` and records log π(a) − log π_ref(a) of each drawn token per row."""

    def __init__(self, sampler: TokenSampler, scorer: ValueGuidedScorer, rows: int) -> None:
        self.sampler, self.scorer = sampler, scorer
        self.log_ratios: list[list[float]] = [[] for _ in range(rows)]

    def __call__(self, scores: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, logprobs = self.sampler(scores, rows)
        reference = self.scorer.reference_logprobs.gather(-1, tokens[:, None]).squeeze(-1)
        for row, ratio in zip(rows, (logprobs - reference).tolist()):
            self.log_ratios[row].append(ratio)
        return tokens, logprobs


@dataclass
class TreeSampler:
    """Samples tree chunks from the reference tilted by ``guidance`` with ``settings``; without guidance
    from π_ref's top-k (``settings`` default: β = 0, k = :data:`TREE_TOP_K`)."""

    reference_model: object
    tokenizer: object
    guidance: Sequence[tuple[float, object]] = ()
    settings: GuidanceSettings | None = None
    temperature: float = 1.0
    batch_size: int = 16
    eos_ids: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.settings = self.settings or GuidanceSettings(beta=0.0, top_k=TREE_TOP_K)
        self.settings.check_vocabulary(self.reference_model.get_output_embeddings().weight.shape[0])
        self.eos_ids = eos_token_ids(self.reference_model, self.tokenizer)

    def continue_all(self, sequences: Sequence[list[int]], lengths: Sequence[int], seeds: Sequence[int],
                     first_step: bool) -> list[tuple[list[int], bool, float]]:
        """``(chunk, ended with EOS, Σ log π/π_ref)`` of up to ``lengths[i]`` new tokens after each sequence
        (batched by similar length)."""
        order = sorted(range(len(sequences)), key=lambda i: lengths[i])
        results: list[tuple[list[int], bool, float]] = [([], False, 0.0)] * len(sequences)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            grown = self._continue_batch([sequences[i] for i in batch], [lengths[i] for i in batch],
                                         [seeds[i] for i in batch], first_step)
            for index, result in zip(batch, grown):
                results[index] = result
        return results

    def _continue_batch(self, sequences, lengths, seeds, first_step):
        model, longest = self.reference_model, max(lengths)
        config = GenerationConfig(max_new_tokens=longest, temperature=self.temperature)
        banned = 1 if first_step and self.settings.ban_eos_first else 0
        scorer = ValueGuidedScorer(model, self.guidance, self.settings, temperature=self.temperature,
                                   eos_ids=self.eos_ids, eos_banned_steps=banned)
        recorder = _LogRatioRecorder(TokenSampler(guided_sampler_config(config), seeds, model.device), scorer,
                                     len(sequences))
        input_ids, attention_mask = pad_left(sequences, pad_id(self.tokenizer))
        decoded = decode_loop(scorer, recorder, input_ids.to(model.device), attention_mask.to(model.device),
                              max_new_tokens=longest, eos_ids=self.eos_ids)
        return [(d.token_ids[:length], d.finish_reason == "eos" and len(d.token_ids) <= length, sum(ratios[:length]))
                for d, ratios, length in zip(decoded, recorder.log_ratios, lengths)]


def _grow(sampler: TreeSampler, prompt_ids: list[list[int]], shape: TreeShape, rng: random.Random) -> list[_Node]:
    """All nodes of one tree per prompt, layer by layer, each layer decoded as one batch; the final layer
    completes every unfinished node to EOS or ``shape.max_new_tokens`` response tokens."""
    nodes = [_Node(tree, -1, 0, ids) for tree, ids in enumerate(prompt_ids)]
    paths = [list(ids) for ids in prompt_ids]
    spent = [0] * len(nodes)  # response tokens up to each node
    frontier = list(range(len(nodes)))
    for depth in range(1, shape.depth + 2):
        final = depth > shape.depth
        width = 1 if final else shape.root_branching if depth == 1 else shape.branching
        parents = [index for index in frontier if not nodes[index].finished for _ in range(width)]
        if not parents:
            break
        chunk = shape.max_new_tokens if final else rng.randint(shape.chunk_min, shape.chunk_max)
        lengths = [min(chunk, shape.max_new_tokens - spent[parent]) for parent in parents]
        seeds = [rng.getrandbits(62) for _ in parents]
        grown = sampler.continue_all([paths[p] for p in parents], lengths, seeds, first_step=depth == 1)
        frontier = []
        for parent, (tokens, eos, ratio) in zip(parents, grown):
            spent.append(spent[parent] + len(tokens))
            complete = eos or spent[-1] >= shape.max_new_tokens
            nodes.append(_Node(nodes[parent].tree, parent, depth, tokens, complete, ratio))
            paths.append(paths[parent] + tokens)
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
    keep = [node.depth > 0 and (node.depth <= shape.depth or rng.random() < shape.keep_bottom) for node in nodes]
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
            "shape": asdict(shape), "guidance": asdict(sampler.settings), "seed": seed}
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()})


def tree_summary(table: pa.Table, eos_ids: Iterable[int]) -> dict:
    """What a shard holds and cost: nodes, complete leaves (how many ended with EOS rather than at the decoding
    length) and the tokens sampled to grow it."""
    eos = set(eos_ids)
    parents, depths = table["parent"].to_pylist(), table["depth"].to_pylist()
    tokens = table["tokens"].to_pylist()
    inner = set(parents)
    leaves = [index for index in range(len(parents)) if index not in inner]
    return {"nodes": len(parents), "leaves": len(leaves),
            "leaves_eos": sum(1 for index in leaves if tokens[index] and tokens[index][-1] in eos),
            "generated_tokens": sum(len(chunk) for chunk, depth in zip(tokens, depths) if depth)}


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
