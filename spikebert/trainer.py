"""The one training loop of the recipes, with its Accelerator, optimizer and tracker.

A recipe reads top to bottom (as Accelerate's examples): parse arguments, ``make_accelerator``,
load data and models, ``start_run`` (checks the output folder and the checkpoint to resume,
see :mod:`spikebert.checkpoint`), ``accelerator.prepare``, ``init_trackers``, then
:func:`train`, which optimises to ``--max_steps`` and returns the last step.

Per optimizer step the loop runs ``loss_fn(batch)`` under the run's autocast (``--mixed_precision``:
teacher and student forwards alike) for each of the ``--gradient_accumulation_steps``
micro-batches, clips the gradient norm, and stops with ``FloatingPointError`` naming the step
if the loss or the gradient norm is not finite (before the optimizer step, so the weights and
the last checkpoint stay clean). Resuming restores model, optimizer, scheduler and RNG states
and skips the batches the interrupted epoch already used, so the resumed run is the same run.

A SIGTERM (``kill``, a scheduler's end of job, a machine handed back) or SIGUSR1 (SLURM's
``--signal=USR1@<seconds>`` warning) does not kill the run mid-step: the loop finishes the
optimizer step, saves a checkpoint of it and exits with status 128 + signal
(:class:`Stopped`), so the same command with ``--resume_from_checkpoint latest`` loses nothing.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.tracking import GeneralTracker, on_main_process

from .arguments import TrainingArguments
from .checkpoint import (
    check_resume,
    find_resume_checkpoint,
    prepare_output_dir,
    save_checkpoint,
)


class CSVTracker(GeneralTracker):
    """Accelerate tracker: ``step,name,value`` rows in ``<logging_dir>/<run>/metrics.csv``."""

    name = "csv"
    requires_logging_directory = True

    @on_main_process
    def __init__(self, run_name: str, logging_dir: str | os.PathLike) -> None:
        super().__init__()
        self.run_name = run_name
        self.path = Path(logging_dir) / run_name / "metrics.csv"

    @property
    def tracker(self):
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        import json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=2, default=str))

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        new = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "name", "value"])
            for key, value in values.items():
                writer.writerow([step, key, value.item() if torch.is_tensor(value) else value])


def read_csv_metrics(path: str | os.PathLike, name: str) -> dict[int, float]:
    """{step: value} of one metric from a :class:`CSVTracker` file (the last row of a step
    wins: a resumed run rewrites the steps after its checkpoint)."""
    with open(path, newline="") as handle:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(handle)
                if r["name"] == name}


def make_accelerator(args: TrainingArguments, run_name: str, find_unused_parameters: bool = False):
    """An Accelerator with ``--mixed_precision``, seedable shuffling (exact resume), the
    ``--report_to`` trackers (``csv`` writes under ``<output_dir>/logs/<run_name>``)."""
    from accelerate import (
        Accelerator,
        DataLoaderConfiguration,
        DistributedDataParallelKwargs,
        PartialState,
    )

    # Accelerate forms a CPU (gloo) process group only when told to use the CPU; launched on
    # a machine without a GPU, the processes would otherwise each train alone into one folder.
    # The process state comes first: the trackers below already ask it for the main process
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = world > 1 and not _has_accelerator()
    PartialState(cpu=cpu)
    trackers = [] if args.report_to == "none" else args.report_to.split(",")
    log_with = [CSVTracker(run_name, Path(args.output_dir) / "logs") if t == "csv" else t
                for t in trackers]
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=log_with or None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(
            find_unused_parameters=find_unused_parameters)],
    )
    if accelerator.num_processes != world:
        raise RuntimeError(f"launched as {world} processes (WORLD_SIZE) but Accelerate formed "
                           f"a group of {accelerator.num_processes}; check `accelerate env` "
                           f"and the launch flags")
    return accelerator


def _has_accelerator() -> bool:
    """A GPU (or other device) torch can train on; ``torch.accelerator`` since torch 2.6."""
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def make_optimizer(model: torch.nn.Module, args: TrainingArguments):
    """AdamW (``--lr``, ``--weight_decay``) and the ``--lr_scheduler`` schedule over
    ``--max_steps``, after ``ceil(--warmup_ratio * --max_steps)`` warm-up steps."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(args.warmup_ratio * args.max_steps),
                              num_training_steps=args.max_steps)
    return optimizer, scheduler


