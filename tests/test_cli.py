"""The command line: help, objectives, score, generate, and one-line errors with exit status 2."""

import json

import pytest

from paretoalign.interfaces.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err.strip()


def test_objectives_lists_every_builtin(capsys):
    code, out, _ = _run(capsys, ["objectives"])
    assert code == 0
    for name in ("simplicity", "conciseness", "informativeness", "friendliness", "harmlessness", "relevance",
                 "faithfulness", "length_cost"):
        assert f"\n{name} " in f"\n{out}"


def test_score_adds_oriented_scores_and_writes_atomically(capsys, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"prompt": "Why is the sky blue?", "response": "Air scatters blue light. It is lovely!"}) + "\n"
        + json.dumps({"prompt": "Hi", "completion": "Hello there, friend."}) + "\n"
    )
    target = tmp_path / "out.jsonl"
    code, _, err = _run(capsys, ["score", "--objectives", "conciseness,friendliness", "--input", str(source),
                                 "--output", str(target)])
    assert code == 0 and "scored 2 responses" in err
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert rows[0]["scores"]["conciseness"] == -7 and rows[1]["scores"]["conciseness"] == -3
    assert rows[0]["scores"]["friendliness"] > 0


@pytest.mark.parametrize(
    "lines, argv_tail, fragment",
    [
        (['{"prompt": "a", "response": "b"}', "{oops"], [], "line 2: not valid JSON"),
        (['{"prompt": "a"}'], [], "line 1: missing field 'response'"),
        (['{"prompt": "a", "response": "b"}'], ["--objectives", "humor"], "known objectives: conciseness"),
    ],
)
def test_score_bad_input_is_one_line_exit_2(capsys, tmp_path, lines, argv_tail, fragment):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    target = tmp_path / "out.jsonl"
    argv = ["score", "--objectives", "conciseness", "--input", str(source), "--output", str(target), *argv_tail]
    code, _, err = _run(capsys, argv)
    assert code == 2 and fragment in err and "\n" not in err
    assert not target.exists()


def test_missing_file_and_model_path_are_one_line_errors(capsys, tmp_path):
    code, _, err = _run(capsys, ["score", "--objectives", "conciseness", "--input", str(tmp_path / "nope.jsonl")])
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, ["generate", "--prompt", "hi", "--model", str(tmp_path / "no-model")])
    assert code == 2 and "does not exist" in err and "\n" not in err


@pytest.mark.parametrize(
    "weights, fragment",
    [
        ("simplicity=-0.5,informativeness=1.5", "negative"),
        ("simplicity=abc", "must be a number"),
        ("simplicity=nan,informativeness=1", "finite"),
        ("simplicity=0.5,informativeness=0.2", "sum to 0.7"),
        ("humor=1", "unknown objective 'humor'"),
    ],
)
def test_bad_weights_are_one_line_exit_2(capsys, weights, fragment):
    code, _, err = _run(capsys, ["generate", "--prompt", "hi", "--preference", weights])
    assert code == 2 and fragment in err and "\n" not in err


def test_generate_steers_the_tiny_model_by_prompting(capsys, tiny_model_dir):
    argv = ["generate", "--prompt", "Explain rain.", "--model", str(tiny_model_dir), "--max-new-tokens", "5",
            "--preference", "simplicity=2,informativeness=2", "--normalize-weights", "--seed", "1"]
    code, first, _ = _run(capsys, argv)
    assert code == 0 and first.strip()
    assert _run(capsys, argv)[1] == first  # same seed, same answer


@pytest.mark.integration
def test_generate_answers_with_the_embedded_model_offline(capsys):
    code, out, _ = _run(capsys, ["generate", "--prompt", "What is the capital of France?", "--temperature", "0",
                                 "--max-new-tokens", "12"])
    assert code == 0 and "Paris" in out


def test_full_preset_sweeps_the_trained_recipes_beside_the_baselines():
    from paretoalign.evaluation.campaign import PRESETS
    from paretoalign.methods import check_method_names

    full = PRESETS["full"].methods
    check_method_names(full)
    assert {"base", "prompting", "best_of_n", "ric", "soups", "morlhf"} <= set(full)
    assert PRESETS["full"].budget == "full" and PRESETS["quick"].budget == "quick"
