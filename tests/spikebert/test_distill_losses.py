"""The distillation loss terms against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spikebert.distill import (
    FeatureAligner,
    batch_standardize,
    layer_map,
    logits_kl,
    masked_mse,
    prediction_losses,
)


def test_masked_mse_counts_real_tokens_only():
    a = torch.tensor([[[1.0, 3.0], [5.0, 5.0]]])  # [B=1, L=2, D=2]
    b = torch.zeros(1, 2, 2)
    mask = torch.tensor([[1, 0]])
    assert masked_mse(a, b, mask).item() == pytest.approx((1 + 9) / 2)
    assert masked_mse(a, b, None).item() == pytest.approx((1 + 9 + 25 + 25) / 4)


def test_batch_standardize_uses_real_tokens():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    y = batch_standardize(x, mask, eps=0.0)
    assert y[0, :2, 0].tolist() == pytest.approx([-1.0, 1.0])


def test_layer_map_follows_the_paper():
    assert layer_map(4, 12) == [(0, 3), (1, 6), (2, 9), (3, 12)]
    assert layer_map(4, 6, ignored=1) == [(1, 3), (2, 4), (3, 6)]
    with pytest.raises(ValueError, match="ignored_layers"):
        layer_map(2, 6, ignored=2)


def test_kl_matches_hand_computation():
    zs, zt = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    ps = torch.softmax(zs, -1)[0]
    pt = torch.softmax(zt, -1)[0]
    expected = sum(pt[i] * math.log(pt[i] / ps[i]) for i in range(2))
    assert logits_kl(zs, zt).item() == pytest.approx(float(expected), rel=1e-6)
    # temperature: tau^2 * KL of the softened distributions
    ps2, pt2 = torch.softmax(zs / 2, -1)[0], torch.softmax(zt / 2, -1)[0]
    expected2 = 4 * sum(pt2[i] * math.log(pt2[i] / ps2[i]) for i in range(2))
    assert logits_kl(zs, zt, 2.0).item() == pytest.approx(float(expected2), rel=1e-6)
    assert logits_kl(zt, zt).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="temperature"):
        logits_kl(zs, zt, 0.0)


def test_feature_loss_is_the_sum_of_aligned_blocks():
    torch.manual_seed(0)
    aligner = FeatureAligner(student_dim=3, teacher_dim=4, num_student_layers=2)
    feats = [torch.randn(2, 5, 3) for _ in range(2)]
    hidden = [torch.randn(2, 5, 4) for _ in range(5)]  # embeddings + 4 teacher layers
    mask = torch.ones(2, 5)
    total, terms = aligner.feature_loss(feats, hidden, mask, normalize=False)
    by_hand = [masked_mse(aligner.block_maps[str(i)](feats[i]), hidden[j], mask)
               for i, j in ((0, 2), (1, 4))]
    assert total.item() == pytest.approx(sum(t.item() for t in by_hand), rel=1e-6)
    assert [t.item() for t in terms] == pytest.approx([t.item() for t in by_hand])
    emb = aligner.embedding_loss(torch.randn(2, 5, 3), hidden[0], mask)
    assert emb.item() > 0


def test_alignment_runs_in_fp32_under_bf16_autocast():
    """The maps and losses ignore autocast: bf16 inputs (bf16 student, bf16 teacher) give the
    fp32 computation on the same values, gradients included."""
    torch.manual_seed(0)
    aligner = FeatureAligner(student_dim=16, teacher_dim=24, num_student_layers=2)
    feats = [torch.randn(3, 7, 16).bfloat16().requires_grad_() for _ in range(2)]
    hidden = [torch.randn(3, 7, 24).bfloat16() for _ in range(3)]
    mask = torch.ones(3, 7)
    mask[0, 5:] = 0

    def losses(autocast: bool):
        aligner.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            total, _ = aligner.feature_loss(feats, hidden, mask)
            total = total + aligner.embedding_loss(feats[0], hidden[0], mask)
        total.backward()
        return total, [p.grad.clone() for p in aligner.parameters()]

    plain, plain_grads = losses(False)
    cast, cast_grads = losses(True)
    assert cast.dtype == torch.float32
    assert torch.equal(cast, plain)
    for a, b in zip(cast_grads, plain_grads, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("regression", [False, True])
def test_prediction_losses_run_in_fp32_under_bf16_autocast(regression):
    """Bf16 student logits under autocast: the label and teacher terms are computed on the
    fp32 teacher logits as in fp32, not on a bf16 rounding of them, gradients included."""
    torch.manual_seed(0)
    classes = 1 if regression else 3
    teacher = torch.randn(6, classes) * 4  # bf16 would round these by up to 1/64
    labels = torch.randn(6) if regression else torch.randint(0, classes, (6,))

    def run(autocast: bool):
        logits = (torch.randn(6, classes, generator=torch.Generator().manual_seed(1)) * 4)
        logits = logits.bfloat16().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            ce, kl = prediction_losses(logits, teacher, labels, 2.0, regression)
        (ce + kl).backward()
        return ce, kl, logits.grad

    cast, plain = run(True), run(False)
    assert cast[0].dtype == cast[1].dtype == torch.float32
    for a, b in zip(cast, plain, strict=True):
        assert torch.equal(a, b)
    _, kl, _ = cast
    logits = (torch.randn(6, classes, generator=torch.Generator().manual_seed(1)) * 4)
    logits = logits.bfloat16().float()
    expected = (F.mse_loss(logits, teacher) if regression
                else logits_kl(logits, teacher, 2.0))
    assert torch.equal(kl, expected)  # against the fp32 teacher, not its bf16 rounding
