"""Theoretical inference energy of SpikeBERT and of its BERT teacher (docs/DESIGN.md §4).

45 nm costs (Horowitz 2014): a multiply-accumulate E_MAC = 4.6 pJ, an accumulate E_AC = 0.9 pJ.

* ANN layer (the teacher, and every real-valued-input layer of the student):
  E = E_MAC x FLOPs, FLOPs counted as MACs.
* SNN layer with spike input: SOPs = T x fr x FLOPs, E = E_AC x SOPs, where FLOPs are the
  layer's dense MACs for one time step and fr its input firing rate, measured over the real
  tokens, steps and input neurons. The residual stream adds spike tensors, so a block's input
  holds small integers: an input of n counts as n spikes (fr is the mean input value). Then
  SOPs = (sum of the layer's input over tokens and steps) x fan-out, exactly.

Conventions (the same for both models wherever they apply):

* Counted: every Linear, the two attention products, and the embedding (a lookup-and-add of
  D values per token and table, charged at E_MAC: it is the student's real-valued layer that
  feeds the spike encoder). Not counted, for either model: LayerNorm, softmax, GELU,
  residual additions, neuron updates, the spike encoder's comparison.
* Attention products of the student are spike-spike products. ``Q K^T``: an accumulate
  happens for each pair of co-active query and key spikes, counted exactly (sum over heads,
  dims and steps of (#query spikes) x (#key spikes)); its rate column is SOPs / (T x FLOPs).
  ``(Q K^T) V``: each V spike adds its column of the integer map ``Q K^T`` into every query's
  output, an accumulate per query: SOPs = T x fr(V) x FLOPs, as a Linear whose weights are
  the map. Only real (unmasked) keys count.
* Sequence length: ``lengths="real"`` (default) charges each sample at its own number of
  tokens (what an inference on the unpadded sentence costs: padding is an artefact of
  batching), for both models; ``lengths="padded"`` charges the padded length both models see,
  as the paper seems to.

Check against the paper: BERT-base at 128 tokens is 11.18 G MACs here, 51.4 mJ; the paper's
102.24 mJ (MR) is 1.99 times that, so it seems to charge 2 FLOPs per MAC, at least for BERT.
Compare the ratio (the paper: SpikeBERT needs 27.82% of BERT's energy on average), not mJ.

One entry point: :func:`compare` (``recipes/evaluate.py --teacher DIR`` calls it);
:func:`format_table` and :func:`format_table2` print its report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
LENGTH_MODES = ("real", "padded")

__all__ = [
    "E_AC_PJ",
    "E_MAC_PJ",
    "EnergyReport",
    "LayerCost",
    "compare",
    "format_table",
    "format_table2",
    "measure_student",
    "measure_teacher",
]


@dataclass
class LayerCost:
    """One layer's cost per sample (averaged over the measured samples).

    ``kind`` is "AC" (spike input, 0.9 pJ per SOP) or "MAC" (real input, 4.6 pJ per FLOP);
    ``flops`` the dense MACs of one pass (one time step for the student); ``rate`` the input
    firing rate (AC layers; None for MAC layers); ``ops`` the SOPs or FLOPs charged;
    ``energy_mj`` the energy in mJ.
    """

    name: str
    kind: str
    flops: float
    rate: float | None
    ops: float
    energy_mj: float


@dataclass
class ModelCost:
    """Per-layer costs of one model over ``num_samples`` samples, and its accuracy."""

    layers: list[LayerCost]
    num_samples: int
    accuracy: float | None = None

    @property
    def ops(self) -> float:
        return sum(layer.ops for layer in self.layers)

    @property
    def energy_mj(self) -> float:
        return sum(layer.energy_mj for layer in self.layers)


@dataclass
class EnergyReport:
    """Student (SpikeBERT) against teacher (BERT) on the same inputs."""

    student: ModelCost
    teacher: ModelCost
    lengths: str = "real"
    time_steps: int = 0

    @property
    def ratio(self) -> float:
        """Student energy as a fraction of the teacher's (the paper: 27.82% on average)."""
        return self.student.energy_mj / self.teacher.energy_mj

    @property
    def reduction(self) -> float:
        """1 - ratio: the paper's "energy reduction"."""
        return 1.0 - self.ratio


