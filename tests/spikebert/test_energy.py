"""Energy counting (spikebert.energy) against a tiny example computed by hand.

The student's LayerNorm weights are zeroed, so each LayerNorm outputs its bias: +3 makes a
LIF (tau 2, threshold 1) fire at every step, -3 never. Every firing pattern, and so every
count, follows by hand from the embedding signs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from spikebert import SpikeBertConfig, SpikeBertForSequenceClassification
from spikebert.energy import (
    E_AC_PJ,
    E_MAC_PJ,
    compare,
    format_table,
    format_table2,
    measure_student,
    measure_teacher,
)


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


# two sentences: [1, 2, 2] and [2, 1] + one pad; real lengths 3 and 2
IDS = torch.tensor([[1, 2, 2], [2, 1, 0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
BATCHES = [dict(input_ids=IDS, attention_mask=MASK, labels=torch.tensor([0, 1]))]


def hand_model() -> SpikeBertForSequenceClassification:
    config = SpikeBertConfig(
        vocab_size=4, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=8, time_steps=2, max_position_embeddings=4, type_vocab_size=0,
        position_embedding_type="none", attention_scale=1.0, num_labels=2, backend="torch")
    torch.manual_seed(0)
    model = SpikeBertForSequenceClassification(config).eval()
    with torch.no_grad():
        # Heaviside(embedding): token 1 -> [1, 1, 0, 0], token 2 -> [1, 1, 1, 1]
        model.spikebert.embeddings.word_embeddings.weight.copy_(torch.tensor(
            [[-1.0] * 4, [1.0, 1.0, -1.0, -1.0], [1.0] * 4, [-1.0] * 4]))
        block = model.spikebert.encoder.layer[0]
        block.attention.qkv.norm.weight.zero_()  # Q, K and V fire everywhere
        block.attention.qkv.norm.bias.fill_(3.0)
        for name, bias in (("output", 3.0),):
            norm = getattr(block.attention, name).norm
            norm.weight.zero_()
            norm.bias.fill_(bias)
        for name, bias in (("fc1", 3.0), ("fc2", -3.0)):
            norm = getattr(block.mlp, name).norm
            norm.weight.zero_()
            norm.bias.fill_(bias)
    return model


def test_student_counts_match_the_hand_computation():
    cost = measure_student(hand_model(), BATCHES)
    layers = {c.name: c for c in cost.layers}
    # per sample (2 samples, 5 real tokens, T=2, D=4, H=2, Dh=2, intermediate 8)
    # input spikes summed over real tokens and steps: (2 + 4 + 4 + 4 + 2) * 2 = 32
    expected = {
        "embeddings": ("MAC", 10, None, 10),  # 5 tokens x D x 1 table / 2
        # Q, K and V in one Linear: 32 x (3 x 4) out / 2
        "layer.0.attention.qkv.linear": ("AC", 120, 0.8, 192),
        # all-ones Q, K: per step, head and dim n x n coincidences: (9 + 4) * 2 * 2 * 2 / 2
        "layer.0.attention.qk": ("AC", 26, 1.0, 52),  # FLOPs (9 + 4) * D / 2
        "layer.0.attention.av": ("AC", 26, 1.0, 52),  # V spikes n * D * T times n queries
        # attention fires everywhere: Y = n * Dh >= 0.5 at both steps
        "layer.0.attention.output.linear": ("AC", 40, 1.0, 80),
        # residual: x + 1 (the output LIF fires), sum 32 + 40 = 72, x 8 out / 2
        "layer.0.mlp.fc1.linear": ("AC", 80, 1.8, 288),
        "layer.0.mlp.fc2.linear": ("AC", 80, 1.0, 160),  # 8 spikes per token and step
        "classifier": ("MAC", 8, None, 16),  # B x D x 2 per step / 2, at T=2 steps
    }
    assert list(layers) == list(expected)
    for name, (kind, flops, rate, ops) in expected.items():
        c = layers[name]
        assert (c.kind, c.flops, c.ops) == (kind, flops, ops), name
        assert c.rate == pytest.approx(rate) if rate is not None else c.rate is None, name
        pj = E_AC_PJ if kind == "AC" else E_MAC_PJ
        assert c.energy_mj == pytest.approx(ops * pj * 1e-9), name
    assert cost.ops == 824 + 26
    assert cost.energy_mj == pytest.approx((824 * 0.9 + 26 * 4.6) * 1e-9)
    assert cost.num_samples == 2


def hand_teacher() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=4, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=8, max_position_embeddings=4, num_labels=2)
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("lengths, macs", [
    # linears 4 x 16 + 2 x 32 per token; attention 2 x sum(n^2) x D; embeddings 3 tables;
    # pooler B x 16; classifier B x 8
    ("real", (5 * 128 + 2 * 13 * 4 + 5 * 4 * 3 + 32 + 16) / 2),
    ("padded", (6 * 128 + 2 * 18 * 4 + 6 * 4 * 3 + 32 + 16) / 2),
])
def test_teacher_counts_match_the_hand_computation(lengths, macs):
    cost = measure_teacher(hand_teacher(), BATCHES, lengths)
    assert all(c.kind == "MAC" for c in cost.layers)
    assert cost.ops == macs
    assert cost.energy_mj == pytest.approx(macs * 4.6e-9)


def test_padded_lengths_charge_the_pads():
    real = measure_student(hand_model(), BATCHES, "real")
    padded = measure_student(hand_model(), BATCHES, "padded")
    assert padded.ops > real.ops
    with pytest.raises(ValueError, match="lengths"):
        measure_student(hand_model(), BATCHES, "longest")


def test_report_and_tables():
    report = compare(hand_model(), hand_teacher(), BATCHES)
    assert report.ratio == pytest.approx(report.student.energy_mj / report.teacher.energy_mj)
    assert report.reduction == pytest.approx(1 - report.ratio)
    table = format_table(report)
    assert "layer.0.attention.qk" in table and "total teacher" in table
    row = format_table2(report, "toy")
    assert "| toy | SpikeBERT |" in row and "| toy | FT BERT |" in row


def test_real_valued_inputs_are_charged_as_macs():
    model = hand_model()
    # a non-spike input to a layer makes it an ANN layer
    model.spikebert.encoder.layer[0].attention.qkv.register_forward_pre_hook(
        lambda m, args: (args[0] * 0.5,))
    layers = {c.name: c for c in measure_student(model, BATCHES).layers}
    q = layers["layer.0.attention.qkv.linear"]
    assert q.kind == "MAC" and q.ops == 2 * q.flops and q.rate is None


def test_linear_hooks_are_removed():
    model = hand_model()
    measure_student(model, BATCHES)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()
                   if isinstance(m, nn.Module))
