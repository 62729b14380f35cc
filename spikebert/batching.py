"""Batches for the task recipes: tokenised when a batch is drawn, augmented on demand.

Tokenising (and, in stage 2, augmenting) inside the DataLoader means a run only pays for the
examples it uses: a five-step smoke run of stage 2 tokenises five batches, not the twenty-fold
augmented training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from .data.encode import encode_batch


class TaskCollator:
    """Rows ``{"text" | "text_a", "text_b", "label"}`` -> a padded batch of tensors
    (``input_ids``, ``attention_mask``, [``token_type_ids``], ``labels``).

    ``padding="max_length"`` (every batch has the same shape) or ``"longest"`` (a batch stops
    at its longest row: for models whose outputs pads cannot change).
    Pairs are two segments, truncated together to ``max_length``.
    """

    def __init__(self, tokenizer, text_fields: Sequence[str], max_length: int,
                 padding: str = "max_length") -> None:
        self.tokenizer, self.text_fields = tokenizer, tuple(text_fields)
        self.max_length, self.padding = max_length, padding

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        columns = {f: [row[f] for row in rows] for f in (*self.text_fields, "label")}
        return encode_batch(self.tokenizer, columns, self.text_fields, self.max_length,
                            padding=self.padding, return_tensors="pt")


class LazyAugmented(Dataset):
    """Tang et al.'s augmented training set (``spikebert.augment``), built item by item.

    Slot ``k`` is copy ``j = k % (n_iter + 1)`` of example ``i = k // (n_iter + 1)``: ``j = 0``
    is the original, ``j >= 1`` the j-th of the distinct copies
    ``Augmenter.augment_analyzed(analysis_i, i)`` gives (the same copies the eager
    ``augment_dataset`` makes, seeded by ``[seed, i]``). An example with fewer than ``n_iter``
    distinct copies (a short text) fills its remaining slots by cycling through its copies and
    itself, so every example keeps ``n_iter + 1`` slots. The POS dictionary is fitted on the
    whole training set first, as in the eager version.
    """

    def __init__(self, dataset, augmenter, text_fields: Sequence[str]) -> None:
        self.rows = list(dataset)
        self.text_fields = tuple(text_fields)
        for i, row in enumerate(self.rows):
            for f in self.text_fields:
                if not isinstance(row.get(f), str):
                    raise ValueError(f"training row {i}: field {f!r} is missing or not a string")
        self.analyses = [[augmenter.analyzer(row[f]) for f in self.text_fields]
                         for row in self.rows]
        augmenter.fit_analyzed(a for per_row in self.analyses for a in per_row)
        self.augmenter = augmenter
        self.slots = augmenter.config.n_iter + 1

    def __len__(self) -> int:
        return len(self.rows) * self.slots

    def __getitem__(self, k: int) -> dict[str, Any]:
        i, j = divmod(int(k), self.slots)
        row = self.rows[i]
        if j == 0:
            return row
        copies = self.augmenter.augment_analyzed(self.analyses[i], i)
        if not copies:
            return row
        j = (j - 1) % (len(copies) + 1)
        if j == len(copies):
            return row
        return {**row, **dict(zip(self.text_fields, copies[j], strict=True))}


class LengthGroupedEpochSampler(Sampler[int]):
    """Training order that puts rows of similar length in the same batch: transformers'
    ``get_length_grouped_indices`` (a random permutation cut into mega-batches of
    ``50 x batch_size``, each sorted by length), drawn from a generator seeded with
    ``seed + epoch``. ``set_epoch`` (called by Accelerate's loaders) picks the epoch, so a run
    resumed mid-epoch replays the same order and skips exactly the batches it had trained.

    With batches padded to their longest row, a batch of short rows costs less: ChnSenti's
    reviews have a median of 84 characters, but one in three is 128 or longer, so nearly
    every random batch of 32 holds one and is padded to the full 128.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size,
                                               generator=generator))


def row_lengths(dataset, tokenizer, text_fields: Sequence[str], max_length: int) -> list[int]:
    """Tokens of each training row (its fields together, without special tokens), capped at
    ``max_length``: the sort key of ``LengthGroupedEpochSampler``. Slots of a
    ``LazyAugmented`` set take their original's length (its copies differ by a few words)."""
    rows = dataset.rows if isinstance(dataset, LazyAugmented) else dataset
    lengths = [0] * len(rows)
    for f in text_fields:
        texts = [row.get(f) or "" for row in rows]
        for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
            lengths[i] += len(ids)
    lengths = [min(n, max_length) for n in lengths]
    if isinstance(dataset, LazyAugmented):
        return [n for n in lengths for _ in range(dataset.slots)]
    return lengths
