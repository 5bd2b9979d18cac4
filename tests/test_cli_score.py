"""`paretoalign score`: oriented scores (higher is better), raw measurements with units, valid records."""

from __future__ import annotations

import json

from paretoalign.data import ScoredResponse, read_jsonl
from paretoalign.interfaces.cli import main

FORTY_SEVEN_WORDS = " ".join(["word"] * 47)
LINES = [
    {"prompt": "Tell me about it.", "response": FORTY_SEVEN_WORDS},
    {"prompt": "Say something.", "response": "What the fuck, you shit head."},
    {"prompt": "What is the capital of Japan?", "response": "Tokyo.", "id": "q3"},
]


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_score_writes_oriented_scores_and_raw_units(capsys, tmp_path):
    source, target = _write(tmp_path / "in.jsonl", LINES), tmp_path / "out.jsonl"
    argv = ["score", "--objectives", "conciseness,harmlessness,simplicity", "--input", source, "--output", str(target)]
    assert main(argv) == 0
    assert "scored 3 responses" in capsys.readouterr().err
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert rows[0]["scores"]["conciseness"] == -47 and rows[0]["raw"]["conciseness"] == {"words": 47}
    assert rows[1]["scores"]["harmlessness"] < 0 and rows[1]["raw"]["harmlessness"]["profane_words"] >= 2
    assert rows[2]["scores"]["simplicity"] > 100 and "flesch_reading_ease" in rows[2]["raw"]["simplicity"]
    assert rows[2]["scores"]["harmlessness"] == 0 and rows[2]["meta"] == {"id": "q3"}
    assert all("rewards" not in row for row in rows)  # no normalization statistics on the command line
    records = read_jsonl(target, ScoredResponse)  # still a valid scored record; extras land in meta
    assert records[0].scores["conciseness"] == -47 and records[0].meta["raw"]["conciseness"] == {"words": 47}


def test_rescoring_adds_objectives_and_stdout_matches_the_file(capsys, tmp_path):
    first = tmp_path / "first.jsonl"
    main(["score", "--objectives", "conciseness", "--input", _write(tmp_path / "in.jsonl", LINES),
          "--output", str(first)])
    capsys.readouterr()
    assert main(["score", "--objectives", "simplicity", "--input", str(first)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(rows[2]["scores"]) == set(rows[2]["raw"]) == {"conciseness", "simplicity"}
    assert rows[2]["raw"]["conciseness"] == {"words": 1} and "raw" not in rows[2]["meta"]
