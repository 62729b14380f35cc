"""Data augmentation for task-specific distillation (Tang et al. 2019, docs/DESIGN.md §3).

For each example, ``n_iter`` synthetic copies are made. In each copy every word is, with
probability ``p_mask``, replaced by the mask token (``[MASK]`` by default: the teacher
tokenizer's mask string), else with probability ``p_pos`` replaced by another word of the same
part-of-speech tag, drawn from the unigram distribution of that tag's words in the training set
itself (the original word excluded); the two rules are mutually exclusive. Then, with
probability ``p_ng``, the copy is replaced by a random n-gram of it (``n`` uniform in
``1..max_ngram``, start uniform). Duplicates (and copies equal to the original) are dropped; the
original is always kept first. Defaults are Tang et al.'s: 0.1 / 0.1 / 0.25, ``n_iter`` 20.
Pair tasks augment each text field independently.

Determinism: example ``i`` draws from ``numpy.random.default_rng([seed, i])``, so a result does
not depend on the order in which examples are processed or how they are sharded; the POS
dictionary is built from the whole input first and its words are sorted. Results are cached as
JSON Lines under ``cache_dir`` keyed by a hash of the rows, the parameters and the tagger; the
file is written under a temporary name and renamed, and starts with a header giving its row
count, so a truncated or unreadable cache is detected, logged and rebuilt.

Words and tags
--------------
* English: words are whitespace tokens (the Lv et al. sets are already tokenised; copies are
  joined with single spaces). POS tags come from **TextBlob** (``pip install textblob``), which
  ships Tom De Smedt's Pattern tagger inside its wheel: a Brill-style tagger (a lexicon of about
  94k words with their most frequent Penn Treebank tag, plus Brill's lexical rules for unknown
  words and contextual rules) that runs offline with no data download. We call its full rule
  set (``textblob._text.find_tags`` with the bundled lexicon, morphology and context rules) and
  fall back to the public ``PatternTagger`` (lexicon and suffix rules only) if that private
  function ever changes. Why TextBlob: NLTK's perceptron tagger needs ``nltk_data``, which is
  downloaded at run time and is not on PyPI (the PyPI repackagings of it are unofficial
  single-author uploads); spaCy's official models are not on PyPI either (the
  ``en-core-web-sm-*`` names there are third-party re-uploads of doubtful maintenance); flair,
  stanza and trankit download their models at run time. TextBlob is MIT-licensed, maintained,
  widely used, and its tagger is data shipped in the package. It is less accurate than a
  statistical tagger, which matters little here: tags only pick which words may stand in for
  each other.
* Chinese: ``jieba.posseg`` (``pip install jieba``) segments and tags (ICTCLAS tag set);
  copies are joined without spaces. Whitespace tokens are never masked or replaced.

Both are optional dependencies imported lazily; with ``p_pos=0`` English needs no tagger. A
custom ``analyzer(text) -> (words, tags)`` can be passed instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "augment_dataset",
    "augment_examples",
    "chinese_analyzer",
    "english_analyzer",
]

Analyzer = Callable[[str], tuple[list[str], list[str]]]
_CACHE_FORMAT_VERSION = 2  # 2: header line with the row count, no sidecar .json
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the augmentation; defaults from Tang et al. (2019)."""

    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    n_iter: int = 20
    max_ngram: int = 5
    mask_token: str = "[MASK]"
    language: str = "en"
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("p_mask", "p_pos", "p_ng"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if self.p_mask + self.p_pos > 1.0 + 1e-12:
            raise ValueError(f"p_mask + p_pos must be <= 1, got {self.p_mask + self.p_pos}")
        if self.n_iter < 0 or self.max_ngram < 1:
            raise ValueError("n_iter must be >= 0 and max_ngram >= 1")
        if self.language not in ("en", "zh"):
            raise ValueError(f"language must be 'en' or 'zh', got {self.language!r}")


# --------------------------------------------------------------------------------------------
# Analyzers (word segmentation + POS tags)
# --------------------------------------------------------------------------------------------


def _textblob_tagger() -> tuple[Callable[[list[str]], list[str]], str]:
    """Return (tag function over a word list, identifier with version)."""
    try:
        import textblob
        from textblob.en.taggers import PatternTagger
    except ImportError as e:
        raise ImportError(
            "English POS-guided replacement (p_pos > 0) needs the optional dependency TextBlob, "
            "whose bundled Pattern tagger works offline: pip install textblob "
            "(or set p_pos=0, or pass analyzer=...)"
        ) from e
    version = getattr(textblob, "__version__", "?")
    try:
        from textblob import _text
        from textblob.en import lexicon

        rules = (lexicon.morphology, lexicon.context, lexicon.entities)

        def tag_full(words: list[str]) -> list[str]:
            tagged = _text.find_tags(
                words,
                lexicon=lexicon,
                morphology=rules[0],
                context=rules[1],
                entities=rules[2],
                default=("NN", "NNP", "CD"),
                language="en",
            )
            return [t for _, t in tagged]

        if tag_full(["the", "cat"]) == ["DT", "NN"]:
            return tag_full, f"textblob-{version}-brill"
    except (ImportError, AttributeError, TypeError):
        pass
    tagger = PatternTagger()

    def tag_public(words: list[str]) -> list[str]:
        tags = [t for _, t in tagger.tag(" ".join(words), tokenize=False)]
        if len(tags) != len(words):  # defensive: tag word by word to keep alignment
            tags = [tagger.tag(w, tokenize=False)[0][1] for w in words]
        return tags

    return tag_public, f"textblob-{version}-lexicon"


def english_analyzer(with_tags: bool = True) -> tuple[Analyzer, str]:
    """Whitespace words, tagged with TextBlob's Pattern tagger if ``with_tags``.

    Returns ``(analyzer, identifier)``; the identifier (with library version) goes into cache
    keys.
    """
    if not with_tags:

        def split_only(text: str) -> tuple[list[str], list[str]]:
            words = text.split()
            return words, [""] * len(words)

        return split_only, "whitespace"
    tag, ident = _textblob_tagger()

    def analyze(text: str) -> tuple[list[str], list[str]]:
        words = text.split()
        return words, (tag(words) if words else [])

    return analyze, f"whitespace+{ident}"


def chinese_analyzer(with_tags: bool = True) -> tuple[Analyzer, str]:
    """jieba segmentation, with ``jieba.posseg`` tags if ``with_tags``."""
    try:
        import jieba
        import jieba.posseg as pseg
    except ImportError as e:
        raise ImportError(
            "Chinese augmentation needs the optional dependency jieba for word segmentation "
            "and POS tags: pip install jieba (or pass analyzer=...)"
        ) from e
    version = getattr(jieba, "__version__", "?")
    if not with_tags:

        def segment_only(text: str) -> tuple[list[str], list[str]]:
            words = jieba.lcut(text)
            return words, [""] * len(words)

        return segment_only, f"jieba-{version}"

    def analyze(text: str) -> tuple[list[str], list[str]]:
        pairs = pseg.lcut(text)
        return [p.word for p in pairs], [p.flag for p in pairs]

    return analyze, f"jieba-{version}-posseg"


# --------------------------------------------------------------------------------------------
# Augmenter
# --------------------------------------------------------------------------------------------


class _TagWords:
    """Words of one POS tag with cumulative unigram counts, for exact exclusion sampling."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.words = sorted(counts)
        self.counts = [counts[w] for w in self.words]
        self.cum = list(accumulate(self.counts))
        self.index = {w: i for i, w in enumerate(self.words)}

    def sample_other(self, word: str, rng: np.random.Generator) -> str:
        """Draw a word other than ``word`` with probability proportional to its count."""
        j = self.index.get(word)
        if j is None:  # word not seen with this tag: sample from all
            return self.words[bisect_right(self.cum, rng.random() * self.cum[-1])]
        if len(self.words) == 1:
            return word
        excluded = self.counts[j]
        u = rng.random() * (self.cum[-1] - excluded)
        if u >= self.cum[j] - excluded:  # skip over the original word's interval
            u += excluded
        k = min(bisect_right(self.cum, u), len(self.words) - 1)
        return self.words[k]


class Augmenter:
    """Tang et al. (2019) augmentation. Call :meth:`fit` on the training texts first.

    ``analyzer`` maps a text to ``(words, tags)``; by default it is chosen from
    ``config.language`` (TextBlob for English, jieba for Chinese). ``joiner`` joins words back
    (``" "`` for English, ``""`` for Chinese).
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        *,
        analyzer: Analyzer | None = None,
        joiner: str | None = None,
        analyzer_id: str | None = None,
    ) -> None:
        self.config = config or AugmentConfig()
        if analyzer is None:
            make = english_analyzer if self.config.language == "en" else chinese_analyzer
            analyzer, default_id = make(with_tags=self.config.p_pos > 0)
            analyzer_id = analyzer_id or default_id
        self.analyzer = analyzer
        self.analyzer_id = analyzer_id or getattr(analyzer, "__qualname__", "custom")
        self.joiner = (
            joiner if joiner is not None else (" " if self.config.language == "en" else "")
        )
        self._tags: dict[str, _TagWords] = {}

    @property
    def pos_dictionary(self) -> dict[str, dict[str, int]]:
        """Tag -> {word: count} learned by :meth:`fit`."""
        return {t: dict(zip(tw.words, tw.counts, strict=True)) for t, tw in self._tags.items()}

    def fit(self, texts: Iterable[str]) -> Augmenter:
        """Build the POS -> words dictionary from (training) texts."""
        return self.fit_analyzed(self.analyzer(t) for t in texts)

    def fit_analyzed(self, analyses: Iterable[tuple[Sequence[str], Sequence[str]]]) -> Augmenter:
        """Build the POS dictionary from already analysed ``(words, tags)`` pairs."""
        counts: dict[str, Counter[str]] = {}
        for words, tags in analyses:
            for w, t in zip(words, tags, strict=True):
                if t and not w.isspace():
                    counts.setdefault(t, Counter())[w] += 1
        self._tags = {t: _TagWords(c) for t, c in counts.items()}
        return self

    def synthesize(
        self, words: Sequence[str], tags: Sequence[str], rng: np.random.Generator
    ) -> list[str]:
        """One synthetic copy of an analysed text (no dedupe); uses and advances ``rng``."""
        cfg = self.config
        out = list(words)
        if cfg.p_mask > 0 or cfg.p_pos > 0:
            draws = rng.random(len(out))
            for i, u in enumerate(draws):
                w = out[i]
                if w.isspace():
                    continue
                if u < cfg.p_mask:
                    out[i] = cfg.mask_token
                elif u < cfg.p_mask + cfg.p_pos:
                    tag_words = self._tags.get(tags[i]) if tags[i] else None
                    if tag_words is not None:
                        out[i] = tag_words.sample_other(w, rng)
        if cfg.p_ng > 0 and out and rng.random() < cfg.p_ng:
            n = min(int(rng.integers(1, cfg.max_ngram + 1)), len(out))
            start = int(rng.integers(0, len(out) - n + 1))
            out = out[start : start + n]
        return out

    def augment_analyzed(
        self, analyses: Sequence[tuple[Sequence[str], Sequence[str]]], index: int
    ) -> list[tuple[str, ...]]:
        """Augmented copies of one example given per-field analyses (originals not included).

        Returns up to ``n_iter`` distinct tuples of field texts, none equal to the original.
        """
        rng = np.random.default_rng([self.config.seed, index])
        original = tuple(self.joiner.join(w).strip() for w, _ in analyses)
        seen = {original}
        copies: list[tuple[str, ...]] = []
        for _ in range(self.config.n_iter):
            copy = tuple(self.joiner.join(self.synthesize(w, t, rng)).strip() for w, t in analyses)
            if copy not in seen:
                seen.add(copy)
                copies.append(copy)
        return copies

    def augment(self, texts: str | Sequence[str], index: int) -> list[tuple[str, ...]]:
        """Original (first) and distinct augmented copies of one example's text field(s)."""
        fields = (texts,) if isinstance(texts, str) else tuple(texts)
        return [fields, *self.augment_analyzed([self.analyzer(t) for t in fields], index)]


