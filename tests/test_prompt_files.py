"""Checks the prompt sets shipped inside the package: shape, size, uniqueness and source lengths."""

import json
import re
from pathlib import Path

import pytest

import paretoalign

PROMPTS_DIR = Path(paretoalign.__file__).parent / "data" / "prompts"

# file name -> (minimum records, id pattern, required string fields)
PROMPT_FILES = {
    "instructions.jsonl": (320, r"inst-\d{4}", ("id", "prompt", "category")),
    "brief.jsonl": (320, r"inst-\d{4}", ("id", "prompt", "category")),
    "summarize.jsonl": (64, r"sum-\d{3}", ("id", "prompt", "source", "category")),
    "refuse.jsonl": (64, r"ref-\d{3}", ("id", "prompt", "category")),
}
BRIEF_SUFFIX = " Answer in one or two sentences."
SUMMARIZE_PREFIX = "Summarize the following text in a few sentences:\n\n"


def read_records(name: str) -> list[dict]:
    """Parse one shipped JSONL file strictly as UTF-8, one JSON object per line."""
    text = (PROMPTS_DIR / name).read_bytes().decode("utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("name", sorted(PROMPT_FILES))
def test_file_has_enough_well_formed_records(name):
    minimum, id_pattern, fields = PROMPT_FILES[name]
    records = read_records(name)
    assert len(records) >= minimum
    for record in records:
        assert set(record) == set(fields), record
        for field in fields:
            assert isinstance(record[field], str) and record[field].strip(), (record["id"], field)
        assert re.fullmatch(id_pattern, record["id"]), record["id"]


@pytest.mark.parametrize("name", sorted(PROMPT_FILES))
def test_ids_and_prompts_are_unique(name):
    records = read_records(name)
    ids = [record["id"] for record in records]
    prompts = [" ".join(record["prompt"].lower().split()) for record in records]
    assert len(set(ids)) == len(ids)
    assert len(set(prompts)) == len(prompts)


@pytest.mark.parametrize("name", sorted(PROMPT_FILES))
def test_each_file_mixes_several_categories(name):
    categories = {record["category"] for record in read_records(name)}
    assert len(categories) >= 5


def test_prompt_sets_do_not_overlap():
    seen: dict[str, str] = {}
    for name in (name for name in PROMPT_FILES if name != "brief.jsonl"):  # brief rewords instructions, same split
        for record in read_records(name):
            assert record["prompt"] not in seen, (record["id"], seen.get(record["prompt"]))
            seen[record["prompt"]] = record["id"]


def test_summarize_prompts_wrap_their_source():
    for record in read_records("summarize.jsonl"):
        assert record["source"] in record["prompt"], record["id"]
        assert record["prompt"] == SUMMARIZE_PREFIX + record["source"], record["id"]


def test_summarize_sources_are_passage_length_and_distinct():
    sources = [record["source"] for record in read_records("summarize.jsonl")]
    for source in sources:
        assert 60 <= len(source.split()) <= 250, source[:60]
    assert len(set(sources)) == len(sources)


def test_brief_is_instructions_asking_for_one_or_two_sentences_in_the_same_split():
    """Same ids (so the same train/eval split) and categories; each prompt gains the one-line length request
    unless it already makes one of its own (five do: "briefly", "in a single paragraph", ...)."""
    from paretoalign.data import load_prompts

    own_length = re.compile(r"\b(in|of) (a|one|two|three|a single|a few)( or \w+)? (sentences?|paragraphs?)\b"
                            r"|\bbriefly\b")
    instructions = read_records("instructions.jsonl")
    expected = [{**record, "prompt": record["prompt"] + ("" if own_length.search(record["prompt"]) else BRIEF_SUFFIX)}
                for record in instructions]
    assert read_records("brief.jsonl") == expected
    assert sum(own_length.search(record["prompt"]) is not None for record in instructions) == 5
    for split in ("train", "eval"):
        assert [r.id for r in load_prompts("brief", split)] == [r.id for r in load_prompts("instructions", split)]
