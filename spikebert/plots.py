"""Figures (PNG, matplotlib without pyplot, so any backend or none works).

* :func:`plot_firing_rates`: the firing rate of every LIF layer, block by block;
* :func:`plot_attention_map`: ``Q K^T`` of one sentence at the last block and last time step,
  with its tokens on both axes (SpikeBERT Appendix G).

>>> rates = collect_firing_rates(model, batches)
>>> plot_firing_rates(rates, "rates.png")
>>> plot_sentence_attention(model, tokenizer, "a gripping , funny movie", "attention.png")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

__all__ = [
    "collect_firing_rates",
    "plot_attention_map",
    "plot_firing_rates",
    "plot_sentence_attention",
]


@torch.no_grad()
def collect_firing_rates(model: torch.nn.Module,
                         batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """Firing rate of every spiking layer over ``batches`` (each real token weighs the same),
    via :func:`spikebert.record_firing_rates`."""
    from .neurons import record_firing_rates

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with record_firing_rates(model) as rates:
            for batch in batches:
                model(**{k: batch[k].to(device) for k in
                         ("input_ids", "attention_mask", "token_type_ids") if k in batch})
    finally:
        model.train(was_training)
    if not rates:
        raise ValueError("no batches given")
    return {name: float(rate) for name, rate in rates.items()}


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_firing_rates(rates: Mapping[str, float | torch.Tensor], path: str | os.PathLike,
                      title: str = "SpikeBERT firing rate per layer") -> Path:
    """Bar chart of ``{layer name: firing rate}`` (as :func:`spikebert.record_firing_rates`
    or :func:`collect_firing_rates` give), saved as a PNG at ``path``."""
    if not rates:
        raise ValueError("no firing rates to plot")
    names = list(rates)
    values = [float(rates[n]) for n in names]
    fig = Figure(figsize=(max(6.0, 0.28 * len(names) + 2), 4.0))
    ax = fig.add_subplot()
    kinds = [n.rsplit(".", 1)[-1] for n in names]
    palette = {k: f"C{i}" for i, k in enumerate(dict.fromkeys(kinds))}
    ax.bar(range(len(names)), values, color=[palette[k] for k in kinds])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("firing rate (spikes per neuron per step)")
    ax.set_ylim(0, max(max(values) * 1.1, 1e-3))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_attention_map(attention: torch.Tensor, tokens: Sequence[str],
                       path: str | os.PathLike, head: int | None = None,
                       title: str | None = None) -> Path:
    """Heat map of one sentence's attention map ``[L, L]`` or ``[H, L, L]`` (``head=None``
    averages the heads), queries on the rows and keys on the columns, labelled with
    ``tokens`` (the first ``len(tokens)`` positions are shown: pass the real tokens to leave
    padding out)."""
    a = attention.detach().float().cpu()
    if a.dim() == 3:
        if head is not None and not 0 <= head < a.shape[0]:
            raise ValueError(f"head must be in [0, {a.shape[0]}), got {head}")
        a = a.mean(0) if head is None else a[head]
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"attention must be [L, L] or [H, L, L], got {tuple(attention.shape)}")
    n = len(tokens)
    if not 0 < n <= a.shape[0]:
        raise ValueError(f"got {n} tokens for a {a.shape[0]} x {a.shape[0]} map")
    a = a[:n, :n]
    size = max(4.0, 0.35 * n + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(a.numpy(), cmap="viridis")
    ax.set_xticks(range(n), list(tokens), rotation=90, fontsize=8)
    ax.set_yticks(range(n), list(tokens), fontsize=8)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    which = "mean over heads" if head is None else f"head {head}"
    ax.set_title(title or f"Q K^T, last block, last step ({which})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="co-active spikes")
    return _save(fig, path)


@torch.no_grad()
def plot_sentence_attention(model: torch.nn.Module, tokenizer, sentence: str | Sequence[str],
                            path: str | os.PathLike, head: int | None = None) -> Path:
    """Tokenise ``sentence`` (a string, or a pair), run ``model`` and plot its attention map
    at the last block and last step with the tokens on the axes."""
    texts = [sentence] if isinstance(sentence, str) else list(sentence)
    enc = tokenizer(*texts, truncation=True, return_tensors="pt",
                    max_length=model.config.max_position_embeddings)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = model(input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device),
                    token_type_ids=(enc["token_type_ids"].to(device)
                                    if "token_type_ids" in enc else None),
                    output_attentions=True)
    finally:
        model.train(was_training)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    return plot_attention_map(out.attentions[-1][0], tokens, path, head)
