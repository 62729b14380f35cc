"""Tests for spikebert.data: task registry, loading, splits, encoding, metrics and corpora.

Everything runs on tiny files written to tmp_path, tests/fixtures or the bundled samples with
the Hub switched off; a few tests also read the real shared/data folder next to the repository
and are skipped when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from spikebert import data as D

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "sst2" / "train.jsonl").is_file(),
    reason=f"shared data folder not found at {SHARED_DATA} (only present next to the work tree)",
)

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "a", "cat", "dog", "sat", "on", "mat", "is", "good", "bad", "movie", "it", ".", ",",
    "##s", "very", "not",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _hub_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the Hub: offline flags set, no SPIKEBERT_DATA leaking in."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tok")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(folder))
    assert len(tok) == len(VOCAB)  # the vocab file was really used
    return tok


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def grouped_rows(n0: int, n1: int) -> list[dict]:
    """Rows grouped by label, as in the shipped all.jsonl files."""
    return [{"text": f"neg {i}", "label": 0} for i in range(n0)] + [
        {"text": f"pos {i}", "label": 1} for i in range(n1)
    ]


# ------------------------------------------------------------------------------ registry


def test_registry_and_aliases() -> None:
    assert {"mr", "sst2", "sst5", "subj", "chnsenti", "waimai"} <= D.TASKS.keys()
    assert {"cola", "mnli", "mrpc", "qnli", "qqp", "rte", "stsb", "wnli", "glue_sst2"} <= set(
        D.TASKS
    )
    assert D.get_task("glue/cola").name == "cola"
    assert D.get_task("GLUE-SST2").name == "glue_sst2"
    assert D.get_task("SST-2").name == "sst2"
    assert D.get_task("sts-b").name == "stsb"
    stsb = D.get_task("stsb")
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.is_pair
    assert stsb.metrics == ("pearson", "spearmanr")
    assert "f1" in D.get_task("mrpc").metrics and "f1" in D.get_task("qqp").metrics
    assert D.get_task("cola").primary_metric == "matthews_correlation"
    assert D.get_task("waimai").language == "zh" and D.get_task("mr").language == "en"
    assert D.get_task("mnli").num_labels == 3 and D.get_task("sst5").num_labels == 5
    assert D.get_task("cola").hub_path == "nyu-mll/glue"


def test_unknown_task_lists_known_tasks() -> None:
    with pytest.raises(ValueError, match="unknown task 'imdb'") as e:
        D.get_task("imdb")
    assert "sst2" in str(e.value) and "waimai" in str(e.value) and "stsb" in str(e.value)
    with pytest.raises(ValueError, match="known tasks"):
        D.load_task("imdb", allow_hub=False)


# ------------------------------------------------------------------------------ splits


def test_stratified_split_is_stable_stratified_and_a_partition() -> None:
    labels = np.array([0] * 700 + [1] * 200 + [2] * 100)
    a = D.stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    b = D.stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    c = D.stratified_split(labels, (0.8, 0.1, 0.1), seed=4)
    for k in ("train", "dev", "test"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["dev"], c["dev"])
    every = np.concatenate([a["train"], a["dev"], a["test"]])
    assert sorted(every.tolist()) == list(range(len(labels)))  # disjoint and complete
    assert (len(a["train"]), len(a["dev"]), len(a["test"])) == (800, 100, 100)
    for k in ("dev", "test"):  # exact class proportions 70/20/10
        assert np.bincount(labels[a[k]]).tolist() == [70, 20, 10]
    # splits are shuffled, not grouped by class
    assert len(set(labels[a["train"][:50]].tolist())) > 1


def test_bad_split_ratios() -> None:
    with pytest.raises(ValueError, match="split_ratios"):
        D.stratified_split([0, 1], (0.5, 0.6, 0.1))
    with pytest.raises(ValueError, match="non-zero"):
        D.stratified_split([0, 1], (1.0, 0.0))


def test_all_file_gets_seeded_stratified_split(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "mr" / "all.jsonl", grouped_rows(60, 140))
    dd, info = D.load_task("mr", data_dir=tmp_path, seed=7, allow_hub=False)
    dd2, _ = D.load_task("mr", data_dir=tmp_path, seed=7, allow_hub=False)
    dd3, _ = D.load_task("mr", data_dir=tmp_path, seed=8, allow_hub=False)
    assert set(dd) == {"train", "dev", "test"}
    for k in dd:
        assert dd[k]["text"] == dd2[k]["text"]
    assert dd["dev"]["text"] != dd3["dev"]["text"]
    assert info["split_sizes"] == {"train": 160, "dev": 20, "test": 20}
    assert info["label_counts"] == {"train": [48, 112], "dev": [6, 14], "test": [6, 14]}
    assert info["seed"] == 7 and info["split_ratios"] == [0.8, 0.1, 0.1]
    assert info["split_by"] == "seeded_stratified" and info["source"] == "data_dir"
    assert info["paths"] == {"all": str((tmp_path / "mr" / "all.jsonl").resolve())}
    assert len(info["sha256"]["all"]) == 64
    json.dumps(info)  # recipes save it with every run
    texts = [t for k in dd for t in dd[k]["text"]]
    assert sorted(texts) == sorted(r["text"] for r in grouped_rows(60, 140))
    # custom ratios, two-way split
    dd4, info4 = D.load_task(
        "mr", data_dir=tmp_path, split_ratios=(0.9, 0.1), seed=7, allow_hub=False
    )
    assert set(dd4) == {"train", "dev"} and info4["split_sizes"] == {"train": 180, "dev": 20}


def test_data_dir_from_env_and_task_folder_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "sst5" / "train.jsonl", [{"text": "x", "label": 4}] * 3)
    write_jsonl(tmp_path / "sst5" / "dev.jsonl", [{"text": "y", "label": 0}] * 2)
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path))
    dd, info = D.load_task("sst5", allow_hub=False)
    assert info["split_by"] == "given" and info["split_ratios"] is None
    assert info["split_sizes"] == {"train": 3, "dev": 2}
    assert dd["train"]["label"] == [4, 4, 4]
    # data_dir may also point straight at the task folder
    dd2, _ = D.load_task("sst5", data_dir=tmp_path / "sst5", allow_hub=False)
    assert dd2["dev"]["text"] == ["y", "y"]


def test_explicit_files_jsonl_csv_tsv_and_pairs(tmp_path: Path) -> None:
    # CSV with the original ChnSenti/Waimai header (label,review); quoted comma in a review
    train_csv = tmp_path / "train.csv"
    train_csv.write_text('label,review\n1,"很好, 很快"\n0,太慢了\n', encoding="utf-8")
    dev_tsv = tmp_path / "dev.tsv"
    dev_tsv.write_text("text\tlabel\n不错\tpositive\n", encoding="utf-8")
    dd, info = D.load_task(
        "waimai", files={"train": train_csv, "validation": dev_tsv}, allow_hub=False
    )
    assert info["source"] == "files" and set(info["paths"]) == {"train", "dev"}
    assert dd["train"]["text"] == ["很好, 很快", "太慢了"] and dd["train"]["label"] == [1, 0]
    assert dd["dev"]["label"] == [1]  # label given by name

    # pair task in GLUE's own column names (TSV) and in our canonical names (JSONL)
    rte_tsv = tmp_path / "rte.tsv"
    rte_tsv.write_text(
        "index\tsentence1\tsentence2\tlabel\n0\tA cat sat.\tA cat is sitting.\tentailment\n"
        '1\tIt rains "a lot".\tIt is dry.\tnot_entailment\n'
    )
    rte_jsonl = write_jsonl(
        tmp_path / "rte_dev.jsonl", [{"text_a": "p", "text_b": "h", "label": 1}]
    )
    dd, _ = D.load_task("rte", files={"train": rte_tsv, "dev": rte_jsonl}, allow_hub=False)
    assert dd["train"].column_names == ["text_a", "text_b", "label"]
    assert dd["train"]["text_b"] == ["A cat is sitting.", "It is dry."]
    assert dd["train"]["text_a"][1] == 'It rains "a lot".'  # TSV: quotes kept verbatim
    assert dd["train"]["label"] == [0, 1] and dd["dev"]["text_a"] == ["p"]

    # regression labels stay floats; an "all" file is split by seed
    stsb = write_jsonl(
        tmp_path / "stsb.jsonl",
        [{"sentence1": f"a{i}", "sentence2": f"b{i}", "score": i / 4} for i in range(20)],
    )
    dd, info = D.load_task("stsb", files={"all": stsb}, allow_hub=False)
    assert info["split_by"] == "seeded_random" and sum(info["split_sizes"].values()) == 20
    assert all(isinstance(y, float) for y in dd["train"]["label"])


def test_explicit_files_errors(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 0}])
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        D.load_task("sst2", files={"train": good, "dev": tmp_path / "nope.jsonl"})
    with pytest.raises(ValueError, match="train and dev"):
        D.load_task("sst2", files={"train": good})
    with pytest.raises(ValueError, match="unknown split"):
        D.load_task("sst2", files={"train": good, "dev": good, "eval": good})


def test_missing_fields_name_file_line_and_field(tmp_path: Path) -> None:
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"text": "c"}],
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: missing field 'label'"):
        D.load_task("sst2", files={"train": bad, "dev": bad})

    no_text = write_jsonl(tmp_path / "no_text.jsonl", [{"sentence": "a", "label": 0}, {"label": 1}])
    with pytest.raises(ValueError, match=r"no_text\.jsonl:2: missing field 'sentence'"):
        D.load_task("sst2", files={"train": no_text, "dev": no_text})

    pair = write_jsonl(tmp_path / "pair.jsonl", [{"text_a": "a", "label": 0}])
    with pytest.raises(ValueError, match=r"pair\.jsonl: no text column.*text_a\+text_b"):
        D.load_task("mrpc", files={"train": pair, "dev": pair})

    tsv = tmp_path / "short.tsv"
    tsv.write_text("text\tlabel\nfine\t1\nno label here\n")
    with pytest.raises(ValueError, match=r"short\.tsv:3: missing field 'label'"):
        D.load_task("sst2", files={"train": tsv, "dev": tsv})

    out_of_range = write_jsonl(tmp_path / "oor.jsonl", [{"text": "a", "label": 2}])
    with pytest.raises(ValueError, match=r"oor\.jsonl:1: .*outside \[0, 2\)"):
        D.load_task("sst2", files={"train": out_of_range, "dev": out_of_range})


def test_nothing_found_names_every_place_tried(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        D.load_task("cola", data_dir=tmp_path)
    msg = str(e.value)
    assert "explicit files: none given" in msg
    assert str(tmp_path / "cola") in msg and str(tmp_path / "CoLA") in msg
    assert "nyu-mll/glue" in msg and "HF_HUB_OFFLINE is set" in msg
    assert "--data_dir" in msg and D.DATA_ENV_VAR in msg and "--train_file" in msg

    with pytest.raises(FileNotFoundError) as e:
        D.load_task("waimai", allow_hub=False)
    msg = str(e.value)
    assert f"${D.DATA_ENV_VAR} is not set" in msg
    assert "no Hub dataset is configured for 'waimai'" in msg
    assert "waimai/ holds all.jsonl" in msg


def test_hub_is_skipped_offline_and_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("the Hub must not be contacted")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        D.load_task("sst5")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    with pytest.raises(FileNotFoundError, match=r"allow_hub=False"):
        D.load_task("sst5", allow_hub=False)
    # a failing Hub call is reported, not raised
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: 1 / 0)
    with pytest.raises(FileNotFoundError, match=r"failed \(ZeroDivisionError"):
        D.load_task("sst5")


def test_hub_rows_are_canonicalised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub path with a fake load_dataset: label names win over the Hub's numbering."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    calls = []

    def fake_load(path, config=None, **kwargs):
        calls.append((path, config))
        n = 20
        # this fake Hub copy numbers the classes the other way round
        split = {
            "text": [f"s{i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "label_text": ["objective" if i % 2 == 0 else "subjective" for i in range(n)],
        }
        return datasets.DatasetDict(
            {"train": datasets.Dataset.from_dict(split), "test": datasets.Dataset.from_dict(split)}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dd, info = D.load_task("subj", seed=1)
    assert calls == [("SetFit/subj", None)]
    assert info["source"] == "hub" and info["split_by"].startswith("seeded_stratified")
    assert sum(info["split_sizes"].values()) == 40
    for k in dd:  # ours: 0 = subjective, 1 = objective
        for text, y in zip(dd[k]["text"], dd[k]["label"], strict=True):
            assert y == (1 if int(text[1:]) % 2 == 0 else 0)


@needs_shared
def test_load_sst2_and_waimai_from_shared_data() -> None:
    dd, info = D.load_task("sst2", data_dir=SHARED_DATA, allow_hub=False)
    assert set(dd) == {"train", "dev"}  # test split withheld
    assert info["split_sizes"] == {"train": 6920, "dev": 872}
    assert info["label_counts"] == {"train": [3310, 3610], "dev": [428, 444]}
    assert dd["train"][0]["text"].startswith("a stirring , funny")

    dd, info = D.load_task("waimai", data_dir=SHARED_DATA, allow_hub=False)
    assert sum(info["split_sizes"].values()) == 11987
    counts = np.array([info["label_counts"][k] for k in ("train", "dev", "test")], dtype=float)
    fractions = counts[:, 1] / counts.sum(1)  # 4000 / 11987 positives in every split
    np.testing.assert_allclose(fractions, 4000 / 11987, atol=2e-3)
    # the original CSV (same rows, same order) given as --all_file splits identically
    raw, raw_info = D.load_task(
        "waimai", files={"all": SHARED_DATA / "waimai" / "waimai_10k.csv"}, allow_hub=False
    )
    assert raw_info["source"] == "files" and raw_info["label_counts"] == info["label_counts"]
    assert [t.strip() for t in raw["dev"]["text"]] == list(dd["dev"]["text"])


# ------------------------------------------------------------------------------ tokenisation


def test_encode_pairs_and_single(tokenizer) -> None:
    spec = D.get_task("rte")
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"text_a": ["the cat sat", "a dog"], "text_b": ["on the mat", "is bad"],
                 "label": [0, 1]}
            )
        }
    )  # fmt: skip
    out = D.encode(dd, tokenizer, 12, spec)
    row = out["train"][0]
    assert set(out["train"].column_names) == {
        "input_ids", "attention_mask", "token_type_ids", "labels"
    }  # fmt: skip
    assert row["input_ids"].shape == (12,) and isinstance(row["labels"], torch.Tensor)
    ids = tokenizer.convert_tokens_to_ids
    expected = ids(["[CLS]", "the", "cat", "sat", "[SEP]", "on", "the", "mat", "[SEP]"])
    assert row["input_ids"][:9].tolist() == expected
    assert row["token_type_ids"][:9].tolist() == [0] * 5 + [1] * 4
    assert row["attention_mask"].tolist() == [1] * 9 + [0] * 3
    assert out["train"][:]["labels"].tolist() == [0, 1]

    # a single Dataset, truncation, and a missing column named
    long = datasets.Dataset.from_dict({"text": ["the cat " * 20], "label": [1]})
    out = D.encode(long, tokenizer, 8, "sst2")
    assert isinstance(out, datasets.Dataset)
    assert out[0]["input_ids"].tolist()[-1] == tokenizer.sep_token_id  # truncated
    assert len(out[0]["input_ids"]) == 8
    with pytest.raises(ValueError, match=r"lacks columns \['text_a', 'text_b'\]"):
        D.encode(long, tokenizer, 8, "mrpc")


def test_encode_dynamic_padding_and_unlabelled(tokenizer) -> None:
    """padding=False + DataCollatorWithPadding pads per batch; no label column -> no labels."""
    from transformers import DataCollatorWithPadding

    ds = datasets.Dataset.from_dict({"text": ["the cat", "the cat sat on the mat"]})
    out = D.encode(ds, tokenizer, 16, "sst2", padding=False)
    assert "labels" not in out.column_names
    assert [len(r["input_ids"]) for r in out] == [4, 8]
    batch = DataCollatorWithPadding(tokenizer)([out[0], out[1]])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist()[0] == [1] * 4 + [0] * 4


def test_check_vocab_compatible(tokenizer) -> None:
    D.check_vocab_compatible(tokenizer, len(VOCAB))
    D.check_vocab_compatible(tokenizer, len(VOCAB) + 8)
    with pytest.raises(ValueError, match=rf"{len(VOCAB)} tokens.*vocab_size is 10"):
        D.check_vocab_compatible(tokenizer, 10)


def test_compute_metrics() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p = np.array([1, 1, 0, 0, 0, 1, 1, 0])  # tp 3, fn 1, fp 1, tn 3
    m = D.compute_metrics("mrpc", p, y)
    assert m == {"accuracy": 0.75, "f1": 0.75}
    logits = np.stack([1 - p, p], axis=1).astype(float)
    mcc = D.compute_metrics("cola", logits, y)["matthews_correlation"]
    assert mcc == pytest.approx((3 * 3 - 1 * 1) / np.sqrt(4 * 4 * 4 * 4))
    s = D.compute_metrics("stsb", [1.0, 2.0, 2.0, 5.0], [0.5, 1.0, 3.0, 2.0])
    assert s["pearson"] == pytest.approx(np.corrcoef([1, 2, 2, 5], [0.5, 1, 3, 2])[0, 1])
    # ranks with ties: x -> [1, 2.5, 2.5, 4], y -> [1, 2, 4, 3]
    assert s["spearmanr"] == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 4, 3])[0, 1])


def test_load_corpus_sources(tmp_path: Path) -> None:
    folder = tmp_path / "corpus_x"
    folder.mkdir()
    (folder / "b.txt").write_text("second file\n")
    (folder / "a.txt").write_text("the cat sat\n\n  on the mat  \n")
    (folder / "notes.md").write_text("ignored\n")
    c = D.load_corpus(folder)
    assert [p.name for p in c.files] == ["a.txt", "b.txt"]
    assert list(c.iter_texts()) == ["the cat sat", "on the mat", "second file"]
    assert D.load_corpus(folder / "a.txt").files == (folder / "a.txt",)
    assert D.load_corpus("corpus_x", data_dir=tmp_path).files == c.files
    with pytest.raises(FileNotFoundError) as e:
        D.load_corpus("corpus_zz", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "corpus_zz") in msg and "not one of" in msg and "--data_dir" in msg
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        D.load_corpus("wikitext")


@needs_shared
def test_load_shared_corpora() -> None:
    en = D.load_corpus("corpus_en", data_dir=SHARED_DATA)
    assert len(en.files) == 3 and en.name == "corpus_en"
    zh = D.load_corpus("corpus_zh", data_dir=SHARED_DATA)
    assert next(zh.iter_texts()).startswith("数学")


def test_pack_corpus_blocks_and_cache(tmp_path: Path, tokenizer) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    lines = ["the cat sat on the mat .", "it is a very good movie .", "the dog is not bad ,"] * 5
    (folder / "a.txt").write_text("\n".join(lines[:9]) + "\n")
    (folder / "b.txt").write_text("\n".join(lines[9:]) + "\n")
    corpus = D.load_corpus(folder)
    cache = tmp_path / "cache"

    packed = D.pack_corpus(corpus, tokenizer, seq_length=8, cache_dir=cache)
    stream = [i for line in lines for i in tokenizer(line, add_special_tokens=False)["input_ids"]]
    n = len(stream) // 6
    assert not packed.from_cache and len(packed) == n and packed.seq_length == 8
    blocks = np.asarray(packed.blocks)
    assert (blocks[:, 0] == tokenizer.cls_token_id).all()
    assert (blocks[:, -1] == tokenizer.sep_token_id).all()
    assert blocks[:, 1:-1].ravel().tolist() == stream[: n * 6]  # order kept, tail dropped
    item = packed[0]
    assert item["input_ids"].dtype == torch.long and item["attention_mask"].tolist() == [1] * 8
    assert item["token_type_ids"].tolist() == [0] * 8

    tokenizer("the cat", truncation=True, max_length=4, padding="max_length")  # per-call state
    again = D.pack_corpus(corpus, tokenizer, seq_length=8, cache_dir=cache)
    assert again.from_cache and again.cache_path == packed.cache_path
    np.testing.assert_array_equal(np.asarray(again.blocks), blocks)
    assert len(list(cache.glob("tokens-*.arrow"))) == 1

    # the cached tokens do not depend on the block length: another length reuses them
    other_len = D.pack_corpus(corpus, tokenizer, seq_length=10, cache_dir=cache)
    assert other_len.from_cache and other_len.cache_path == packed.cache_path
    assert np.asarray(other_len.blocks)[:, 1:-1].ravel().tolist() == stream[: len(other_len) * 8]

    (folder / "b.txt").write_text("the cat sat\n")  # content change -> new key
    os.utime(folder / "b.txt", ns=(1, 1))
    changed = D.pack_corpus(D.load_corpus(folder), tokenizer, seq_length=8, cache_dir=cache)
    assert not changed.from_cache and len(changed) < len(packed)

    capped = D.pack_corpus(lines, tokenizer, seq_length=8, max_blocks=3)
    assert len(capped) == 3 and capped.cache_path is None
    np.testing.assert_array_equal(np.asarray(capped.blocks), blocks[:3])


def test_split_holdout_is_deterministic_partition(tokenizer) -> None:
    packed = D.pack_corpus(["the cat sat on the mat ."] * 40, tokenizer, seq_length=5)
    train, held = packed.split_holdout(0.1, seed=3)
    train2, held2 = packed.split_holdout(0.1, seed=3)
    assert train2.indices.tolist() == train.indices.tolist()
    assert len(held) == round(0.1 * len(packed)) and len(train) + len(held) == len(packed)
    assert held.indices.tolist() == held2.indices.tolist()
    assert set(train.indices.tolist()).isdisjoint(held.indices.tolist())
    assert held[0]["input_ids"].tolist() == packed[int(held.indices[0])]["input_ids"].tolist()
    assert len(packed.split_holdout(0.001)[1]) == 1  # at least one held-out block
    with pytest.raises(ValueError):
        packed.split_holdout(1.0)


# ------------------------------------------------------------------------------ pinned splits

# SHA-256 of the seeded 80/10/10 splits of tests/fixtures/waimai/all.jsonl (rows in order, one
# json.dumps([text, label]) per line), computed with the hand-written reader this package
# replaced: the move to `datasets` must not change a single published split.
WAIMAI_FIXTURE_SPLITS = {
    42: {
        "train": "2908659cfec6a8bfad6f3d325a719114904b95eb1701bd033138369e948f092e",
        "dev": "111488830cabf40cc1e46865ec24840019b9bca92a3bb6246df4b4d83e20da59",
        "test": "fcaa0a305777fed90e1c447ae05124760111650c6c71e87a1a7b1c73dd99e936",
    },
    1: {
        "train": "01a22248e75ff31e7073a4fd87449d923feba86f3b4672809c97895e30cdf946",
        "dev": "dd8252236034170c267b6c337122636de85a67a61309c58de267ce6039bd3f1a",
        "test": "82f9b687b8b1db64fad461ab5d1fcf5b67428a545874460c44dae24017fefb34",
    },
}


@pytest.mark.parametrize("seed", sorted(WAIMAI_FIXTURE_SPLITS))
def test_seeded_splits_are_pinned(seed: int) -> None:
    path = FIXTURES / "waimai" / "all.jsonl"
    dd, info = D.load_task("waimai", files={"all": path}, seed=seed, allow_hub=False)
    assert info["split_sizes"] == {"train": 64, "dev": 8, "test": 8}
    assert info["split_sha256"] == WAIMAI_FIXTURE_SPLITS[seed]
    assert D.split_hashes(dd, "waimai") == WAIMAI_FIXTURE_SPLITS[seed]
    # the same rows from a data folder split identically
    dd2, _ = D.load_task("waimai", data_dir=FIXTURES, seed=seed, allow_hub=False)
    assert D.split_hashes(dd2, "waimai") == WAIMAI_FIXTURE_SPLITS[seed]


# ------------------------------------------------------------------------------ bad bytes


def test_non_utf8_task_file_names_file_and_line(tmp_path: Path) -> None:
    rows = b'{"text": "fine", "label": 0}\n\n{"text": "caf\xe9", "label": 1}\n'
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(rows)
    with pytest.raises(ValueError, match=r"latin1\.jsonl:3: not valid UTF-8 \(byte 0xe9"):
        D.load_task("sst2", files={"train": bad, "dev": bad})
    csv_bad = tmp_path / "latin1.csv"
    csv_bad.write_bytes(b"label,review\n1,ok\n0,\xff\xfe\n")
    with pytest.raises(ValueError, match=r"latin1\.csv:3: not valid UTF-8 \(byte 0xff"):
        D.read_task_file(csv_bad, "waimai")


def test_invalid_json_line_counts_blank_lines(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"text": "a", "label": 0}\n\n{"text": "b", label: 1}\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl:3: invalid JSON"):
        D.read_task_file(bad, "sst2")
    missing = tmp_path / "gap.jsonl"
    missing.write_text('{"text": "a", "label": 0}\n\n\n{"text": "b"}\n')
    with pytest.raises(ValueError, match=r"gap\.jsonl:4: missing field 'label'"):
        D.read_task_file(missing, "sst2")
    arrays = tmp_path / "arrays.jsonl"
    arrays.write_text('\n["a", 0]\n')
    with pytest.raises(ValueError, match=r"arrays\.jsonl:2: expected a JSON object per line"):
        D.read_task_file(arrays, "sst2")
    for name, content in (("empty.jsonl", "\n"), ("header_only.csv", "text,label\n")):
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}: no rows"):
            D.read_task_file(tmp_path / name, "sst2")


def test_non_utf8_corpus_names_file_and_line(tmp_path: Path, tokenizer) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("the cat sat\n")
    (folder / "b.txt").write_bytes(b"the dog\nis good\nthe \x93mat\x94\n")
    corpus = D.load_corpus(folder)
    with pytest.raises(ValueError, match=r"b\.txt:3: not valid UTF-8 \(byte 0x93 at column 5"):
        list(corpus.iter_texts())
    with pytest.raises(ValueError, match=r"b\.txt:3: not valid UTF-8"):
        D.pack_corpus(corpus, tokenizer, seq_length=8, cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------ bundled data


def test_bundled_sst2_is_used_when_nothing_else_is_given(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="spikebert.data"):
        dd, info = D.load_task("sst2")  # offline, no data_dir, no $SPIKEBERT_DATA
    assert info["source"] == "bundled"
    assert info["paths"]["train"] == str(D.SAMPLES_DIR / "sst2" / "train.jsonl")
    assert info["split_sizes"] == {"train": 6920, "dev": 872}
    assert info["label_counts"] == {"train": [3310, 3610], "dev": [428, 444]}
    assert dd["train"][0]["text"].startswith("a stirring , funny")
    assert "copy bundled with spikebert" in caplog.text and "sst2" in caplog.text
    # an explicit data folder that has the task wins over the bundled copy
    write_jsonl(tmp_path / "sst2" / "train.jsonl", [{"text": "x", "label": 1}])
    write_jsonl(tmp_path / "sst2" / "dev.jsonl", [{"text": "y", "label": 0}])
    _, info = D.load_task("sst2", data_dir=tmp_path)
    assert info["source"] == "data_dir" and info["split_sizes"] == {"train": 1, "dev": 1}


def test_bundled_corpus_sample(tokenizer) -> None:
    corpus = D.load_corpus("sample")
    assert corpus.name == "sample" and corpus.files[0].parent == D.SAMPLE_CORPUS
    lines = corpus.iter_texts()
    assert next(lines).startswith("Anarchism is a political philosophy")
    packed = D.pack_corpus(corpus, tokenizer, seq_length=16, max_blocks=4)
    assert len(packed) == 4 and (np.asarray(packed.blocks)[:, 0] == tokenizer.cls_token_id).all()
    with pytest.raises(FileNotFoundError, match="'sample' for the bundled English sample"):
        D.load_corpus("samples")


@needs_shared
def test_bundled_sst2_is_the_shared_copy() -> None:
    for split in ("train", "dev"):
        bundled = (D.SAMPLES_DIR / "sst2" / f"{split}.jsonl").read_bytes()
        assert bundled == (SHARED_DATA / "sst2" / f"{split}.jsonl").read_bytes()
