"""MAVIS trees on tiny real Llamas: growth, Monte-Carlo and soft-value targets, Arrow shards."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from paretoalign.core.errors import ConfigError, DataError
from paretoalign.generation.chat import prompt_token_ids
from paretoalign.methods.mavis import (
    TreeSampler,
    TreeShape,
    back_up,
    collect_trees,
    merge_shards,
    read_shards,
    tree_info,
    value_records,
    write_shard,
)
from paretoalign.objectives import NormStats, get_objective

PROMPTS = ["Why is the sky blue?", "Give me three tips for better sleep."]
SHAPE = TreeShape(root_branching=3, branching=2, depth=3, chunk_min=2, chunk_max=4, keep_bottom=0.5)


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


def test_trees_have_the_asked_shape_and_values(tiny, trees, objectives):
    model, tokenizer = tiny
    depth, parent = trees["depth"].to_pylist(), trees["parent"].to_pylist()
    finished, tokens = trees["finished"].to_pylist(), trees["tokens"].to_pylist()
    assert depth.count(0) == len(PROMPTS)
    for index, d in enumerate(depth):
        children = [c for c, p in enumerate(parent) if p == index]
        if d == 0:
            assert len(children) == SHAPE.root_branching
        elif d < SHAPE.depth and not finished[index]:
            assert len(children) == SHAPE.branching
        else:
            assert children == []
        if d > 0:
            assert 1 <= len(tokens[index]) <= SHAPE.chunk_max
            assert finished[index] or len(tokens[index]) >= SHAPE.chunk_min
    first = [i for i, d in enumerate(depth) if d == 1]
    assert all(tokens[i][0] != tokenizer.eos_token_id for i in first)  # EOS banned as the first token
    deeper = [ratio for ratio, d in zip(trees["log_ratio"].to_pylist(), depth) if d > 1]
    assert np.allclose(deeper, 0.0, atol=1e-4)  # sampled from π_ref itself: no KL below the first token
    leaves = [i for i in range(len(depth)) if i not in set(parent)]
    prompt_lengths = {i: len(ids) for i, ids in enumerate(prompt_token_ids(tokenizer, PROMPTS))}
    roots = [i for i, d in enumerate(depth) if d == 0]
    for leaf in leaves[:6]:
        node, path = leaf, []
        while node >= 0:
            path, root, node = tokens[node] + path, node, parent[node]
        response = path[prompt_lengths[roots.index(root)]:]
        if response[-1] == tokenizer.eos_token_id:
            response = response[:-1]
        text = tokenizer.decode(response, skip_special_tokens=True)
        for objective in objectives:
            expected = objective.reward([PROMPTS[roots.index(root)]], [text])[0]
            assert trees[f"value:{objective.name}"][leaf].as_py() == pytest.approx(expected)
    assert tree_info(trees)["objectives"] == ["conciseness", "informativeness"]


def test_shards_write_merge_round_trip(tiny, trees, objectives, tmp_path):
    model, tokenizer = tiny
    other = collect_trees(TreeSampler(model, tokenizer), PROMPTS[:1], objectives, SHAPE, seed=4, shard="b")
    first, second = write_shard(trees, tmp_path / "a.parquet"), write_shard(other, tmp_path / "b.parquet")
    merged_path = merge_shards([first, second], tmp_path / "merged.parquet")
    merged = pq.read_table(merged_path)
    assert merged.num_rows == trees.num_rows + other.num_rows
    assert tree_info(merged)["objectives"] == ["conciseness", "informativeness"]
    together = value_records(read_shards([merged_path]), "informativeness", 0.1)
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
    with pytest.raises(ConfigError, match="at least one objective"):
        collect_trees(TreeSampler(model, tokenizer), PROMPTS, [], SHAPE)
