"""The prompt sets shipped in ``paretoalign/data/prompts/*.jsonl`` and their train/eval split.

Split rule: a record goes to ``eval`` when the first 8 bytes of SHA-256 of its id (its prompt
text if it has no id), read as a big-endian integer, fall below ``EVAL_FRACTION`` * 2**64, else
to ``train``. This is about 80/20, the same on every machine and Python version, and a record
keeps its split when other lines are added or removed.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from typing import Literal

from paretoalign.core.errors import ConfigError, DataError

from .io import read_jsonl
from .records import PromptRecord

Split = Literal["train", "eval", "all"]
EVAL_FRACTION = 0.2
DEFAULT_PROMPT_SET = "brief"
"""What recipes train on and sweeps evaluate on unless told otherwise: the ``instructions`` questions, each asking
for an answer of one or two sentences. On the bare questions the default model's answers ran past the quick
preset's 40 tokens 95-100% of the time (the all-methods sweep in the README), so a length objective scored the
cap; on ``brief`` at 80 tokens 30% of the base model's answers are cut (``make demo``)."""
SPLITS = ("train", "eval", "all")


def split_of(key: str) -> Literal["train", "eval"]:
    """The split ("train" or "eval") a record with this id belongs to (see the module rule)."""
    head = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return "eval" if head < EVAL_FRACTION * 2**64 else "train"


def _prompt_folder():
    return resources.files("paretoalign.data").joinpath("prompts")


def prompt_set_names() -> list[str]:
    """Names of the prompt sets shipped with the package (e.g. "instructions", "summarize")."""
    folder = _prompt_folder()
    if not folder.is_dir():
        return []
    return sorted(f.name.removesuffix(".jsonl") for f in folder.iterdir() if f.name.endswith(".jsonl"))


def load_prompt_file(path: str | os.PathLike, split: Split = "all") -> list[PromptRecord]:
    """PromptRecords of a JSONL file (``{"id", "prompt"[, "source"]}`` lines) in one split."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    records = read_jsonl(path, PromptRecord)
    seen: set[str] = set()
    for record in records:
        key = record.id if record.id is not None else record.prompt
        if key in seen:
            raise DataError(f"{path}: id {key!r} appears twice; give every prompt a unique id")
        seen.add(key)
    if split == "all":
        return records
    return [r for r in records if split_of(r.id if r.id is not None else r.prompt) == split]


def load_prompts(name: str = DEFAULT_PROMPT_SET, split: Split = "train") -> list[PromptRecord]:
    """A shipped prompt set (see ``prompt_set_names``) in the given split."""
    names = prompt_set_names()
    if name not in names:
        raise ConfigError(
            f"prompt set {name!r} is unknown; choose one of {', '.join(names) or '(none installed)'}"
        )
    with resources.as_file(_prompt_folder().joinpath(f"{name}.jsonl")) as path:
        return load_prompt_file(path, split)
