"""Tests for spikebert.augment (Tang et al. 2019 augmentation).

The core tests use a small deterministic analyzer so they need no tagger; the English
(TextBlob) and Chinese (jieba) paths have their own tests.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest

from spikebert import augment as A

# A toy tagger: a fixed tag per word, with uneven counts to check unigram sampling.
TAGS = {
    "the": "DT", "a": "DT", "this": "DT",
    "cat": "NN", "dog": "NN", "bird": "NN", "movie": "NN",
    "sat": "VB", "ran": "VB", "was": "VB",
    "good": "JJ", "bad": "JJ", "long": "JJ",
}  # fmt: skip
ROWS = [
    {"text": "the cat sat", "label": 0},
    {"text": "the cat ran", "label": 1},
    {"text": "the cat was good", "label": 1},
    {"text": "a dog sat", "label": 0},
    {"text": "this movie was long and bad", "label": 0},
    {"text": "the bird ran", "label": 1},
]
LONG = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"


def toy_analyzer(text: str) -> tuple[list[str], list[str]]:
    words = text.split()
    return words, [TAGS.get(w, "X") for w in words]


def toy(config: A.AugmentConfig) -> A.Augmenter:
    return A.Augmenter(config, analyzer=toy_analyzer, joiner=" ", analyzer_id="toy")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="p_mask"):
        A.AugmentConfig(p_mask=1.5)
    with pytest.raises(ValueError, match="p_mask \\+ p_pos"):
        A.AugmentConfig(p_mask=0.6, p_pos=0.6)
    with pytest.raises(ValueError, match="language"):
        A.AugmentConfig(language="fr")
    cfg = A.AugmentConfig()
    assert (cfg.p_mask, cfg.p_pos, cfg.p_ng, cfg.n_iter) == (0.1, 0.1, 0.25, 20)


def test_deterministic_and_independent_of_processing_order() -> None:
    kwargs = {"analyzer": toy_analyzer, "joiner": " ", "analyzer_id": "toy"}
    cfg = A.AugmentConfig(p_mask=0.2, p_pos=0.3, p_ng=0.25, n_iter=10, seed=5)
    a = A.augment_examples(ROWS, config=cfg, **kwargs)
    b = A.augment_examples(ROWS, config=cfg, **kwargs)
    assert a == b
    c = A.augment_examples(ROWS, config=A.AugmentConfig(p_pos=0.3, seed=6, n_iter=10), **kwargs)
    assert a != c
    # each example is seeded by its index: augmenting one alone, in any order, gives the same
    aug = toy(cfg).fit(r["text"] for r in ROWS)
    for i in reversed(range(len(ROWS))):
        got = [copy[0] for copy in aug.augment(ROWS[i]["text"], i)]
        assert got == [r["text"] for r in a if r["orig_index"] == i]
    # structure: original first, labels carried, no duplicates, no copy equal to the original
    for i, row in enumerate(ROWS):
        mine = [r for r in a if r["orig_index"] == i]
        assert mine[0] == {**row, "orig_index": i, "aug_index": 0}
        assert [r["aug_index"] for r in mine] == list(range(len(mine)))
        assert all(r["label"] == row["label"] for r in mine)
        texts = [r["text"] for r in mine]
        assert len(set(texts)) == len(texts) and 1 < len(texts) <= cfg.n_iter + 1


def test_mask_probability_is_respected() -> None:
    cfg = A.AugmentConfig(p_mask=0.3, p_pos=0.0, p_ng=0.0, mask_token="<m>")
    aug = toy(cfg).fit([LONG])
    words = LONG.split()
    rng = np.random.default_rng(0)
    masked = total = 0
    for _ in range(2000):
        out = aug.synthesize(words, [""] * len(words), rng)
        assert len(out) == len(words)
        assert all(o in ("<m>", w) for o, w in zip(out, words, strict=True))
        masked += sum(o == "<m>" for o in out)
        total += len(out)
    assert abs(masked / total - 0.3) < 0.01  # 30k draws: sd ~0.0026


def test_pos_replacement_probability_tags_and_unigram_weights() -> None:
    texts = ["cat cat cat dog", "a bird sat", "the cat ran", "the dog sat"]  # >= 2 words per tag
    cfg = A.AugmentConfig(p_mask=0.0, p_pos=0.5, p_ng=0.0)
    aug = toy(cfg).fit(texts)
    assert aug.pos_dictionary["NN"] == {"bird": 1, "cat": 4, "dog": 2}
    rng = np.random.default_rng(1)
    words, tags = toy_analyzer("bird sat the ran")
    replaced = Counter()
    changed = 0
    for _ in range(4000):
        out = aug.synthesize(words, tags, rng)
        for o, w, t in zip(out, words, tags, strict=True):
            assert o in aug.pos_dictionary[t]  # same tag
            if o != w:  # replacement never keeps the word when another exists
                changed += 1
                if w == "bird":
                    replaced[o] += 1
    assert abs(changed / (4000 * 4) - 0.5) < 0.02
    # "bird" is replaced by cat:dog in the unigram ratio 4:2
    assert abs(replaced["cat"] / (replaced["cat"] + replaced["dog"]) - 4 / 6) < 0.04


def test_ngram_mode_gives_contiguous_spans() -> None:
    words = LONG.split()
    aug = toy(A.AugmentConfig(p_mask=0.0, p_pos=0.0, p_ng=1.0, n_iter=50)).fit([LONG])
    rng = np.random.default_rng(2)
    lengths = Counter()
    for _ in range(500):
        out = aug.synthesize(words, [""] * len(words), rng)
        n = len(out)
        assert 1 <= n <= 5
        start = words.index(out[0])
        assert words[start : start + n] == out
        lengths[n] += 1
    assert set(lengths) == {1, 2, 3, 4, 5}
    # through the public API, every augmented copy is such a span
    for (copy,) in aug.augment(LONG, 0)[1:]:
        assert f" {copy} " in f" {LONG} " and 1 <= len(copy.split()) <= 5
    # with p_ng = 0.25 about a quarter of the copies are shortened
    aug = toy(A.AugmentConfig(p_mask=0.0, p_pos=0.0, p_ng=0.25)).fit([LONG])
    short = sum(len(aug.synthesize(words, [""] * 15, rng)) < 15 for _ in range(4000))
    assert abs(short / 4000 - 0.25) < 0.025


def test_cache_hit_returns_identical_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"analyzer": toy_analyzer, "joiner": " ", "analyzer_id": "toy"}
    cfg = A.AugmentConfig(n_iter=8)
    first = A.augment_examples(ROWS, config=cfg, cache_dir=tmp_path, **kwargs)
    files = sorted(tmp_path.glob("augment-*.jsonl"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))  # renamed into place
    header = json.loads(files[0].read_text(encoding="utf-8").splitlines()[0])
    assert header["rows_out"] == len(first) and header["rows_in"] == len(ROWS)

    def no_work(*args, **kwargs):
        raise AssertionError("cache was not used")

    with monkeypatch.context() as m:
        m.setattr(A.Augmenter, "fit_analyzed", no_work)
        again = A.augment_examples(ROWS, config=cfg, cache_dir=tmp_path, **kwargs)
    assert again == first
    # other parameters or other rows -> another cache entry
    A.augment_examples(ROWS, config=A.AugmentConfig(n_iter=9), cache_dir=tmp_path, **kwargs)
    A.augment_examples(ROWS[:-1], config=cfg, cache_dir=tmp_path, **kwargs)
    assert len(list(tmp_path.glob("augment-*.jsonl"))) == 3


@pytest.mark.parametrize("damage", ["cut_mid_line", "cut_at_line", "garbage", "empty"])
def test_broken_cache_is_a_miss_rebuilt_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    kwargs = {"analyzer": toy_analyzer, "joiner": " ", "analyzer_id": "toy"}
    cfg = A.AugmentConfig(n_iter=8)
    first = A.augment_examples(ROWS, config=cfg, cache_dir=tmp_path, **kwargs)
    (path,) = tmp_path.glob("augment-*.jsonl")
    good = path.read_bytes()
    lines = good.splitlines(keepends=True)
    broken = {
        "cut_mid_line": good[: len(good) - 7],  # a torn write
        "cut_at_line": b"".join(lines[:-2]),  # whole rows missing: every line still parses
        "garbage": b"\xff\xfe not json\n",
        "empty": b"",
    }[damage]
    path.write_bytes(broken)
    with caplog.at_level("WARNING", logger="spikebert.augment"):
        again = A.augment_examples(ROWS, config=cfg, cache_dir=tmp_path, **kwargs)
    assert again == first
    assert f"augmentation cache {path} is unreadable" in caplog.text and "rebuilding" in caplog.text
    assert path.read_bytes() == good  # rebuilt in place
    caplog.clear()
    with caplog.at_level("WARNING", logger="spikebert.augment"):
        assert A.augment_examples(ROWS, config=cfg, cache_dir=tmp_path, **kwargs) == first
    assert "unreadable" not in caplog.text


def test_pairs_and_dataset_wrapper() -> None:
    ds = datasets.Dataset.from_dict(
        {
            "text_a": ["the cat sat", "a dog ran"],
            "text_b": ["the movie was good", "this bird was bad"],
            "label": [0, 1],
        },
        features=datasets.Features(
            {
                "text_a": datasets.Value("string"),
                "text_b": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["no", "yes"]),
            }
        ),
    )
    out = A.augment_dataset(
        ds,
        text_fields=("text_a", "text_b"),
        config=A.AugmentConfig(p_mask=0.3, p_pos=0.3, n_iter=6),
        analyzer=toy_analyzer,
        joiner=" ",
    )
    assert out.features["label"].names == ["no", "yes"]
    assert out[0] == {**ds[0], "orig_index": 0, "aug_index": 0}
    assert len(out) > len(ds) and set(out["orig_index"]) == {0, 1}
    assert any(r["text_a"] != ds[r["orig_index"]]["text_a"] for r in out)
    assert any(r["text_b"] != ds[r["orig_index"]]["text_b"] for r in out)


def test_missing_optional_taggers_have_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "textblob", None)
    with pytest.raises(ImportError, match="pip install textblob"):
        A.Augmenter(A.AugmentConfig(language="en"))
    # without POS replacement English needs no tagger
    aug = A.Augmenter(A.AugmentConfig(language="en", p_pos=0.0))
    assert aug.analyzer("a  b c") == (["a", "b", "c"], ["", "", ""])
    monkeypatch.setitem(sys.modules, "jieba", None)
    monkeypatch.setitem(sys.modules, "jieba.posseg", None)
    with pytest.raises(ImportError, match="pip install jieba"):
        A.Augmenter(A.AugmentConfig(language="zh"))


def test_english_textblob_tagger() -> None:
    pytest.importorskip("textblob", reason="optional English tagger: pip install textblob")
    analyze, ident = A.english_analyzer()
    assert ident.startswith("whitespace+textblob-")
    words, tags = analyze("the movie was surprisingly good , but i can fish .")
    assert len(words) == len(tags) == 11
    assert tags[:5] == ["DT", "NN", "VBD", "RB", "JJ"] and tags[5] == ","
    if ident.endswith("-brill"):  # contextual rules: "can fish" -> MD VB
        assert tags[8:10] == ["MD", "VB"]
    texts = [
        "a stirring , funny and finally transporting re-imagining of beauty and the beast",
        "apparently reassembled from the cutting-room floor of any given daytime soap .",
        "the acting is bad and the plot is worse",
        "a good film with a great cast",
    ]
    rows = [{"text": t, "label": 1} for t in texts]
    cfg = A.AugmentConfig(p_mask=0.0, p_pos=1.0, p_ng=0.0, n_iter=3)
    aug = A.Augmenter(cfg).fit(texts)
    out = A.augment_examples(rows, config=cfg)
    copies = [r for r in out if r["aug_index"] > 0]
    assert len(copies) > len(rows)
    for r in copies:
        words, tags = analyze(texts[r["orig_index"]])
        new = r["text"].split()
        assert len(new) == len(words)
        for w, t, n in zip(words, tags, new, strict=True):
            assert n in aug.pos_dictionary[t]  # replaced within the same tag
            assert n != w or len(aug.pos_dictionary[t]) == 1  # p_pos = 1: always replaced


WAIMAI = [
    "很快，好吃，味道足，量大",
    "没有送水没有送水没有送水",
    "非常快，态度好。",
    "方便，快捷，味道可口，快递给力",
    "菜味道很棒！送餐很及时！",
    "送餐太慢了，等了两个小时，饭都凉了",
]


def test_chinese_jieba_on_waimai_lines() -> None:
    pytest.importorskip("jieba", reason="optional Chinese segmenter: pip install jieba")
    rows = [{"text": t, "label": int(i < 5)} for i, t in enumerate(WAIMAI)]
    cfg = A.AugmentConfig(language="zh", p_mask=0.2, p_pos=0.2, n_iter=8, seed=1)
    out = A.augment_examples(rows, config=cfg)
    assert out == A.augment_examples(rows, config=cfg)
    assert [r["text"] for r in out if r["aug_index"] == 0] == WAIMAI
    augmented = [r["text"] for r in out if r["aug_index"] > 0]
    assert len(augmented) > len(WAIMAI)
    assert any("[MASK]" in t for t in augmented)
    assert not any(" " in t for t in augmented)  # words joined without spaces
    aug = A.Augmenter(A.AugmentConfig(language="zh", p_mask=0, p_pos=1, p_ng=0)).fit(WAIMAI)
    analyze, ident = A.chinese_analyzer()
    assert ident.startswith("jieba-") and ident.endswith("-posseg")
    words, tags = analyze(WAIMAI[0])
    assert "".join(words) == WAIMAI[0] and len(tags) == len(words)
    # POS replacement alone: same segments, each replaced by a word of the same tag
    rng = np.random.default_rng(0)
    for _ in range(20):
        new = aug.synthesize(words, tags, rng)
        assert all(n in aug.pos_dictionary[t] for n, t in zip(new, tags, strict=True))


def test_english_tagger_falls_back_to_public_textblob_api(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("textblob", reason="optional English tagger: pip install textblob")
    from textblob import _text

    original = _text.find_tags

    def changed_signature(tokens, **kwargs):  # as if a release dropped the rule arguments
        if "context" in kwargs:
            raise TypeError("find_tags() got an unexpected keyword argument 'context'")
        return original(tokens, **kwargs)

    monkeypatch.setattr(_text, "find_tags", changed_signature)
    analyze, ident = A.english_analyzer()
    assert ident.endswith("-lexicon")
    assert analyze("the movie was good") == (
        ["the", "movie", "was", "good"],
        ["DT", "NN", "VBD", "JJ"],
    )
