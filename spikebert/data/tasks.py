"""Loading a task: explicit files, a data folder, the bundled sample, or the Hub; seeded splits.

Every loaded split has the canonical columns ``text`` (single sentence) or ``text_a`` and
``text_b`` (pairs), plus ``label`` (``ClassLabel``; ``float32`` for STS-B regression).

Where data comes from (:func:`load_task`), in this order; the first that has the task wins:

1. explicit files (``files={"train": ..., "dev": ..., "test": ...}`` or ``{"all": ...}``), as
   given by the recipes' ``--train_file/--dev_file/--test_file/--all_file`` flags; explicit files
   that do not exist are an error, never a silent fallback;
2. a data directory laid out like ``shared/data`` (``<dir>/<task>/train.jsonl`` + ``dev.jsonl``
   [+ ``test.jsonl``], or ``<dir>/<task>/all.jsonl``; ``.tsv``/``.csv`` also work): the
   ``data_dir`` argument (``--data_dir``), else the environment variable ``SPIKEBERT_DATA``;
3. the copy bundled with the package (``spikebert/data/samples``: the sentence-level SST-2), so
   ``--task sst2`` runs offline on a fresh clone; a warning says which copy was used;
4. the Hugging Face Hub (``datasets.load_dataset``), unless ``allow_hub=False`` or
   ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set, in which case it is skipped at once.

File formats: JSON Lines rows ``{"text": str, "label": int}`` (pairs: ``text_a``/``text_b``;
GLUE's own names ``sentence1``/``sentence2``, ``question``/``sentence``... are accepted too), or
CSV/TSV with a header row using the same names (``review`` is accepted as the text column, so
the original ChnSenti/Waimai CSVs load as they are). Labels may be ids or label names.

Splits: MR, Subj, ChnSenti and Waimai ship only ``all.jsonl``; they get a deterministic,
seeded, *stratified* split (:func:`stratified_split`, default 80/10/10). SST-2/SST-5 have train
+ dev only (the official test split is withheld): select and report on dev. GLUE test labels
are hidden, so GLUE tasks load train + dev (MNLI: dev = matched, plus ``dev_mismatched``). The
info dict returned with every load records the source, paths (with SHA-256), seed, ratios,
split sizes and a hash of each split's rows (:func:`split_hashes`) so runs can be traced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .files import column, find_split_file, read_labelled_file, sha256_file, task_features
from .registry import TaskSpec, get_task

__all__ = [
    "DATA_ENV_VAR",
    "SAMPLES_DIR",
    "hub_offline",
    "load_task",
    "read_task_file",
    "split_hashes",
    "stratified_split",
]

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "SPIKEBERT_DATA"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
# File stems looked for in a task folder, per split.
_SPLIT_STEMS = {
    "train": ("train",),
    "dev": ("dev", "validation", "valid", "dev_matched", "validation_matched"),
    "test": ("test",),
    "dev_mismatched": ("dev_mismatched", "validation_mismatched"),
    "all": ("all",),
}


# --------------------------------------------------------------------------------------------
# Seeded split
# --------------------------------------------------------------------------------------------


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    r = tuple(float(x) for x in ratios)
    if len(r) not in (2, 3) or any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise ValueError(f"split_ratios must be 2 or 3 non-negative numbers (train, dev[, test]) "
                         f"summing to 1, got {ratios!r}")
    if r[0] == 0 or r[1] == 0:
        raise ValueError(f"split_ratios need non-zero train and dev parts, got {ratios!r}")
    return r


def stratified_split(labels: Sequence[int] | np.ndarray, ratios: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 42, *, stratify: bool = True) -> dict[str, np.ndarray]:
    """Deterministic (stratified) split of row indices into train/dev[/test].

    For each class (sorted), its row indices are shuffled with ``np.random.default_rng(seed)``
    and cut: ``round(n*dev)`` rows go to dev, ``round(n*test)`` to test, the rest to train.
    Each split is then shuffled with the same generator, so rows are not grouped by class.
    With ``stratify=False`` (regression) all rows form one group.

    ``Dataset.train_test_split(stratify_by_column=...)`` draws differently (a
    ``StratifiedShuffleSplit`` on a ``RandomState``), so it would change every published split;
    this function keeps them byte-identical and is applied with ``Dataset.select``.
    """
    r = _check_ratios(ratios)
    names = ("train", "dev", "test")[: len(r)]
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    groups = ([np.flatnonzero(labels_arr == c) for c in np.unique(labels_arr)] if stratify
              else [np.arange(len(labels_arr))])
    for idx in groups:
        idx = rng.permutation(idx)
        n = len(idx)
        n_dev = round(n * r[1])
        n_test = round(n * r[2]) if len(r) == 3 else 0
        n_train = n - n_dev - n_test
        parts["train"].append(idx[:n_train])
        parts["dev"].append(idx[n_train: n_train + n_dev])
        if len(r) == 3:
            parts["test"].append(idx[n_train + n_dev:])
    return {n: rng.permutation(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64)
            for n, p in parts.items()}


def _seeded_split(ds: datasets.Dataset, spec: TaskSpec, seed: int,
                  ratios: Sequence[float]) -> datasets.DatasetDict:
    index = stratified_split(column(ds, "label"), ratios, seed, stratify=not spec.is_regression)
    return datasets.DatasetDict({k: ds.select(v) for k, v in index.items()})


def split_hashes(dataset_dict: Mapping[str, datasets.Dataset],
                 task: TaskSpec | str) -> dict[str, str]:
    """SHA-256 of each split's rows in order: one ``json.dumps([texts..., label])`` per line.

    Pins a split exactly (rows, order and labels), whatever file or source it came from.
    """
    spec = get_task(task)
    out = {}
    for name, ds in dataset_dict.items():
        h = hashlib.sha256()
        columns = [column(ds, f) for f in (*spec.text_fields, "label")]
        for row in zip(*columns, strict=True):
            h.update(json.dumps(list(row), ensure_ascii=False).encode() + b"\n")
        out[name] = h.hexdigest()
    return out


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def hub_offline() -> str | None:
    """Name of the set offline environment variable (``HF_HUB_OFFLINE``...), else None."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def hub_skip_reason(name: str, allow_hub: bool) -> str | None:
    """Why the Hub copy ``name`` is not tried (a line for the "tried" list), or None."""
    if not allow_hub:
        return f"Hugging Face Hub {name}: skipped (allow_hub=False)"
    if offline := hub_offline():
        return f"Hugging Face Hub {name}: skipped ({offline} is set)"
    return None


