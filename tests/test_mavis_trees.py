"""MAVIS trees on tiny real Llamas: growth to complete leaves, π_ref's top-k, Monte-Carlo and soft-value
targets, Arrow shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretoalign.core.errors import ConfigError, DataError
from paretoalign.generation.chat import prompt_token_ids
from paretoalign.generation.value_guided import GuidanceSettings
from paretoalign.methods.mavis import TreeShape
from paretoalign.methods.mavis.trees import (
    TREE_TOP_K,
    TreeSampler,
    back_up,
    collect_trees,
    read_shards,
    tree_info,
    tree_summary,
    value_records,
    write_shard,
)
from paretoalign.objectives import NormStats, get_objective

PROMPTS = ["Why is the sky blue?", "Give me three tips for better sleep."]
SHAPE = TreeShape(root_branching=3, branching=2, depth=3, chunk_min=2, chunk_max=4, max_new_tokens=14, keep_bottom=0.5)


@pytest.fixture(scope="module")
def objectives():
    concise, informative = get_objective("conciseness"), get_objective("informativeness")
    concise.stats = NormStats(mean=5.0, std=2.0, count=10)
    informative.stats = NormStats(mean=3.0, std=4.0, count=10)
    return [concise, informative]


@pytest.fixture(scope="module")
def trees(tiny, objectives):
    model, tokenizer = tiny
    return collect_trees(TreeSampler(model, tokenizer, batch_size=4), PROMPTS, objectives, SHAPE, seed=3, shard="a")


def _paths(trees):
    """Each node's full token path (prompt + response so far)."""
    parents, tokens = trees["parent"].to_pylist(), trees["tokens"].to_pylist()
    paths = []
    for index, parent in enumerate(parents):
        paths.append((paths[parent] if parent >= 0 else []) + tokens[index])
    return paths


def test_back_up_on_a_hand_built_tree():
    #        0
    #      /   \
    #     1     2 (leaf)
    #    / \
    #   3   4   (leaves)
    parents = [-1, 0, 0, 1, 1]
    log_ratios = [0.0, 0.5, 1.0, 2.0, 4.0]
    values, future = back_up(parents, log_ratios, {2: 3.0, 3: 1.0, 4: -1.0})
    np.testing.assert_allclose(values, [(0.0 + 3.0) / 2, 0.0, 3.0, 1.0, -1.0])
    np.testing.assert_allclose(future, [((0.5 + 3.0) + 1.0) / 2, (2.0 + 4.0) / 2, 0.0, 0.0, 0.0])


def test_value_records_give_paths_and_soft_targets(trees):
    eta = 0.5
    records = value_records(trees, "conciseness", eta)
    kept = [i for i, keep in enumerate(trees["keep"].to_pylist()) if keep]
    assert len(records) == len(kept)
    parents, tokens = trees["parent"].to_pylist(), trees["tokens"].to_pylist()
    values, future = trees["value:conciseness"].to_numpy(), trees["future_kl"].to_numpy()
    for record, index in zip(records, kept):
        path, node = [], index
        while node >= 0:
            path = tokens[node] + path
            node = parents[node]
        assert record["input_ids"] == path
        assert record["target"] == pytest.approx(values[index] - eta * future[index])
    with pytest.raises(DataError, match="no values for objective 'simplicity'"):
        value_records(trees, "simplicity")


def test_trees_have_the_asked_shape_and_complete_leaves(tiny, trees, objectives):
    model, tokenizer = tiny
    depth, parent = trees["depth"].to_pylist(), trees["parent"].to_pylist()
    finished, tokens = trees["finished"].to_pylist(), trees["tokens"].to_pylist()
    assert depth.count(0) == len(PROMPTS)
    for index, d in enumerate(depth):
        children = [c for c, p in enumerate(parent) if p == index]
        if d == 0:
            assert len(children) == SHAPE.root_branching
        elif finished[index]:
            assert children == []
        elif d < SHAPE.depth:
            assert len(children) == SHAPE.branching
        else:  # the final layer: one completion per unfinished node of the last chunk layer
            assert d == SHAPE.depth and len(children) == 1 and finished[children[0]]
        if 0 < d <= SHAPE.depth:
            assert 1 <= len(tokens[index]) <= SHAPE.chunk_max
    first = [i for i, d in enumerate(depth) if d == 1]
    assert all(tokens[i][0] != tokenizer.eos_token_id for i in first)  # EOS banned as the first token
    prompt_lengths = [len(ids) for ids in prompt_token_ids(tokenizer, PROMPTS)]
    roots = [i for i, d in enumerate(depth) if d == 0]
    leaves = [i for i in range(len(depth)) if i not in set(parent)]
    assert any(depth[leaf] == SHAPE.depth + 1 for leaf in leaves)
    for leaf, path in ((leaf, _paths(trees)[leaf]) for leaf in leaves):
        tree = trees["tree"][leaf].as_py()
        prompt = roots.index(next(r for r in roots if trees["tree"][r].as_py() == tree))
        response = path[prompt_lengths[prompt]:]
        # every leaf is a complete answer: it ends with EOS or runs exactly to the decoding length
        assert finished[leaf] and len(response) <= SHAPE.max_new_tokens
        assert response[-1] == tokenizer.eos_token_id or len(response) == SHAPE.max_new_tokens
        if response[-1] == tokenizer.eos_token_id:
            response = response[:-1]
        text = tokenizer.decode(response, skip_special_tokens=True)
        for objective in objectives:
            expected = objective.reward([PROMPTS[prompt]], [text])[0]
            assert trees[f"value:{objective.name}"][leaf].as_py() == pytest.approx(expected)
    assert tree_info(trees)["objectives"] == ["conciseness", "informativeness"]
    summary = tree_summary(trees, {tokenizer.eos_token_id})
    assert summary["leaves"] == len(leaves) and summary["nodes"] == trees.num_rows
    assert summary["generated_tokens"] == sum(len(t) for t, d in zip(tokens, depth) if d)