# --------------------------------------------------------------------------------------------
# Whole datasets, with a disk cache
# --------------------------------------------------------------------------------------------


def _cache_key(
    rows: Sequence[Mapping[str, Any]], text_fields: Sequence[str], config: AugmentConfig, ident: str
) -> str:
    h = hashlib.sha256()
    header = {
        "format": _CACHE_FORMAT_VERSION,
        "config": asdict(config),
        "text_fields": list(text_fields),
        "analyzer": ident,
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def augment_examples(
    rows: Iterable[Mapping[str, Any]],
    *,
    text_fields: Sequence[str] = ("text",),
    config: AugmentConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    analyzer: Analyzer | None = None,
    joiner: str | None = None,
    analyzer_id: str | None = None,
) -> list[dict[str, Any]]:
    """Augment a list of examples (dicts); the POS dictionary is fitted on these rows.

    Each output row copies the input row (labels and other fields included), replaces the
    ``text_fields`` in augmented copies, and adds ``orig_index`` (input position) and
    ``aug_index`` (0 for the original). With ``cache_dir`` the result is stored as
    ``augment-<hash>.jsonl`` and returned from there when the rows, parameters and tagger match.
    """
    rows = [dict(r) for r in rows]
    config = config or AugmentConfig()
    aug = Augmenter(config, analyzer=analyzer, joiner=joiner, analyzer_id=analyzer_id)
    cache_path: Path | None = None
    if cache_dir is not None:
        key = _cache_key(rows, text_fields, config, aug.analyzer_id)[:24]
        cache_path = Path(cache_dir) / f"augment-{key}.jsonl"
        if cache_path.is_file():
            cached = _read_cache(cache_path)
            if cached is not None:
                return cached

    for i, row in enumerate(rows):
        for f in text_fields:
            if not isinstance(row.get(f), str):
                raise ValueError(f"row {i}: field {f!r} is missing or not a string")
    analyses = [[aug.analyzer(row[f]) for f in text_fields] for row in rows]
    aug.fit_analyzed(a for per_row in analyses for a in per_row)
    out: list[dict[str, Any]] = []
    for i, (row, analysed) in enumerate(zip(rows, analyses, strict=True)):
        out.append({**row, "orig_index": i, "aug_index": 0})
        for j, copy in enumerate(aug.augment_analyzed(analysed, i), 1):
            out.append(
                {
                    **row,
                    **dict(zip(text_fields, copy, strict=True)),
                    "orig_index": i,
                    "aug_index": j,
                }
            )

    if cache_path is not None:
        header = {
            "format": _CACHE_FORMAT_VERSION,
            "config": asdict(config),
            "text_fields": list(text_fields),
            "analyzer": aug.analyzer_id,
            "rows_in": len(rows),
            "rows_out": len(out),
        }
        _write_cache(cache_path, header, out)
    return out


def _write_cache(path: Path, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Header line, then one row per line; written to a temporary name, then renamed, so a
    reader sees either no file or a complete one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(json.dumps(header, ensure_ascii=False) + "\n")
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_cache(path: Path) -> list[dict[str, Any]] | None:
    """The cached rows, or None (with a warning) if the file is unreadable or incomplete."""
    try:
        with path.open(encoding="utf-8") as f:
            header = json.loads(f.readline())
            rows = [json.loads(line) for line in f]
        if not isinstance(header, dict) or header.get("format") != _CACHE_FORMAT_VERSION:
            raise ValueError(f"header is not a format-{_CACHE_FORMAT_VERSION} header")
        if len(rows) != header["rows_out"]:
            raise ValueError(f"{len(rows)} rows, the header promises {header['rows_out']}")
    except (OSError, ValueError, KeyError) as e:  # JSONDecodeError, UnicodeDecodeError included
        logger.warning("augmentation cache %s is unreadable (%s: %s); rebuilding it",
                       path, type(e).__name__, e)
        return None
    return rows


def augment_dataset(
    dataset: Any,
    *,
    text_fields: Sequence[str] = ("text",),
    config: AugmentConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    analyzer: Analyzer | None = None,
    joiner: str | None = None,
) -> Any:
    """Augment a ``datasets.Dataset`` (e.g. a task's train split); returns a new Dataset."""
    import datasets

    rows = augment_examples(
        dataset,
        text_fields=text_fields,
        config=config,
        cache_dir=cache_dir,
        analyzer=analyzer,
        joiner=joiner,
    )
    features = dataset.features.copy()
    features["orig_index"] = datasets.Value("int64")
    features["aug_index"] = datasets.Value("int64")
    return datasets.Dataset.from_list(rows, features=features)
