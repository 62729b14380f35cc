"""Distillation losses of SpikeBERT's two stages (docs/DESIGN.md §3).

Stage 1 (general distillation, unlabelled text)::

    L1 = w_emb * MSE(MLP(E_s), E_t) + w_feat * sum_i MSE(N(W_i F_s,i), N(H_t,m(i)))

Stage 2 (task distillation) adds the logits::

    L2 = w_emb * emb + w_ce * CE(z_s, y) + w_kl * tau^2 KL(softmax(z_t/tau) || softmax(z_s/tau))
         + w_feat * feat

``E`` are embedding outputs, ``F_s,i`` the i-th student block's output averaged over the T
time steps (a firing rate, which is the normalisation *across time steps*), ``W_i`` a
learned Linear+LayerNorm into the teacher's width, ``H_t,m(i)`` the teacher's hidden state
of the mapped layer ``m(i) = (i + 1) * L_teacher / L_student``, and ``N`` standardises every
feature dimension over the real tokens of the batch (zero mean, unit variance: the
normalisation *across the instances of a batch*). ``N`` makes the loss blind to the scale
mismatch between spike rates and BERT's hidden states, so the student matches the
teacher's pattern over tokens rather than its magnitude; the MSE is taken over real
(unpadded) tokens only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def student_forward(model, batch: dict) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """A SpikeBERT forward and its hidden states as transformers' BERT orders them:
    ``(embedding output, block 1 output averaged over T, ..., block N ...)``, each [B, L, D]."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=batch.get("token_type_ids"), output_hidden_states=True)
    return out, out.hidden_states


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the feature dim and the real tokens (``mask`` [B, L], 1 = real)."""
    err = (a - b).pow(2).mean(-1)
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def batch_standardize(
    x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """N(x): per feature, zero mean and unit variance over the batch's real tokens."""
    if mask is None:
        flat = x.reshape(-1, x.shape[-1])
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
    else:
        m = mask.to(x.dtype).unsqueeze(-1)
        count = m.sum().clamp_min(1.0)
        mean = (x * m).sum((0, 1)) / count
        var = ((x - mean).pow(2) * m).sum((0, 1)) / count
    return (x - mean) * torch.rsqrt(var + eps)


def full_precision(x: torch.Tensor):
    """Autocast off on ``x``'s device: the alignment maps and their losses run in fp32.

    Under bf16 autocast their Linears and hand-written MSEs would round predictions and
    targets to 8 significant bits. As the fit tightens, that rounding is a fixed error per
    token, so the embedding MLP's gradient error repeats from batch to batch instead of
    averaging out (seen on a stage-1 checkpoint). The maps are small; fp32 costs little."""
    return torch.autocast(x.device.type, enabled=False)


def layer_map(num_student: int, num_teacher: int, ignored: int = 0) -> list[tuple[int, int]]:
    """(student block, teacher hidden-state index) pairs; hidden state 0 is the embedding.

    Student block i (0-based) aligns to teacher layer ``(i + 1) * num_teacher // num_student``,
    skipping the first ``ignored`` student blocks.
    """
    if num_student <= 0 or num_teacher <= 0:
        raise ValueError(f"layer counts must be positive, got {num_student} and {num_teacher}")
    if not 0 <= ignored < num_student:
        raise ValueError(f"ignored_layers must be in [0, {num_student}), got {ignored}")
    return [(i, (i + 1) * num_teacher // num_student) for i in range(ignored, num_student)]


class FeatureAligner(nn.Module):
    """The learned maps of stage 1: an MLP for the embeddings, Linear+LayerNorm per block.

    Saved next to the student (``aligner.safetensors``) so stage 2 can reuse them.
    """

    def __init__(
        self, student_dim: int, teacher_dim: int, num_student_layers: int, ignored_layers: int = 0
    ) -> None:
        super().__init__()
        if not 0 <= ignored_layers < num_student_layers:
            raise ValueError(
                f"ignored_layers must be in [0, {num_student_layers}), got {ignored_layers}"
            )
        self.ignored_layers = ignored_layers
        self.embedding_mlp = nn.Sequential(
            nn.Linear(student_dim, teacher_dim), nn.GELU(), nn.Linear(teacher_dim, teacher_dim)
        )
        # one map per aligned block only: unused parameters would stall DDP
        self.block_maps = nn.ModuleDict({
            str(i): nn.Sequential(nn.Linear(student_dim, teacher_dim), nn.LayerNorm(teacher_dim))
            for i in range(ignored_layers, num_student_layers)
        })

    def embedding_loss(
        self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """MSE(MLP(E_s), E_t) over real tokens, in fp32 (:func:`full_precision`)."""
        with full_precision(student_emb):
            return masked_mse(self.embedding_mlp(student_emb.float()), teacher_emb.float(), mask)

    def feature_loss(
        self,
        student_features: list[torch.Tensor] | tuple[torch.Tensor, ...],
        teacher_hidden: list[torch.Tensor] | tuple[torch.Tensor, ...],
        mask: torch.Tensor | None,
        normalize: bool = True,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Sum over aligned blocks of MSE(N(W_i F_s,i), N(H_t,m(i))); also the per-block terms.

        ``teacher_hidden`` is Hugging Face's ``hidden_states`` (embeddings first). In fp32
        (:func:`full_precision`).
        """
        pairs = layer_map(len(student_features), len(teacher_hidden) - 1, self.ignored_layers)
        terms = []
        with full_precision(student_features[0]):
            for i, j in pairs:
                s = self.block_maps[str(i)](student_features[i].float())
                t = teacher_hidden[j].float()
                if normalize:
                    s, t = batch_standardize(s, mask), batch_standardize(t, mask)
                terms.append(masked_mse(s, t, mask))
        return torch.stack(terms).sum(), terms


def logits_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)), batch mean."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.to(student_logits.dtype) / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    return kl * temperature**2


def prediction_losses(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    regression: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2's two output terms, in fp32 (:func:`full_precision`): the label loss
    CE(z_s, y) and the teacher loss :func:`logits_kl`; for regression, MSE to the label and
    MSE to the teacher's output.

    Under bf16 autocast the classifier's logits come out with 8 significant bits, and casting
    the teacher's to theirs would blur the very distribution the student is fitted to."""
    with full_precision(logits):
        logits, teacher_logits = logits.float(), teacher_logits.float()
        if regression:
            return (F.mse_loss(logits.squeeze(-1), labels.float()),
                    F.mse_loss(logits, teacher_logits))
        return F.cross_entropy(logits, labels), logits_kl(logits, teacher_logits, temperature)
