"""Typed arguments of the recipes: dataclasses parsed by ``transformers.HfArgumentParser``.

Every training recipe parses ``(RecipeArguments, DataArguments-or-TaskDataArguments,
TrainingArguments)``, as Hugging Face's example scripts do; each flag is declared once, here
or in the recipe's own dataclass. Values are checked when the dataclass is built (finite, in
range), so a bad flag stops the run before any data is read or any file is written.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


def check_finite(name: str, value: float, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False) -> None:
    """ValueError unless ``value`` is finite and in ``[low, high]`` (``(low, high]`` when
    ``low_open``); ``name`` is the flag the user typed."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")


def check_count(name: str, value: int | None, minimum: int, *, none_ok: bool = False) -> None:
    """ValueError unless ``value`` is an integer >= ``minimum`` (or None when allowed)."""
    if value is None and none_ok:
        return
    if value is None or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


@dataclass
class TrainingArguments:
    """Optimisation, precision, checkpointing and logging: the flags every training recipe
    shares. Recipes change defaults with ``parse_arguments(..., defaults=...)``."""

    output_dir: str = field(default=None, metadata=_help("run folder", required=True))
    overwrite_output_dir: bool = field(default=False, metadata=_help(
        "start fresh in an --output_dir that holds another run's checkpoints (deletes them)"))
    seed: int = field(default=42, metadata=_help("seed of initialisation, shuffling, dropout"))
    batch_size: int = field(default=32, metadata=_help("examples per process per micro-step"))
    gradient_accumulation_steps: int = 1
    lr: float = field(default=5e-4, metadata=_help("peak learning rate of AdamW"))
    weight_decay: float = 0.01
    warmup_ratio: float = field(default=0.05, metadata=_help("fraction of steps warming up"))
    lr_scheduler: str = field(default="cosine", metadata=_help("a transformers schedule name"))
    max_grad_norm: float = field(default=1.0, metadata=_help("clip to this norm; 0 = no clip"))
    max_steps: int | None = field(default=None, metadata=_help("optimizer steps"))
    mixed_precision: str | None = field(default=None, metadata=_help(
        "no | bf16 | fp16 (autocast; default: what `accelerate launch` set)",
        choices=["no", "bf16", "fp16"]))
    logging_steps: int = 10
    eval_steps: int = field(default=50, metadata=_help("evaluate every N steps; 0 = at the end"))
    checkpointing_steps: int = field(default=100, metadata=_help("0 = no checkpoints"))
    save_total_limit: int | None = field(default=None, metadata=_help(
        "keep only the newest N checkpoints (default: all)"))
    resume_from_checkpoint: str | None = field(default=None, metadata=_help(
        "a checkpoint folder, or 'latest' (newest complete one in --output_dir)"))
    allow_inexact_resume: bool = field(default=False, metadata=_help(
        "resume even if the checkpoint's random-number states are missing or unreadable"))
    report_to: str = field(default="csv", metadata=_help(
        "comma list of trackers (csv, tensorboard, wandb, ...), or 'none'"))
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        check_finite("--lr", self.lr, low=0.0, low_open=True)
        check_finite("--weight_decay", self.weight_decay, low=0.0)
        check_finite("--warmup_ratio", self.warmup_ratio, low=0.0, high=1.0)
        check_finite("--max_grad_norm", self.max_grad_norm, low=0.0)
        check_count("--batch_size", self.batch_size, 1)
        check_count("--gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        check_count("--max_steps", self.max_steps, 1, none_ok=True)
        check_count("--logging_steps", self.logging_steps, 1)
        check_count("--eval_steps", self.eval_steps, 0)
        check_count("--checkpointing_steps", self.checkpointing_steps, 0)
        check_count("--save_total_limit", self.save_total_limit, 1, none_ok=True)
        check_count("--num_workers", self.num_workers, 0)


@dataclass
class DataArguments:
    """Where data comes from: shared by every recipe that reads a task or a corpus."""

    data_dir: str | None = field(default=None, metadata=_help(
        "data folder (default: $SPIKEBERT_DATA)"))
    split_seed: int = field(default=42, metadata=_help(
        "seed of the train/dev/test split of tasks shipped as one all.jsonl"))
    no_hub: bool = field(default=False, metadata=_help("never try the Hugging Face Hub"))


@dataclass
class TaskDataArguments(DataArguments):
    """A labelled task: its name, optional explicit files, and the tokenised length."""

    task: str = field(default=None, metadata=_help("task name (sst2, mr, waimai, ...)",
                                                   required=True))
    train_file: str | None = field(default=None, metadata=_help(".jsonl/.csv/.tsv train file"))
    dev_file: str | None = field(default=None, metadata=_help("dev file (with --train_file)"))
    test_file: str | None = None
    all_file: str | None = field(default=None, metadata=_help(
        "one file split into train/dev/test with --split_seed"))
    max_train_samples: int | None = field(default=None, metadata=_help(
        "use the first N training examples"))
    max_length: int | None = field(default=None, metadata=_help(
        "tokens per example (default: the model's maximum)"))

    def __post_init__(self) -> None:
        check_count("--max_train_samples", self.max_train_samples, 1, none_ok=True)
        check_count("--max_length", self.max_length, 2, none_ok=True)

    def load(self) -> tuple[Any, Any, dict[str, Any]]:
        """(task spec, DatasetDict of its splits, info dict with the files' SHA-256) as these
        flags describe them (``spikebert.data.load_task``), train cut to
        ``--max_train_samples``."""
        from .data import get_task, load_task

        spec = get_task(self.task)
        dataset, info = load_task(spec, data_dir=self.data_dir, files=self.files(),
                                  seed=self.split_seed, allow_hub=not self.no_hub)
        if self.max_train_samples:
            dataset["train"] = dataset["train"].select(
                range(min(self.max_train_samples, len(dataset["train"]))))
        return spec, dataset, info

    def files(self) -> dict[str, str] | None:
        """The explicit files, as ``load_task(files=...)`` takes them."""
        names = {"train": self.train_file, "dev": self.dev_file, "test": self.test_file,
                 "all": self.all_file}
        return {k: v for k, v in names.items() if v} or None


def parse_arguments(types: Sequence[type], argv: list[str] | None, description: str,
                    defaults: dict[str, Any] | None = None) -> tuple:
    """Parse ``argv`` into one instance per dataclass in ``types``; a value that fails its
    dataclass's checks ends the program like any argparse error (exit code 2, message)."""
    parser = HfArgumentParser(list(types), description=description)
    if defaults:
        known = {f.name for t in types for f in dataclasses.fields(t)}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise TypeError(f"defaults for undeclared flags: {unknown}")
        parser.set_defaults(**defaults)
    try:
        return tuple(parser.parse_args_into_dataclasses(
            args=sys.argv[1:] if argv is None else argv, look_for_args_file=False))
    except ValueError as err:
        parser.error(str(err))


def as_dict(*groups: Any) -> dict[str, Any]:
    """All fields of the parsed dataclasses in one flat dict (for logs and fingerprints)."""
    out: dict[str, Any] = {}
    for group in groups:
        out |= dataclasses.asdict(group)
    return out


def tracker_config(*groups: Any) -> dict[str, int | float | str | bool]:
    """``as_dict`` with every value a scalar, as trackers' hyper-parameter tables require
    (TensorBoard's ``add_hparams`` rejects None and lists): None becomes "", a list its
    space-joined items."""
    def scalar(value: Any) -> int | float | str | bool:
        if value is None:
            return ""
        if isinstance(value, (list, tuple)):
            return " ".join(map(str, value))
        return value if isinstance(value, (int, float, str, bool)) else str(value)

    return {key: scalar(value) for key, value in as_dict(*groups).items()}
