"""Run identity and checkpoints: fingerprints, atomic writes, which checkpoint to resume.

A run's *fingerprint* is what determines its result: the arguments (minus the ones that only
say where and how often to write, :data:`NOT_IN_FINGERPRINT`), the SHA-256 of the teacher's
and the initial student's weights, and of the data. It is stored in every checkpoint's
``training_state.json``; resuming compares it field by field and refuses any difference.

Each checkpoint is written under a temporary name (``.checkpoint-<step>.incomplete``) and
renamed once every file is on disk, so a killed write never takes a final name. Its
``training_state.json`` lists the files with their sizes (but the per-process RNG states,
checked at resume); a folder that does not match its
list is incomplete and ``latest`` passes over it with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = re.compile(r"checkpoint-(\d+)")
STATE_FILE = "training_state.json"
# flags that change where or how often things are written, never what is learned
NOT_IN_FINGERPRINT = frozenset({
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "allow_inexact_resume",
    "logging_steps", "checkpointing_steps", "save_total_limit", "report_to", "num_workers",
    "data_dir",
})
# files a fresh run must not find in its --output_dir (another run's results)
RUN_FILES = ("best.json", "metrics.json", "stage1.json", "pretrain_teacher.json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over a model's state dict (names, dtypes, shapes and bytes, in key order)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_hash(info: Mapping[str, Any]) -> str:
    """SHA-256 of a data description (file hashes, seed, split sizes), paths left out so a
    moved data folder is the same data."""
    kept = {k: v for k, v in info.items() if k not in ("paths", "data_dir", "source")}
    return sha256_bytes(json.dumps(kept, sort_keys=True, default=str).encode())


def run_fingerprint(arguments: Mapping[str, Any], **hashes: str | None) -> dict[str, Any]:
    """``{"args": {...}, "<name>_sha256": ...}``: what a resumed run must share with the
    checkpoint it continues."""
    args = {k: v for k, v in arguments.items() if k not in NOT_IN_FINGERPRINT}
    return {"args": json.loads(json.dumps(args, default=str)),
            **{f"{k}_sha256": v for k, v in hashes.items()}}


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable lines for every field where two fingerprints differ."""
    lines = []
    saved_args, current_args = saved.get("args", {}), current.get("args", {})
    for key in sorted(set(saved_args) | set(current_args)):
        if saved_args.get(key, "<absent>") != current_args.get(key, "<absent>"):
            lines.append(f"--{key}: checkpoint {saved_args.get(key, '<absent>')!r}, "
                         f"now {current_args.get(key, '<absent>')!r}")
    for key in sorted((set(saved) | set(current)) - {"args"}):
        if saved.get(key) != current.get(key):
            lines.append(f"{key}: checkpoint {saved.get(key)}, now {current.get(key)}")
    return lines


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-<step>`` folders under ``output_dir``, oldest first (complete or not)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT.fullmatch(p.name).group(1)))


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's ``training_state.json``; ValueError naming the folder and what is
    wrong when it is missing, unreadable, or its listed files are not all there."""
    state_file = path / STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path} is incomplete: {STATE_FILE} unreadable "
                         f"({type(err).__name__}: {err})") from err
    for key in ("step", "fingerprint", "files"):
        if key not in state:
            raise ValueError(f"checkpoint {path} is incomplete: {STATE_FILE} has no {key!r} "
                             f"(written by an older version?)")
    wrong = [f"{name} (expected {size} bytes, found "
             f"{(path / name).stat().st_size if (path / name).is_file() else 'nothing'})"
             for name, size in state["files"].items()
             if not (path / name).is_file() or (path / name).stat().st_size != size]
    if wrong:
        raise ValueError(f"checkpoint {path} is incomplete: {', '.join(wrong)}")
    return state


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` (None if none); incomplete ones are
    skipped with a warning naming them."""
    for path in reversed(checkpoint_dirs(output_dir)):
        try:
            read_state(path)
        except ValueError as err:
            warnings.warn(f"skipping {err}", stacklevel=2)
            continue
        return path
    return None


