"""Fixtures for the recipe tests: tiny random teachers (no download) and data slices."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "recipes"))

# a tiny student: every recipe test passes these overrides
TINY_STUDENT = ["hidden_size=32", "num_hidden_layers=2", "num_attention_heads=2",
                "intermediate_size=64", "time_steps=2", "max_position_embeddings=32"]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state(monkeypatch):
    """Each recipe run in this process starts from a fresh Accelerate singleton state."""
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def english_tokenizer():
    """The packaged MiniLM's WordPiece tokenizer (offline, 30522 tokens)."""
    from transformers import AutoTokenizer

    from spikebert.loading import packaged_minilm_path

    return AutoTokenizer.from_pretrained(packaged_minilm_path())


def chinese_tokenizer(folder: Path):
    """A character-level BERT tokenizer over the Waimai slice's characters."""
    import json

    from transformers import BertTokenizerFast

    chars = sorted({c for line in (FIXTURES / "waimai" / "all.jsonl").open(encoding="utf-8")
                    for c in json.loads(line)["text"] if not c.isspace()})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(specials + chars) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), tokenize_chinese_chars=True)


def save_tiny_bert(folder: Path, tokenizer, num_labels: int | None = None) -> Path:
    """A randomly initialised 2-layer, 32-wide BERT (and its tokenizer) saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    if num_labels is None:
        model = BertModel(config)
    else:
        config.num_labels = num_labels
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("teacher"), english_tokenizer())


@pytest.fixture(scope="session")
def tiny_classifier_teacher(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("cls-teacher"), english_tokenizer(), 2)


@pytest.fixture(scope="session")
def tiny_chinese_teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zh-teacher")
    return save_tiny_bert(folder, chinese_tokenizer(folder / "vocab"), 2)