def test_the_decoding_length_caps_every_layer(tiny, objectives):
    model, tokenizer = tiny
    short = TreeShape(root_branching=2, branching=2, depth=3, chunk_min=3, chunk_max=3, max_new_tokens=5)
    table = collect_trees(TreeSampler(model, tokenizer), PROMPTS[:1], objectives, short, seed=1)
    prompt_length = len(prompt_token_ids(tokenizer, PROMPTS[:1])[0])
    lengths = [len(path) - prompt_length for path in _paths(table)[1:]]
    assert max(lengths) <= 5 and max(table["depth"].to_pylist()) <= 2  # 3 + 2 tokens, then the answer is complete
    leaves = [i for i in range(table.num_rows) if i not in set(table["parent"].to_pylist())]
    assert all(table["finished"][leaf].as_py() for leaf in leaves)


def test_reference_trees_sample_from_the_top_k(tiny, objectives):
    model, tokenizer = tiny
    assert TREE_TOP_K == 40 and TreeSampler(model, tokenizer).settings == GuidanceSettings(beta=0.0, top_k=40)
    k = 2
    sampler = TreeSampler(model, tokenizer, settings=GuidanceSettings(beta=0.0, top_k=k))
    table = collect_trees(sampler, PROMPTS[:1], objectives[:1], SHAPE, seed=5)
    assert tree_info(table)["guidance"]["top_k"] == k
    prompt_length = len(prompt_token_ids(tokenizer, PROMPTS[:1])[0])
    leaves = [i for i in range(table.num_rows) if i not in set(table["parent"].to_pylist())]
    with torch.inference_mode():
        for path in (_paths(table)[leaf] for leaf in leaves):
            logits = model(input_ids=torch.tensor([path])).logits[0]
            logits[prompt_length - 1, tokenizer.eos_token_id] = float("-inf")  # banned first token
            top = logits[prompt_length - 1 : len(path) - 1].topk(k, dim=-1).indices
            assert all(token in row for token, row in zip(path[prompt_length:], top.tolist()))
    ratios = np.array(table["log_ratio"].to_pylist()[1:])
    assert (ratios > 0).all()  # top-k renormalizes: each drawn token is likelier than under π_ref


def test_shards_write_read_round_trip(tiny, trees, objectives, tmp_path):
    model, tokenizer = tiny
    other = collect_trees(TreeSampler(model, tokenizer), PROMPTS[:1], objectives, SHAPE, seed=4, shard="b")
    first, second = write_shard(trees, tmp_path / "a.parquet"), write_shard(other, tmp_path / "b.parquet")
    merged = read_shards([first, second])
    assert merged.num_rows == trees.num_rows + other.num_rows
    assert tree_info(merged)["objectives"] == ["conciseness", "informativeness"]
    together = value_records(merged, "informativeness", 0.1)
    apart = value_records(trees, "informativeness", 0.1) + value_records(other, "informativeness", 0.1)
    assert together == apart
    assert not list(tmp_path.glob(".*"))  # no staging leftovers
    with pytest.raises(DataError, match="share tree ids"):
        read_shards([first, first])
    only_one = collect_trees(TreeSampler(model, tokenizer), PROMPTS[:1], objectives[:1], SHAPE, shard="c")
    with pytest.raises(DataError, match="other columns"):
        read_shards([first, write_shard(only_one, tmp_path / "c.parquet")])


def test_tree_settings_are_checked(tiny, objectives):
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="chunk_max"):
        TreeShape(chunk_min=5, chunk_max=2)
    with pytest.raises(ConfigError, match="keep_bottom"):
        TreeShape(keep_bottom=0)
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 1"):
        TreeShape(max_new_tokens=0)
    with pytest.raises(ConfigError, match="at least one objective"):
        collect_trees(TreeSampler(model, tokenizer), PROMPTS, [], SHAPE)