def steps_for_epochs(epochs: float, batches_per_epoch: int, accumulation: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``batches_per_epoch`` micro-batches."""
    if not math.isfinite(epochs) or epochs <= 0:
        raise ValueError(f"--epochs must be a finite number > 0, got {epochs}")
    return max(1, math.ceil(epochs * batches_per_epoch / accumulation))


@dataclass
class Run:
    """Where a run starts: its fingerprint, the checkpoint it resumes (if any) and the step
    and recipe state (``extra``, e.g. stage 2's best dev score) saved in that checkpoint."""

    fingerprint: dict[str, Any]
    resume_from: Path | None = None
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def start_run(accelerator, args: TrainingArguments, fingerprint: dict[str, Any]) -> Run:
    """Check ``--output_dir`` and ``--resume_from_checkpoint`` before anything is written:
    a resumed checkpoint must carry this run's fingerprint and a step within ``--max_steps``;
    a fresh run refuses another run's checkpoints unless ``--overwrite_output_dir``."""
    # the precision in effect (flag, or what `accelerate launch` set) decides the result too
    fingerprint["args"]["mixed_precision"] = accelerator.mixed_precision
    resume = find_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    prepare_output_dir(args.output_dir, resume is not None, args.overwrite_output_dir,
                       accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if resume is None:
        if accelerator.is_main_process:  # a fresh run starts fresh CSV logs
            for old in Path(args.output_dir).glob("logs/*/metrics.csv"):
                old.unlink()
        return Run(fingerprint)
    state = check_resume(resume, fingerprint, args.max_steps, accelerator.process_index,
                         args.allow_inexact_resume)
    accelerator.print(f"resuming from {resume} at step {state['step']}")
    return Run(fingerprint, resume, state["step"], state.get("extra", {}))


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


STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class Stopped(SystemExit):
    """Training stopped by a signal after checkpointing its last step; the process exits with
    status 128 + signal number, as a process killed by that signal reports it to a shell."""


@contextmanager
def stop_signals(names: tuple[str, ...] = STOP_SIGNALS,
                 on_signal: Callable[[int], None] | None = None) -> Iterator[list[int]]:
    """Within the block, the named signals are recorded in the yielded list (and passed to
    ``on_signal``) instead of killing the process; the previous handlers come back after.
    Outside the main thread, where Python cannot install handlers, nothing is caught."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame) -> None:
        received.append(signum)
        if on_signal is not None:
            on_signal(signum)

    previous = {}
    for name in names:
        number = getattr(signal, name, None)  # SIGUSR1 does not exist on Windows
        if number is not None:
            previous[number] = signal.signal(number, handler)
    try:
        yield received
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _stop_signal(accelerator, received: list[int]) -> int:
    """The signal any process received (0: none); every process must stop at the same step,
    or the ones that go on would wait forever in their next collective."""
    signum = received[0] if received else 0
    if accelerator.num_processes > 1:
        signum = int(accelerator.reduce(torch.tensor(signum, device=accelerator.device),
                                        "max").item())
    return signum


def _check_finite(step: int, loss: torch.Tensor, grad_norm: torch.Tensor | float,
                  last_checkpoint: Path | None) -> None:
    for what, value in (("loss", float(loss)), ("gradient norm", float(grad_norm))):
        if not math.isfinite(value):
            where = last_checkpoint or "none (no checkpoint was written)"
            raise FloatingPointError(
                f"non-finite {what} ({value}) at step {step}; stopped before the optimizer "
                f"step. Last checkpoint: {where}. Lower --lr, check the loss weights, or use "
                f"--max_grad_norm")


def train(accelerator, args: TrainingArguments, run: Run, model, optimizer, scheduler,
          train_dl, loss_fn: Callable[[dict], dict[str, torch.Tensor]],
          evaluate: Callable[[int], Any] | None = None, *, desc: str,
          tokens_per_sample: int | None = None) -> int:
    """Optimise until ``--max_steps`` from ``run.step``; returns the last step.

    ``loss_fn(batch)`` returns scalar tensors, ``loss`` among them; ``evaluate(step)`` runs
    every ``--eval_steps``. Checkpoints (every ``--checkpointing_steps``) hold ``run.extra``.
    """
    from tqdm.auto import tqdm

    step = run.step
    last_checkpoint = run.resume_from
    if run.resume_from is not None:
        accelerator.load_state(str(run.resume_from))
    per_epoch = len(train_dl) // args.gradient_accumulation_steps
    if per_epoch == 0:
        raise ValueError(f"{len(train_dl)} batches per epoch are fewer than "
                         f"--gradient_accumulation_steps {args.gradient_accumulation_steps}; "
                         f"lower --batch_size or add data")
    params = [p for p in model.parameters() if p.requires_grad]
    clip = args.max_grad_norm or math.inf  # inf: measure the norm, scale by 1
    progress = tqdm(total=args.max_steps, initial=step, desc=desc,
                    disable=not accelerator.is_main_process)
    model.train()
    tick, samples, last_logged = time.perf_counter(), 0, step
    with stop_signals() as received:
        while step < args.max_steps:
            epoch, done_in_epoch = divmod(step, per_epoch)
            train_dl.set_epoch(epoch)
            batches = train_dl
            if done_in_epoch:
                batches = accelerator.skip_first_batches(
                    train_dl, done_in_epoch * args.gradient_accumulation_steps)
            for batch in rng_neutral_start(batches):
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        out = loss_fn(batch)
                    accelerator.backward(out["loss"])
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(params, clip)
                        _check_finite(step + 1, out["loss"].detach(), grad_norm, last_checkpoint)
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
                    logs = {k: accelerator.reduce(v.detach().float(), "mean").item()
                            for k, v in out.items()}
                    logs |= {"lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                             "samples_per_s": samples / elapsed,
                             "s_per_step": elapsed / (step - last_logged)}
                    if tokens_per_sample:
                        logs["tokens_per_s"] = samples * tokens_per_sample / elapsed
                    accelerator.log(logs, step=step)
                    progress.set_postfix(loss=f"{logs['loss']:.4f}")
                    tick, samples, last_logged = time.perf_counter(), 0, step
                if evaluate is not None and args.eval_steps and step % args.eval_steps == 0:
                    evaluate(step)
                # a stop signal: checkpoint this step (if the schedule did not) and exit
                signum = _stop_signal(accelerator, received) if step < args.max_steps else 0
                if signum or (args.checkpointing_steps and step % args.checkpointing_steps == 0):
                    last_checkpoint = save_checkpoint(
                        accelerator, args.output_dir, step,
                        {"epoch": epoch, "fingerprint": run.fingerprint, "extra": run.extra},
                        keep=args.save_total_limit)
                if signum:
                    progress.close()
                    accelerator.print(
                        f"{signal.Signals(signum).name} received: stopped after step {step} of "
                        f"{args.max_steps}, saved {last_checkpoint}; the same command with "
                        f"--resume_from_checkpoint latest continues from there")
                    raise Stopped(128 + signum)
                if step >= args.max_steps:
                    break
    progress.close()
    return step


def keep_best(accelerator, run: Run, step: int, metrics: dict[str, float], metric: str,
              model, tokenizer, out_dir: str | os.PathLike) -> bool:
    """Model selection on dev: when ``metrics[metric]`` beats ``run.extra["best"]`` (kept in
    the run's checkpoints, so a resumed run remembers it), save ``model`` and ``tokenizer`` to
    ``out_dir`` with ``best.json``. Returns whether it did."""
    import json

    from .checkpoint import atomic_write_text

    best = run.extra.setdefault("best", {"step": -1, metric: -math.inf})
    if not metrics[metric] > best[metric]:
        return False
    run.extra["best"] = {"step": step, **metrics}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        atomic_write_text(Path(out_dir) / "best.json", json.dumps(run.extra["best"], indent=2))
    return True


def evaluate_model(model, loader, accelerator, task) -> dict[str, float]:
    """The task's metrics (``spikebert.data.compute_metrics``) of a sequence classifier on
    ``loader`` under the run's autocast, gathered over processes; the model's mode is kept."""
    import numpy as np

    from .data import compute_metrics

    was_training = model.training
    model.eval()
    preds, labels = [], []
    with torch.no_grad(), accelerator.autocast():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids")).logits
            logits, y = accelerator.gather_for_metrics((logits, batch["labels"]))
            preds.append(logits.float().cpu().numpy())
            labels.append(y.cpu().numpy())
    model.train(was_training)
    logits = np.concatenate(preds)
    if not np.isfinite(logits).all():
        raise FloatingPointError("the model produced non-finite logits on the dev set")
    return compute_metrics(task, logits, np.concatenate(labels))


def finish(accelerator) -> None:
    """End trackers and tear the process group down (else the launcher aborts)."""
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