def _short(name: str, prefix: str) -> str:
    """``spikebert.encoder.layer.0.mlp.fc1.linear`` -> ``layer.0.mlp.fc1.linear``."""
    name = name.removeprefix(prefix + ".") if prefix else name
    return name.removeprefix("encoder.")


def _order(name: str) -> tuple[int, int]:
    """Embeddings first, then block by block, then the head."""
    match = re.match(r"layer\.(\d+)\.", name)
    if name == "embeddings":
        return (-1, 0)
    return (int(match.group(1)), 0) if match else (1 << 30, 0)


class _Tally:
    """Running sums per layer: kind, dense FLOPs (per step), charged ops."""

    def __init__(self, prefix: str = "") -> None:
        self.rows: dict[str, list] = {}
        self.prefix = prefix

    def add(self, name: str, kind: str, flops: float, ops: float) -> None:
        row = self.rows.setdefault(_short(name, self.prefix), [kind, 0.0, 0.0])
        if kind == "MAC":
            row[0] = "MAC"  # a layer that ever sees real values is charged as an ANN layer
        row[1] += flops
        row[2] += ops

    def result(self, num_samples: int, steps: int) -> list[LayerCost]:
        out = []
        for name in sorted(self.rows, key=_order):  # stable: execution order within a block
            kind, flops, ops = self.rows[name]
            flops, ops = flops / num_samples, ops / num_samples
            energy = ops * (E_AC_PJ if kind == "AC" else E_MAC_PJ) * 1e-9
            rate = ops / (steps * flops) if kind == "AC" and flops else None
            out.append(LayerCost(name, kind, flops, rate, ops, energy))
        return out


def _is_spikes(x: torch.Tensor) -> bool:
    """Non-negative integer values: spikes, or sums of spikes."""
    return bool(((x >= 0) & (x == torch.floor(x))).all())


