"""``paretoalign mavis collect|merge|train|decode`` end to end on the tiny model, and its one-line errors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from paretoalign.interfaces.cli import main
from paretoalign.methods.mavis import tree_info

TREE_FLAGS = ["--root-branching", "2", "--branching", "2", "--depth", "2", "--chunk-min", "2", "--chunk-max", "3",
              "--num-prompts", "2", "--batch-size", "8", "--dtype", "float32", "--device", "cpu"]


def test_collect_merge_train_decode(tiny_model_dir, tmp_path, capsys):
    model = ["--model", str(tiny_model_dir)]
    first, second, merged = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "trees.parquet"
    assert main(["mavis", "collect", "--objectives", "conciseness,informativeness", "--out", str(first),
                 "--shard", "a", *TREE_FLAGS, *model]) == 0
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"stats": tree_info(pq.read_table(first))["stats"]}))
    assert main(["mavis", "collect", "--objectives", "conciseness,informativeness", "--out", str(second),
                 "--shard", "b", "--stats", str(stats), "--seed", "1", *TREE_FLAGS, *model]) == 0
    assert tree_info(pq.read_table(second))["stats"] == tree_info(pq.read_table(first))["stats"]
    assert main(["mavis", "merge", str(first), str(second), "--out", str(merged)]) == 0
    assert pq.read_table(merged).num_rows == pq.read_table(first).num_rows + pq.read_table(second).num_rows
    values = tmp_path / "values"
    assert main(["mavis", "train", "--trees", str(merged), "--objective", "conciseness", "--output-dir", str(values),
                 "--max-steps", "2", "--batch-size", "4", "--no-progress", "--dtype", "float32", *model]) == 0
    assert (values / "model" / "config.json").is_file()
    policy_trees = tmp_path / "iter1.parquet"
    assert main(["mavis", "collect", "--objectives", "conciseness", "--out", str(policy_trees), "--stats", str(stats),
                 "--value-model", str(values / "model"), "--top-k", "5", "--beta", "2", *TREE_FLAGS, *model]) == 0
    assert tree_info(pq.read_table(policy_trees))["policy"] == "mavis:conciseness"
    capsys.readouterr()
    assert main(["mavis", "decode", "--value-model", f"conciseness={values / 'model'}", "--preference", "conciseness=1",
                 "--prompt", "Why is the sky blue?", "--max-new-tokens", "4", "--top-k", "5",
                 "--dtype", "float32", "--device", "cpu", *model]) == 0
    assert capsys.readouterr().out.strip()


def test_user_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    model = ["--model", str(tiny_model_dir)]
    assert main(["mavis", "decode", "--value-model", "no-equals-sign", "--preference", "a=1", "--prompt", "hi",
                 *model]) == 2
    assert "is not OBJECTIVE=DIR" in capsys.readouterr().err
    assert main(["mavis", "collect", "--objectives", "conciseness,informativeness", "--value-model", str(tmp_path),
                 "--out", str(tmp_path / "x.parquet"), *TREE_FLAGS, *model]) == 2
    assert "exactly one in --objectives" in capsys.readouterr().err
    assert main(["mavis", "train", "--trees", str(tmp_path / "missing.parquet"), "--objective", "a",
                 "--output-dir", str(tmp_path / "v")]) == 2
    error = capsys.readouterr().err.strip()
    assert "does not exist" in error and "\n" not in error
