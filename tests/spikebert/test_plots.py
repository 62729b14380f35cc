"""The figures of spikebert.plots are written as non-empty PNG files."""

from __future__ import annotations

import pytest
import torch

from spikebert import SpikeBertConfig, SpikeBertForSequenceClassification
from spikebert.plots import (
    collect_firing_rates,
    plot_attention_map,
    plot_firing_rates,
    plot_sentence_attention,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = SpikeBertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64, time_steps=2,
                             max_position_embeddings=12, attention_threshold=0.25,
                             attention_scale=0.5, v_threshold=0.5, backend="torch")
    return SpikeBertForSequenceClassification(config).eval()


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_firing_rate_plot(model, tmp_path):
    ids = torch.randint(1, 20, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    rates = collect_firing_rates(model, [dict(input_ids=ids, attention_mask=mask)] * 2)
    assert len(rates) == 15 and all(0 <= r <= 1 for r in rates.values())
    assert _is_png(plot_firing_rates(rates, tmp_path / "sub" / "rates.png"))
    with pytest.raises(ValueError, match="no firing rates"):
        plot_firing_rates({}, tmp_path / "empty.png")


def test_attention_map_plot(model, tmp_path):
    out = model(torch.randint(1, 20, (1, 5)), output_attentions=True)
    amap = out.attentions[-1]
    tokens = ["[CLS]", "a", "fine", "film", "[SEP]"]
    assert _is_png(plot_attention_map(amap[0], tokens, tmp_path / "a.png"))
    assert _is_png(plot_attention_map(amap[0], tokens[:3], tmp_path / "b.png",
                                      head=1))
    with pytest.raises(ValueError, match="tokens"):
        plot_attention_map(amap[0], tokens * 2, tmp_path / "c.png")


def test_sentence_attention_plot(model, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "gripping", "funny", "movie"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    path = plot_sentence_attention(model, fast, "a gripping funny movie", tmp_path / "s.png")
    assert _is_png(path)