def _masks(attention_mask: torch.Tensor | None, shape, lengths: str,
           device) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens that count [B, L], keys the model attends to [B, L]) as float."""
    real = (torch.ones(shape, device=device) if attention_mask is None
            else (attention_mask != 0).float())
    counted = real if lengths == "real" else torch.ones_like(real)
    return counted, real


def _batches(batches: Iterable[Mapping[str, torch.Tensor]], device):
    for batch in batches:
        yield {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _accuracy(logits: torch.Tensor, labels: torch.Tensor | None) -> tuple[int, int]:
    if labels is None or logits.shape[-1] < 2 or labels.is_floating_point():
        return 0, 0
    return int((logits.argmax(-1) == labels).sum()), labels.numel()


def _run(model: nn.Module, batches, device, lengths: str, state: dict, handles: list,
         tally_batch) -> tuple[int, float | None]:
    """Runs ``model`` in eval mode over ``batches``; before each forward ``state["counted"]``
    holds the tokens that count and ``tally_batch(real)`` adds what no hook sees (``real``:
    the keys the model attends to). Afterwards the hooks are removed and the mode restored.
    Returns (examples, accuracy or None without labels)."""
    was_training = model.training
    model.eval()
    num, correct, total = 0, 0, 0
    try:
        for batch in _batches(batches, device):
            ids = batch["input_ids"]
            state["counted"], real = _masks(batch.get("attention_mask"), ids.shape, lengths,
                                            device)
            tally_batch(real)
            kwargs = {k: batch[k] for k in ("attention_mask", "token_type_ids") if k in batch}
            logits = getattr(model(input_ids=ids, **kwargs), "logits", None)
            if logits is not None:
                c, n = _accuracy(logits, batch.get("labels"))
                correct, total = correct + c, total + n
            num += ids.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if num == 0:
        raise ValueError("no batches to measure")
    return num, correct / total if total else None


@torch.no_grad()
def measure_student(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                    lengths: str = "real") -> ModelCost:
    """SOPs and energy of every layer of a SpikeBERT model (``SpikeBertModel`` or
    ``SpikeBertForSequenceClassification``) over ``batches`` of ``input_ids``,
    ``attention_mask`` [, ``token_type_ids``, ``labels``] (labels give the accuracy)."""
    if lengths not in LENGTH_MODES:
        raise ValueError(f"lengths must be one of {LENGTH_MODES}, got {lengths!r}")
    from .modeling_spikebert import SpikingLinear, SpikingQKV

    config = model.config
    T, H = config.time_steps, config.num_attention_heads
    tally, state = _Tally(getattr(model, "base_model_prefix", "")), {}
    device = next(model.parameters()).device

    def charge(name: str, x: torch.Tensor, n_in: int, n_out: int) -> None:
        if x.dim() == 4:  # [T, B, L, in]: per token
            rows = float(state["counted"].sum())
            x = x * state["counted"][None, :, :, None]
        else:  # [T, B, in]: the pooled head
            rows = x.shape[1]
        flops = rows * n_in * n_out  # dense MACs of one step
        if _is_spikes(x):
            tally.add(name, "AC", flops, float(x.sum()) * n_out)
        else:  # real-valued input: MACs at every step
            tally.add(name, "MAC", flops, T * flops)

    def linear_hook(name):
        # a spiking layer's own input [T, B, L, in] (its Linear may run once for all steps
        # when the input is the same at every step; the hardware still runs T steps)
        def hook(module, inputs):
            linear = module if isinstance(module, nn.Linear) else module.linear
            charge(name, inputs[0], linear.in_features, linear.out_features)
        return hook

    def attention_hook(name):
        def hook(module, inputs, output):  # output: Q, K, V spikes [T, B, L, 3, D]
            q, k, v = output.unbind(3)
            counted, keys = state["counted"], state["keys"]
            T_, B, L, D = q.shape
            per_head = lambda s, m: (s * m[None, :, :, None]).view(T_, B, L, H, D // H).sum(2)
            qk = float((per_head(q, counted) * per_head(k, keys)).sum())
            nq, nk = counted.sum(1), keys.sum(1)
            flops = float((nq * nk).sum()) * D
            av = float(((v * keys[None, :, :, None]).sum(dim=(0, 2, 3)) * nq).sum())
            tally.add(f"{name}.qk", "AC", flops, qk)
            tally.add(f"{name}.av", "AC", flops, av)
        return hook

    handles, inside = [], set()
    for name, module in model.named_modules():
        if isinstance(module, SpikingLinear | SpikingQKV):
            handles.append(module.register_forward_pre_hook(linear_hook(f"{name}.linear")))
            inside.add(f"{name}.linear")
        if isinstance(module, SpikingQKV):
            handles.append(module.register_forward_hook(
                attention_hook(name.removesuffix(".qkv"))))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in inside:
            handles.append(module.register_forward_pre_hook(linear_hook(name)))
    base = getattr(model, "spikebert", model)
    n_tables = 1 + (base.embeddings.position_embeddings is not None) + (
        base.embeddings.token_type_embeddings is not None)
    def tally_batch(real: torch.Tensor) -> None:
        # keys: the real ones, or with lengths="padded" those the model attends to
        masked = lengths == "real" or config.use_attention_mask
        state["keys"] = real if masked else torch.ones_like(real)
        emb_flops = float(state["counted"].sum()) * config.hidden_size * n_tables
        tally.add("embeddings", "MAC", emb_flops, emb_flops)

    num, accuracy = _run(model, batches, device, lengths, state, handles, tally_batch)
    return ModelCost(tally.result(num, T), num, accuracy)


@torch.no_grad()
def measure_teacher(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                    lengths: str = "real") -> ModelCost:
    """FLOPs (MACs) and energy of a Hugging Face BERT-like model (``BertModel`` or
    ``BertForSequenceClassification``, any size) on the same batches: every Linear (hooked,
    so pooler and classifier count), ``Q K^T`` and ``softmax(.) V`` (L x L x D each per layer)
    and the embeddings (D per token and table)."""
    if lengths not in LENGTH_MODES:
        raise ValueError(f"lengths must be one of {LENGTH_MODES}, got {lengths!r}")
    config = model.config
    D, n_layers = config.hidden_size, config.num_hidden_layers
    n_tables = 2 + (getattr(config, "type_vocab_size", 0) > 0)
    tally, state = _Tally(getattr(model, "base_model_prefix", "")), {}
    device = next(model.parameters()).device

    def linear_hook(name):
        def hook(module: nn.Linear, inputs, output):
            x = inputs[0]
            rows = float(state["counted"].sum()) if x.dim() == 3 else x.numel() / x.shape[-1]
            flops = rows * module.in_features * module.out_features
            tally.add(name, "MAC", flops, flops)
        return hook

    handles = [m.register_forward_hook(linear_hook(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear)]
    def tally_batch(_real: torch.Tensor) -> None:
        n = state["counted"].sum(1)
        tokens = float(n.sum())
        tally.add("embeddings", "MAC", tokens * D * n_tables, tokens * D * n_tables)
        attn = float((n * n).sum()) * D
        for i in range(n_layers):
            tally.add(f"layer.{i}.attention.qk", "MAC", attn, attn)
            tally.add(f"layer.{i}.attention.av", "MAC", attn, attn)

    num, accuracy = _run(model, batches, device, lengths, state, handles, tally_batch)
    return ModelCost(tally.result(num, 1), num, accuracy)


def compare(student: nn.Module, teacher: nn.Module, batches, lengths: str = "real"
            ) -> EnergyReport:
    """Measure both models on the same ``batches`` (a re-iterable, e.g. a list or a
    DataLoader)."""
    s = measure_student(student, batches, lengths)
    t = measure_teacher(teacher, batches, lengths)
    return EnergyReport(s, t, lengths, student.config.time_steps)


def format_table(report: EnergyReport) -> str:
    """Per-layer table of both models, then the totals."""
    w = max(len(c.name) for m in (report.student, report.teacher) for c in m.layers)
    lines = [f"{'model':8} {'layer':{w}} {'kind':4} {'FLOPs (M)':>11} {'rate':>7} "
             f"{'ops (M)':>11} {'energy (mJ)':>12}"]
    for label, cost in (("student", report.student), ("teacher", report.teacher)):
        for c in cost.layers:
            rate = "-" if c.rate is None else f"{c.rate:.4f}"
            lines.append(f"{label:8} {c.name:{w}} {c.kind:4} {c.flops / 1e6:11.3f} {rate:>7} "
                         f"{c.ops / 1e6:11.3f} {c.energy_mj:12.6f}")
    lines.append(f"total student: {report.student.ops / 1e9:.4f} G ops, "
                 f"{report.student.energy_mj:.4f} mJ per sample (T={report.time_steps})")
    lines.append(f"total teacher: {report.teacher.ops / 1e9:.4f} G FLOPs, "
                 f"{report.teacher.energy_mj:.4f} mJ per sample")
    lines.append(f"student / teacher energy: {report.ratio:.2%} (reduction "
                 f"{report.reduction:.2%}); lengths={report.lengths}, "
                 f"{report.student.num_samples} samples")
    return "\n".join(lines)


def format_table2(report: EnergyReport, dataset: str) -> str:
    """The paper's Table-2 rows: Dataset | Model | FLOPs / SOPs (G) | Energy (mJ) |
    Energy Reduction | Accuracy (%)."""
    acc = lambda a: "-" if a is None else f"{100 * a:.2f}"
    head = "| Dataset | Model | FLOPs / SOPs (G) | Energy (mJ) | Energy Reduction | Accuracy (%) |"
    return "\n".join([
        head, "|---|---|---|---|---|---|",
        f"| {dataset} | FT BERT | {report.teacher.ops / 1e9:.2f} | "
        f"{report.teacher.energy_mj:.2f} | - | {acc(report.teacher.accuracy)} |",
        f"| {dataset} | SpikeBERT | {report.student.ops / 1e9:.2f} | "
        f"{report.student.energy_mj:.2f} | {100 * report.reduction:.2f}%↓ | "
        f"{acc(report.student.accuracy)} |",
    ])