def not_found(what: str, tried: list[str], advice: str) -> FileNotFoundError:
    """The error of a loader that found nothing: ``what``, the numbered list of places it
    ``tried`` (in order) and ``advice`` on how to provide the data."""
    lines = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    return FileNotFoundError(f"{what}. Tried, in order:\n{lines}\n{advice}")


def _normalise_files(files: Mapping[str, str | os.PathLike], spec: TaskSpec) -> dict[str, Path]:
    out: dict[str, Path] = {}
    allowed = {"train", "dev", "test", "all", *spec.local_splits}
    for key, value in files.items():
        if value is None:
            continue
        split = "dev" if key in ("validation", "valid") else key
        if split not in allowed:
            raise ValueError(f"unknown split {key!r} in files; use one of {sorted(allowed)}")
        out[split] = Path(value).expanduser()
    if not out:
        return out
    missing = [f"{k}={p}" for k, p in out.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"data files not found: {', '.join(missing)}")
    if "all" in out and len(out) > 1:
        raise ValueError("give either an 'all' file (split with a seed) or train/dev[/test] files")
    if "all" not in out and not {"train", "dev"} <= out.keys():
        raise ValueError(f"explicit files need both train and dev (or one 'all' file to split), "
                         f"got {sorted(out)}")
    return out


