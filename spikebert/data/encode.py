"""Tokenising a task for a model: the one ``encode`` every recipe uses, and a vocabulary check."""

from __future__ import annotations

from typing import Any

import datasets
import torch

from .registry import TaskSpec, get_task

__all__ = ["check_vocab_compatible", "encode", "encode_batch"]

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def encode_batch(tokenizer: Any, columns: dict[str, list], text_fields: tuple[str, ...],
                 max_length: int, *, padding: str | bool = "max_length",
                 return_tensors: str | None = None) -> dict[str, Any]:
    """Tokenise one batch of columns (pairs as two segments, truncated together to
    ``max_length``) into the model inputs, plus ``labels`` when ``columns`` has ``label``.
    The one tokenisation rule: :func:`encode` maps it over a dataset, the recipes' collator
    calls it per batch."""
    enc = tokenizer(*[columns[f] for f in text_fields], truncation=True,
                    max_length=max_length, padding=padding, return_tensors=return_tensors)
    out = {k: enc[k] for k in _MODEL_INPUTS if k in enc}
    if "label" in columns:
        labels = columns["label"]
        out["labels"] = torch.tensor(labels) if return_tensors == "pt" else labels
    return out


def encode(data: datasets.DatasetDict | datasets.Dataset, tokenizer: Any, max_length: int,
           task: TaskSpec | str, *, padding: str | bool = "max_length",
           ) -> datasets.DatasetDict | datasets.Dataset:
    """Tokenise a Dataset or every split of a DatasetDict (pairs as two segments).

    Output columns, in torch format: ``input_ids``, ``attention_mask``, ``token_type_ids`` (if
    the tokenizer makes them) and ``labels`` (when the input has a ``label`` column).
    Sequences are truncated to ``max_length``. ``padding="max_length"`` gives fixed-size rows;
    for per-batch padding pass ``padding=False`` and batch with
    ``transformers.DataCollatorWithPadding``. The student masks padded keys and leaves pads
    out of its mean pooling, so padding does not change its outputs, unless it is configured
    with ``use_attention_mask=False`` or ``pooling="mean_all"`` (docs/DESIGN.md §2).
    """
    spec = get_task(task)
    if isinstance(data, datasets.DatasetDict):
        return datasets.DatasetDict({k: encode(v, tokenizer, max_length, spec, padding=padding)
                                     for k, v in data.items()})
    missing = [c for c in spec.text_fields if c not in data.column_names]
    if missing:
        split = f"split {data.split!r} " if data.split else ""
        raise ValueError(f"{split}lacks columns {missing} for task {spec.name!r} "
                         f"(has {data.column_names})")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return encode_batch(tokenizer, batch, spec.text_fields, max_length, padding=padding)

    encoded = data.map(tokenize, batched=True, remove_columns=data.column_names)
    encoded.set_format("torch")
    return encoded


def check_vocab_compatible(tokenizer: Any, vocab_size: int) -> None:
    """Raise ValueError unless every id of ``tokenizer`` fits a ``vocab_size``-row embedding."""
    n = len(tokenizer)
    if vocab_size <= 0 or n > vocab_size:
        raise ValueError(
            f"tokenizer/model vocabulary mismatch: the tokenizer has {n} tokens but the model's "
            f"vocab_size is {vocab_size}; use the teacher's tokenizer and a student with "
            f"vocab_size >= {n}")