def rng_state_problem(path: Path, process_index: int) -> str | None:
    """Why this process's random-number state in checkpoint ``path`` cannot be restored
    (None when it can)."""
    rng_file = path / f"random_states_{process_index}.pkl"
    if not rng_file.is_file():
        return f"{rng_file} is missing"
    try:
        states = torch.load(rng_file, weights_only=False)
        if "torch_manual_seed" not in states:
            return f"{rng_file} holds no torch RNG state"
    except Exception as err:  # a torn pickle raises EOFError, UnpicklingError, ...
        return f"{rng_file} is unreadable ({type(err).__name__}: {err})"
    return None


def find_resume_checkpoint(resume: str | None, output_dir: str) -> Path | None:
    """``--resume_from_checkpoint``: None, ``latest`` (newest complete checkpoint, or None to
    start fresh) or a folder, which must be a complete checkpoint."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    read_state(path)  # raises naming what is missing
    return path


def check_resume(path: Path, fingerprint: Mapping[str, Any], max_steps: int,
                 process_index: int, allow_inexact: bool) -> dict[str, Any]:
    """The checkpoint's state after checking that it belongs to this run, lies within
    ``max_steps`` and can be resumed exactly; ValueError otherwise."""
    state = read_state(path)
    differences = fingerprint_differences(state["fingerprint"], fingerprint)
    if differences:
        raise ValueError(
            f"checkpoint {path} belongs to a different run; it differs in:\n  "
            + "\n  ".join(differences)
            + "\nresume with the checkpoint's settings, or start fresh with "
              "--overwrite_output_dir (deletes its checkpoints) or another --output_dir")
    if not 0 <= state["step"] <= max_steps:
        raise ValueError(f"checkpoint {path} is at step {state['step']}, beyond --max_steps "
                         f"{max_steps}")
    problem = rng_state_problem(path, process_index)
    if problem and not allow_inexact:
        raise ValueError(f"cannot resume exactly: {problem}. Pass --allow_inexact_resume to "
                         f"continue with fresh random-number states (dropout, masks and "
                         f"shuffling then differ from the uninterrupted run)")
    if problem:
        warnings.warn(f"inexact resume (--allow_inexact_resume): {problem}", stacklevel=2)
    return state


def prepare_output_dir(output_dir: str, resuming: bool, overwrite: bool,
                       is_main_process: bool) -> None:
    """A fresh run refuses a folder holding another run's checkpoints or results, unless
    ``overwrite`` (then the main process deletes them, so no later ``latest`` finds them)."""
    if resuming:
        return
    root = Path(output_dir)
    found = [p for p in checkpoint_dirs(root)] + [root / n for n in RUN_FILES
                                                  if (root / n).is_file()]
    if not found:
        return
    if not overwrite:
        raise FileExistsError(
            f"--output_dir {output_dir} holds another run's files "
            f"({', '.join(p.name for p in found)}); pass --resume_from_checkpoint latest to "
            f"continue that run, or --overwrite_output_dir to start over there")
    if is_main_process:
        for p in found:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def save_checkpoint(accelerator, output_dir: str, step: int, state: dict[str, Any],
                    keep: int | None = None) -> Path:
    """Accelerate state (model, optimizer, scheduler, RNGs) plus ``training_state.json``,
    written to a temporary folder that is renamed to ``checkpoint-<step>`` when complete;
    then, with ``keep``, all but the newest ``keep`` checkpoints are deleted (only after the
    new one is in place, so a crash never leaves fewer than before)."""
    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = Path(output_dir) / f".checkpoint-{step}.incomplete"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process writes its own RNG file here
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # RNG files are checked on their own at resume (an error, or --allow_inexact_resume)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())
                 if p.is_file() and not p.name.startswith("random_states_")}
        atomic_write_text(tmp / STATE_FILE, json.dumps({**state, "step": step, "files": files},
                                                       indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep:
            for old in checkpoint_dirs(output_dir)[:-keep]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