def _files_in_dir(data_dir: Path, spec: TaskSpec) -> tuple[dict[str, Path] | None, str]:
    """Find the task's files in a data directory; returns (files or None, what was tried)."""
    folders = [data_dir / d for d in spec.local_dirs]
    if data_dir.name.lower() in {d.lower() for d in spec.local_dirs}:
        folders.insert(0, data_dir)  # data_dir points at the task folder itself
    for folder in folders:
        if not folder.is_dir():
            continue
        found = {s: p for s in spec.local_splits
                 if (p := find_split_file(folder, _SPLIT_STEMS.get(s, (s,))))}
        if {"train", "dev"} <= found.keys():
            return found, str(folder)
        if (all_file := find_split_file(folder, _SPLIT_STEMS["all"])) is not None:
            return {"all": all_file}, str(folder)
    shown = ", ".join(str(f) for f in folders)
    return None, f"{shown} (looked for {{train,dev}}{{.jsonl,.tsv,.csv}} or all{{...}}): not found"


def _from_files(paths: dict[str, Path], spec: TaskSpec, seed: int,
                ratios: Sequence[float]) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    info: dict[str, Any] = {"paths": {k: str(p.resolve()) for k, p in paths.items()},
                            "sha256": {k: sha256_file(p) for k, p in paths.items()}}
    if "all" in paths:
        dd = _seeded_split(read_labelled_file(paths["all"], spec), spec, seed, ratios)
        info["split_by"] = "seeded_random" if spec.is_regression else "seeded_stratified"
    else:
        dd = datasets.DatasetDict({k: read_labelled_file(p, spec) for k, p in paths.items()})
        info["split_by"] = "given"
    return dd, info


def read_task_file(path: str | os.PathLike, task: TaskSpec | str) -> datasets.Dataset:
    """One labelled file (``.jsonl``/``.csv``/``.tsv``) of ``task`` as a Dataset."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return read_labelled_file(path, get_task(task))


def _from_hub(spec: TaskSpec, seed: int,
              ratios: Sequence[float]) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    raw = datasets.load_dataset(spec.hub_path, spec.hub_config)
    mapping = dict(spec.hub_splits) if spec.hub_splits else {s: s for s in raw}
    names = {n.lower(): i for i, n in enumerate(spec.label_names)}
    label_from = spec.hub_label_text_field or "label"

    def canonical(batch: dict[str, list]) -> dict[str, list]:
        out = {c: batch[h] for c, h in zip(spec.text_fields, spec.hub_text_fields, strict=True)}
        if spec.hub_label_text_field:
            unknown = sorted({str(t) for t in batch[label_from] if str(t).lower() not in names})
            if unknown:
                raise ValueError(f"{spec.hub_path}: label names {unknown} do not match "
                                 f"{spec.label_names}")
            out["label"] = [names[str(t).lower()] for t in batch[label_from]]
        else:
            out["label"] = batch["label"]
        return out

    splits = {}
    for hub_split, ours in mapping.items():
        ds = raw[hub_split]
        if not spec.is_regression:  # GLUE marks hidden labels with -1
            ds = ds.filter(lambda y: y >= 0, input_columns="label")
        splits[ours] = ds.map(canonical, batched=True, remove_columns=ds.column_names,
                              features=task_features(spec))
    info: dict[str, Any] = {"hub": spec.hub_id, "hub_splits": mapping}
    if spec.seeded_split:
        merged = datasets.concatenate_datasets(list(splits.values()))
        info["split_by"] = "seeded_stratified (Hub splits merged first)"
        return _seeded_split(merged, spec, seed, ratios), info
    info["split_by"] = "given"
    return datasets.DatasetDict(splits), info


# --------------------------------------------------------------------------------------------
# load_task
# --------------------------------------------------------------------------------------------


def load_task(name: str | TaskSpec, *, data_dir: str | os.PathLike | None = None,
              files: Mapping[str, str | os.PathLike] | None = None, seed: int = 42,
              split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
              allow_hub: bool = True) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """Load a task: a DatasetDict with ``train``, ``dev`` [and ``test``] splits, and an info dict.

    Sources in order: explicit ``files`` (split -> path, or ``{"all": path}`` to split with
    ``seed``/``split_ratios``), the data directory (``data_dir`` else ``$SPIKEBERT_DATA``), the
    copy bundled with the package, then the Hub. Raises FileNotFoundError naming every place
    tried when nothing is found.
    """
    spec = get_task(name)
    ratios = _check_ratios(split_ratios)
    tried: list[str] = []
    dd: datasets.DatasetDict | None = None
    info: dict[str, Any] = {}

    if explicit := _normalise_files(files or {}, spec):
        dd, info = _from_files(explicit, spec, seed, ratios)
        info["source"] = "files"
    else:
        tried.append("explicit files: none given (--train_file/--dev_file[/--test_file] or "
                     "--all_file)")

    if dd is None:
        if data_dir is not None:
            root, origin = Path(data_dir).expanduser(), "data_dir argument"
        elif os.environ.get(DATA_ENV_VAR):
            root, origin = Path(os.environ[DATA_ENV_VAR]).expanduser(), f"${DATA_ENV_VAR}"
        else:
            root, origin = None, ""
        if root is None:
            tried.append(f"data directory: none given (--data_dir) and ${DATA_ENV_VAR} is not set")
        elif (found := _files_in_dir(root, spec))[0] is None:
            tried.append(f"data directory from {origin}: {found[1]}")
        else:
            dd, info = _from_files(found[0], spec, seed, ratios)
            info.update(source="data_dir", data_dir=str(root.resolve()))

    if dd is None:
        found, where = _files_in_dir(SAMPLES_DIR, spec)
        if found is None:
            tried.append(f"bundled copies ({SAMPLES_DIR}): none for {spec.name!r}")
        else:
            dd, info = _from_files(found, spec, seed, ratios)
            info["source"] = "bundled"
            logger.warning("task %s: using the copy bundled with spikebert (%s; see its "
                           "README.md); pass --data_dir or set %s for another copy",
                           spec.name, where, DATA_ENV_VAR)

    if dd is None:
        if spec.hub_path is None:
            tried.append(f"Hugging Face Hub: no Hub dataset is configured for {spec.name!r}")
        elif skip := hub_skip_reason(spec.hub_id, allow_hub):
            tried.append(skip)
        else:
            try:
                dd, info = _from_hub(spec, seed, ratios)
                info["source"] = "hub"
            except Exception as e:  # the Hub fails in many ways (network, auth, scripts)
                tried.append(f"Hugging Face Hub {spec.hub_id}: failed ({type(e).__name__}: {e})")

    if dd is None:
        layout = "all.jsonl" if spec.seeded_split else "train.jsonl + dev.jsonl"
        raise not_found(
            f"no data found for task {spec.name!r}", tried,
            f"Provide data with --data_dir DIR (or the environment variable {DATA_ENV_VAR}=DIR) "
            f"where DIR/{spec.local_dirs[0]}/ holds {layout} (.csv/.tsv also work), or with "
            f"--train_file/--dev_file[/--test_file] (or --all_file for a seeded split).")

    info.update(
        task=spec.name, seed=seed,
        split_ratios=list(ratios) if info["split_by"].startswith("seeded") else None,
        split_sizes={k: len(v) for k, v in dd.items()},
        label_counts={k: np.bincount(np.asarray(column(v, "label"), dtype=np.int64),
                                     minlength=spec.num_labels).tolist()
                      for k, v in dd.items() if not spec.is_regression},
        split_sha256=split_hashes(dd, spec),
    )
    return dd, info

