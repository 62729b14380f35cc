"""Data layer for SpikeBERT: task registry, task loading, tokenisation and pre-training corpora.

Tasks
-----
``TASKS`` maps a task name to a :class:`TaskSpec`. Names:

* the six sets of Lv et al. (2023): ``mr``, ``sst2``, ``sst5``, ``subj`` (English) and
  ``chnsenti``, ``waimai`` (Chinese);
* GLUE (Hub: ``nyu-mll/glue``): ``cola``, ``mnli``, ``mrpc``, ``qnli``, ``qqp``, ``rte``,
  ``stsb``, ``wnli`` and ``glue_sst2``. GLUE's SST-2 is called ``glue_sst2`` because ``sst2`` is
  the sentence-level SST-2 of Kim (2014) used by Lv et al. Aliases such as ``glue/cola``,
  ``GLUE-SST2`` or ``sts-b`` are accepted (see :func:`get_task`).

Every loaded split has the canonical columns ``text`` (single sentence) or ``text_a`` and
``text_b`` (pairs), plus ``label`` (int class id; float for STS-B regression).

Where data comes from (:func:`load_task`), in this order; the first that has the task wins:

1. explicit files (``files={"train": ..., "dev": ..., "test": ...}`` or ``{"all": ...}``), as
   given by the recipes' ``--train_file/--dev_file/--test_file/--all_file`` flags; explicit files
   that do not exist are an error, never a silent fallback;
2. a data directory laid out like ``shared/data`` (``<dir>/<task>/train.jsonl`` + ``dev.jsonl``
   [+ ``test.jsonl``], or ``<dir>/<task>/all.jsonl``; ``.tsv``/``.csv`` also work): the
   ``data_dir`` argument (``--data_dir``), else the environment variable ``SPIKEBERT_DATA``;
3. the Hugging Face Hub (``datasets.load_dataset``), unless ``allow_hub=False`` or
   ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set, in which case it is skipped at once.

File formats: JSON Lines rows ``{"text": str, "label": int}`` (pairs: ``text_a``/``text_b``;
GLUE's own names ``sentence1``/``sentence2``, ``question``/``sentence``,
``question1``/``question2``, ``premise``/``hypothesis`` are accepted too), or CSV/TSV with a
header row using the same names (``review`` is accepted as the text column, so the original
ChnSenti/Waimai CSVs load as they are). Labels may be given as ids or as label names.

Splits: MR, Subj, ChnSenti and Waimai ship only ``all.jsonl``; they get a deterministic,
seeded, *stratified* split (default 80/10/10 train/dev/test): each class's rows are shuffled
with ``numpy.random.default_rng(seed)`` (classes in sorted order) and cut by the ratios, then
each split is shuffled once more with the same generator. SST-2/SST-5 have train + dev only (the
official test split is withheld): select and report on dev. GLUE test labels are hidden, so
GLUE tasks load train + dev (MNLI: dev = matched, plus ``dev_mismatched``). The info dict
returned with every load records the source, paths (with SHA-256), seed, ratios and split sizes
so recipes can save it next to each run.

Corpora (stage 1): :func:`load_corpus` resolves a text file, a folder of ``.txt`` files, a short
name in the data directory (``corpus_en``, ``corpus_zh``) or a Hub corpus (``wikitext``,
``wikitext2``, ``wikipedia``, ``wikipedia_zh``, ``bookcorpus``; large ones are streamed).
:func:`pack_corpus` tokenises with the teacher's tokenizer and packs the token stream into
``[CLS] ... [SEP]`` blocks of exactly ``seq_length`` tokens, cached on disk.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

__all__ = [
    "DATA_ENV_VAR",
    "HUB_CORPORA",
    "TASKS",
    "Corpus",
    "PackedCorpus",
    "TaskSpec",
    "add_data_arguments",
    "check_vocab_compatible",
    "compute_metrics",
    "files_from_args",
    "get_task",
    "hub_offline",
    "load_corpus",
    "load_task",
    "pack_corpus",
    "stratified_split",
    "tokenize_task",
]

DATA_ENV_VAR = "SPIKEBERT_DATA"
_EXTENSIONS = (".jsonl", ".tsv", ".csv")
_SINGLE_TEXT_ALIASES = ("text", "sentence", "review", "content")
_PAIR_TEXT_ALIASES = (
    ("text_a", "text_b"),
    ("sentence1", "sentence2"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
    ("#1 String", "#2 String"),
)
_LABEL_ALIASES = ("label", "labels", "gold_label", "score", "is_duplicate", "Quality")
# File stems looked for in a task folder, per split.
_SPLIT_STEMS = {
    "train": ("train",),
    "dev": ("dev", "validation", "valid", "dev_matched", "validation_matched"),
    "test": ("test",),
    "dev_mismatched": ("dev_mismatched", "validation_mismatched"),
    "all": ("all",),
}
_PACK_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Task registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a classification or regression task.

    ``text_fields`` are the canonical column names after loading (``("text",)`` or
    ``("text_a", "text_b")``); ``hub_text_fields`` are the matching column names on the Hub.
    ``num_labels`` is 1 for regression. ``metrics[0]`` is the metric used for model selection.
    ``seeded_split`` marks tasks with no official split (only ``all.jsonl``).
    ``hub_label_text_field`` names a Hub column of label strings that are mapped through
    ``label_names`` (guards against a Hub copy that numbers the classes differently).
    """

    name: str
    description: str
    language: str
    text_fields: tuple[str, ...]
    num_labels: int
    metrics: tuple[str, ...]
    label_names: tuple[str, ...] = ()
    problem_type: str = "single_label_classification"
    seeded_split: bool = False
    local_dirs: tuple[str, ...] = ()
    local_splits: tuple[str, ...] = ("train", "dev", "test")
    hub_path: str | None = None
    hub_config: str | None = None
    hub_text_fields: tuple[str, ...] = ()
    hub_splits: tuple[tuple[str, str], ...] = ()
    hub_label_text_field: str | None = None

    @property
    def is_pair(self) -> bool:
        """Whether examples are sentence pairs."""
        return len(self.text_fields) == 2

    @property
    def is_regression(self) -> bool:
        """Whether the label is a real number (STS-B)."""
        return self.problem_type == "regression"

    @property
    def primary_metric(self) -> str:
        """The metric used to select checkpoints."""
        return self.metrics[0]

    @property
    def hub_id(self) -> str | None:
        """``path`` or ``path/config`` on the Hub, for messages and info dicts."""
        if self.hub_path is None:
            return None
        return self.hub_path + (f" ({self.hub_config})" if self.hub_config else "")


_SINGLE = ("text",)
_PAIR = ("text_a", "text_b")
_TRAIN_DEV = (("train", "train"), ("validation", "dev"))
_BINARY_SENT = ("negative", "positive")


def _glue(
    name: str,
    description: str,
    hub_fields: tuple[str, ...],
    label_names: tuple[str, ...],
    metrics: tuple[str, ...] = ("accuracy",),
    *,
    config: str | None = None,
    dirs: tuple[str, ...] = (),
    hub_splits: tuple[tuple[str, str], ...] = _TRAIN_DEV,
    local_splits: tuple[str, ...] = ("train", "dev"),
    regression: bool = False,
) -> TaskSpec:
    return TaskSpec(
        name=name,
        description=description,
        language="en",
        text_fields=_SINGLE if len(hub_fields) == 1 else _PAIR,
        num_labels=1 if regression else len(label_names),
        metrics=metrics,
        label_names=label_names,
        problem_type="regression" if regression else "single_label_classification",
        local_dirs=(name, *dirs),
        local_splits=local_splits,
        hub_path="nyu-mll/glue",
        hub_config=config or name,
        hub_text_fields=hub_fields,
        hub_splits=hub_splits,
    )


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="mr",
            description="movie-review sentence polarity (Pang & Lee 2005)",
            language="en",
            text_fields=_SINGLE,
            num_labels=2,
            metrics=("accuracy",),
            label_names=_BINARY_SENT,
            seeded_split=True,
            local_dirs=("mr", "MR"),
            hub_path="cornell-movie-review-data/rotten_tomatoes",
            hub_text_fields=("text",),
        ),
        TaskSpec(
            name="sst2",
            description="SST binary, sentence level (Kim 2014 split; test withheld)",
            language="en",
            text_fields=_SINGLE,
            num_labels=2,
            metrics=("accuracy",),
            label_names=_BINARY_SENT,
            local_dirs=("sst2", "SST2", "sst-2"),
            hub_path="SetFit/sst2",
            hub_text_fields=("text",),
            hub_splits=_TRAIN_DEV,
            hub_label_text_field="label_text",
        ),
        TaskSpec(
            name="sst5",
            description="SST fine-grained, sentence level (test withheld)",
            language="en",
            text_fields=_SINGLE,
            num_labels=5,
            metrics=("accuracy",),
            label_names=("very negative", "negative", "neutral", "positive", "very positive"),
            local_dirs=("sst5", "SST5", "sst-5"),
            hub_path="SetFit/sst5",
            hub_text_fields=("text",),
            hub_splits=_TRAIN_DEV,
            hub_label_text_field="label_text",
        ),
        TaskSpec(
            name="subj",
            description="subjectivity (Pang & Lee 2004); 0 = subjective, 1 = objective",
            language="en",
            text_fields=_SINGLE,
            num_labels=2,
            metrics=("accuracy",),
            label_names=("subjective", "objective"),
            seeded_split=True,
            local_dirs=("subj", "SUBJ"),
            hub_path="SetFit/subj",
            hub_text_fields=("text",),
            hub_label_text_field="label_text",
        ),
        TaskSpec(
            name="chnsenti",
            description="ChnSentiCorp hotel-review sentiment (Chinese); no Hub copy configured",
            language="zh",
            text_fields=_SINGLE,
            num_labels=2,
            metrics=("accuracy",),
            label_names=_BINARY_SENT,
            seeded_split=True,
            local_dirs=("chnsenti", "ChnSenti", "ChnSentiCorp"),
        ),
        TaskSpec(
            name="waimai",
            description="waimai_10k food-delivery review sentiment (Chinese); no Hub copy",
            language="zh",
            text_fields=_SINGLE,
            num_labels=2,
            metrics=("accuracy",),
            label_names=_BINARY_SENT,
            seeded_split=True,
            local_dirs=("waimai", "waimai_10k"),
        ),
        _glue(
            "cola",
            "GLUE CoLA acceptability",
            ("sentence",),
            ("unacceptable", "acceptable"),
            ("matthews_correlation", "accuracy"),
            dirs=("CoLA",),
        ),
        _glue(
            "glue_sst2",
            "GLUE SST-2 (phrase-level train, sentence-level dev)",
            ("sentence",),
            _BINARY_SENT,
            config="sst2",
            dirs=("SST-2",),
        ),
        _glue(
            "mnli",
            "GLUE MultiNLI; dev = matched, dev_mismatched also loaded",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            dirs=("MNLI",),
            hub_splits=(
                ("train", "train"),
                ("validation_matched", "dev"),
                ("validation_mismatched", "dev_mismatched"),
            ),
            local_splits=("train", "dev", "dev_mismatched"),
        ),
        _glue(
            "mrpc",
            "GLUE MRPC paraphrase",
            ("sentence1", "sentence2"),
            ("not_equivalent", "equivalent"),
            ("accuracy", "f1"),
            dirs=("MRPC",),
        ),
        _glue(
            "qnli",
            "GLUE QNLI",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
            dirs=("QNLI",),
        ),
        _glue(
            "qqp",
            "GLUE QQP duplicate questions",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            ("accuracy", "f1"),
            dirs=("QQP",),
        ),
        _glue(
            "rte",
            "GLUE RTE",
            ("sentence1", "sentence2"),
            ("entailment", "not_entailment"),
            dirs=("RTE",),
        ),
        _glue(
            "stsb",
            "GLUE STS-B similarity (regression, 0..5)",
            ("sentence1", "sentence2"),
            (),
            ("pearson", "spearmanr"),
            dirs=("STS-B",),
            regression=True,
        ),
        _glue(
            "wnli",
            "GLUE WNLI",
            ("sentence1", "sentence2"),
            ("not_entailment", "entailment"),
            dirs=("WNLI",),
        ),
    )
}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Return the :class:`TaskSpec` for ``name``; raises ValueError listing the known tasks.

    Names are case-insensitive; ``-``, ``/`` and ``_`` are normalised, so ``glue/cola``,
    ``GLUE-SST2`` (-> ``glue_sst2``), ``sts-b`` and ``SST-2`` (-> ``sst2``) all resolve.
    """
    if isinstance(name, TaskSpec):
        return name
    key = name.strip().lower().replace("/", "_").replace("-", "_")
    if key.startswith("glue_"):
        rest = key[5:].replace("_", "")
        key = "glue_sst2" if rest == "sst2" else rest
    else:
        key = key.replace("_", "")
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _resolve_fields(keys: Iterable[str], spec: TaskSpec, path: Path) -> tuple[list[str], str]:
    """Pick the text and label columns of a file from its first row's keys."""
    keyset = set(keys)
    if spec.is_pair:
        text_cols = next((list(p) for p in _PAIR_TEXT_ALIASES if set(p) <= keyset), None)
        wanted = " / ".join("+".join(p) for p in _PAIR_TEXT_ALIASES)
    else:
        text_cols = next(([a] for a in _SINGLE_TEXT_ALIASES if a in keyset), None)
        wanted = " / ".join(_SINGLE_TEXT_ALIASES)
    if text_cols is None:
        raise ValueError(
            f"{path}: no text column for task {spec.name!r}; expected one of {wanted}, "
            f"found {sorted(keyset)}"
        )
    label_col = next((a for a in _LABEL_ALIASES if a in keyset), None)
    if label_col is None:
        raise ValueError(
            f"{path}: missing field 'label' (accepted names: {', '.join(_LABEL_ALIASES)}); "
            f"found {sorted(keyset)}"
        )
    return text_cols, label_col


def _parse_label(value: Any, spec: TaskSpec) -> int | float:
    """Turn a raw label (id, numeric string or label name) into an int id or a float."""
    if spec.is_regression:
        return float(value)
    if isinstance(value, bool):
        raise ValueError(f"boolean label {value!r}")
    if isinstance(value, int):
        label = value
    elif isinstance(value, float) and value.is_integer():
        label = int(value)
    elif isinstance(value, str):
        s = value.strip()
        names = {n.lower(): i for i, n in enumerate(spec.label_names)}
        if s.lower() in names:
            label = names[s.lower()]
        else:
            try:
                label = int(s)
            except ValueError:
                raise ValueError(
                    f"label {value!r} is neither an integer nor one of {list(spec.label_names)}"
                ) from None
    else:
        raise ValueError(f"label {value!r} has unsupported type {type(value).__name__}")
    if not 0 <= label < spec.num_labels:
        raise ValueError(f"label {label} outside [0, {spec.num_labels}) for task {spec.name!r}")
    return label


def _raw_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` from a .jsonl, .csv or .tsv file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
                yield lineno, row
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig", newline="") as f:
            if suffix == ".tsv":
                reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.DictReader(f)
            for row in reader:
                yield reader.line_num, row
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .csv or .tsv")


def _read_task_file(path: Path, spec: TaskSpec) -> dict[str, list]:
    """Read one split file into canonical columns; ValueError names file, line and field."""
    columns: dict[str, list] = {f: [] for f in spec.text_fields}
    columns["label"] = []
    text_cols: list[str] | None = None
    label_col = ""
    for lineno, row in _raw_rows(path):
        if text_cols is None:
            text_cols, label_col = _resolve_fields(row.keys(), spec, path)
        for canon, col in zip(spec.text_fields, text_cols, strict=True):
            value = row.get(col)
            if value is None:
                raise ValueError(f"{path}:{lineno}: missing field {col!r}")
            if not isinstance(value, str):
                raise ValueError(f"{path}:{lineno}: field {col!r} is not a string: {value!r}")
            columns[canon].append(value)
        raw_label = row.get(label_col)
        if raw_label is None or raw_label == "":
            raise ValueError(f"{path}:{lineno}: missing field {label_col!r}")
        try:
            columns["label"].append(_parse_label(raw_label, spec))
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: field {label_col!r}: {e}") from None
    if text_cols is None:
        raise ValueError(f"{path}: no rows")
    return columns


def _features(spec: TaskSpec) -> datasets.Features:
    feats: dict[str, Any] = {f: datasets.Value("string") for f in spec.text_fields}
    if spec.is_regression:
        feats["label"] = datasets.Value("float32")
    else:
        feats["label"] = datasets.ClassLabel(names=list(spec.label_names))
    return datasets.Features(feats)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    r = tuple(float(x) for x in ratios)
    if len(r) not in (2, 3) or any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise ValueError(
            f"split_ratios must be 2 or 3 non-negative numbers (train, dev[, test]) summing to "
            f"1, got {ratios!r}"
        )
    if r[0] == 0 or r[1] == 0:
        raise ValueError(f"split_ratios need non-zero train and dev parts, got {ratios!r}")
    return r


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    *,
    stratify: bool = True,
) -> dict[str, np.ndarray]:
    """Deterministic (stratified) split of row indices into train/dev[/test].

    For each class (sorted), its row indices are shuffled with ``np.random.default_rng(seed)``
    and cut: ``round(n*dev)`` rows go to dev, ``round(n*test)`` to test, the rest to train.
    Each split is then shuffled with the same generator, so rows are not grouped by class.
    With ``stratify=False`` (regression) all rows form one group.
    """
    r = _check_ratios(ratios)
    names = ("train", "dev", "test")[: len(r)]
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    groups = (
        [np.flatnonzero(labels_arr == c) for c in np.unique(labels_arr)]
        if stratify
        else [np.arange(len(labels_arr))]
    )
    for idx in groups:
        idx = rng.permutation(idx)
        n = len(idx)
        n_dev = round(n * r[1])
        n_test = round(n * r[2]) if len(r) == 3 else 0
        n_train = n - n_dev - n_test
        parts["train"].append(idx[:n_train])
        parts["dev"].append(idx[n_train : n_train + n_dev])
        if len(r) == 3:
            parts["test"].append(idx[n_train + n_dev :])
    return {
        n: rng.permutation(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64)
        for n, p in parts.items()
    }


def _split_columns(columns: dict[str, list], index: np.ndarray) -> dict[str, list]:
    return {k: [v[i] for i in index] for k, v in columns.items()}


# --------------------------------------------------------------------------------------------
# load_task
# --------------------------------------------------------------------------------------------


def hub_offline() -> str | None:
    """Name of the set offline environment variable (``HF_HUB_OFFLINE``...), else None."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


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
        raise ValueError(
            f"explicit files need both train and dev (or one 'all' file to split), got "
            f"{sorted(out)}"
        )
    return out


def _find_split_file(folder: Path, split: str) -> Path | None:
    for stem in _SPLIT_STEMS.get(split, (split,)):
        for ext in _EXTENSIONS:
            p = folder / f"{stem}{ext}"
            if p.is_file():
                return p
    return None


def _files_in_dir(data_dir: Path, spec: TaskSpec) -> tuple[dict[str, Path] | None, str]:
    """Find the task's files in a data directory; returns (files or None, what was tried)."""
    folders = [data_dir / d for d in spec.local_dirs]
    if data_dir.name.lower() in {d.lower() for d in spec.local_dirs}:
        folders.insert(0, data_dir)  # data_dir points at the task folder itself
    for folder in folders:
        if not folder.is_dir():
            continue
        found = {s: p for s in spec.local_splits if (p := _find_split_file(folder, s))}
        if {"train", "dev"} <= found.keys():
            return found, str(folder)
        all_file = _find_split_file(folder, "all")
        if all_file is not None:
            return {"all": all_file}, str(folder)
    pattern = "{train,dev}" + "{" + ",".join(_EXTENSIONS) + "}"
    shown = ", ".join(str(f) for f in folders)
    return None, f"{shown} (looked for {pattern} or all{{...}}): not found"


def _dataset_from_files(
    paths: dict[str, Path], spec: TaskSpec, seed: int, ratios: Sequence[float]
) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    info: dict[str, Any] = {
        "paths": {k: str(p.resolve()) for k, p in paths.items()},
        "sha256": {k: _sha256(p) for k, p in paths.items()},
    }
    feats = _features(spec)
    if "all" in paths:
        columns = _read_task_file(paths["all"], spec)
        index = stratified_split(columns["label"], ratios, seed, stratify=not spec.is_regression)
        splits = {k: _split_columns(columns, v) for k, v in index.items()}
        info["split_by"] = "seeded_stratified" if not spec.is_regression else "seeded_random"
    else:
        splits = {k: _read_task_file(p, spec) for k, p in paths.items()}
        info["split_by"] = "given"
    dd = datasets.DatasetDict(
        {k: datasets.Dataset.from_dict(v, features=feats) for k, v in splits.items()}
    )
    return dd, info


def read_task_file(path: str | os.PathLike, task: TaskSpec | str) -> datasets.Dataset:
    """One labelled file (``.jsonl``/``.csv``/``.tsv``) of ``task`` as a Dataset."""
    spec = get_task(task)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return datasets.Dataset.from_dict(_read_task_file(path, spec), features=_features(spec))


def _dataset_from_hub(
    spec: TaskSpec, seed: int, ratios: Sequence[float]
) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    raw = datasets.load_dataset(spec.hub_path, spec.hub_config)
    mapping = dict(spec.hub_splits) if spec.hub_splits else {s: s for s in raw}
    columns_by_split: dict[str, dict[str, list]] = {}
    names = {n.lower(): i for i, n in enumerate(spec.label_names)}
    for hub_split, ours in mapping.items():
        ds = raw[hub_split]
        cols: dict[str, list] = {
            canon: list(ds[hub_col])
            for canon, hub_col in zip(spec.text_fields, spec.hub_text_fields, strict=True)
        }
        if spec.hub_label_text_field:
            texts = ds[spec.hub_label_text_field]
            unknown = sorted({t for t in texts if str(t).lower() not in names})
            if unknown:
                raise ValueError(
                    f"{spec.hub_path}: label names {unknown} do not match {spec.label_names}"
                )
            cols["label"] = [names[str(t).lower()] for t in texts]
        else:
            cols["label"] = list(ds["label"])
        keep = [i for i, y in enumerate(cols["label"]) if spec.is_regression or y >= 0]
        columns_by_split[ours] = _split_columns(cols, np.asarray(keep, dtype=np.int64))
    info: dict[str, Any] = {"hub": spec.hub_id, "hub_splits": mapping}
    if spec.seeded_split:
        merged: dict[str, list] = {k: [] for k in (*spec.text_fields, "label")}
        for cols in columns_by_split.values():
            for k, values in cols.items():
                merged[k].extend(values)
        index = stratified_split(merged["label"], ratios, seed, stratify=not spec.is_regression)
        columns_by_split = {k: _split_columns(merged, v) for k, v in index.items()}
        info["split_by"] = "seeded_stratified (Hub splits merged first)"
    else:
        info["split_by"] = "given"
    feats = _features(spec)
    dd = datasets.DatasetDict(
        {k: datasets.Dataset.from_dict(v, features=feats) for k, v in columns_by_split.items()}
    )
    return dd, info


def load_task(
    name: str | TaskSpec,
    *,
    data_dir: str | os.PathLike | None = None,
    files: Mapping[str, str | os.PathLike] | None = None,
    seed: int = 42,
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
    allow_hub: bool = True,
) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """Load a task: a DatasetDict with ``train``, ``dev`` [and ``test``] splits, and an info dict.

    Sources in order: explicit ``files`` (split -> path, or ``{"all": path}`` to split with
    ``seed``/``split_ratios``), the data directory (``data_dir`` else ``$SPIKEBERT_DATA``),
    then the Hub. Raises FileNotFoundError naming every place tried when nothing is found.
    """
    spec = get_task(name)
    ratios = _check_ratios(split_ratios)
    tried: list[str] = []
    dd: datasets.DatasetDict | None = None
    info: dict[str, Any] = {}

    explicit = _normalise_files(files or {}, spec)
    if explicit:
        dd, info = _dataset_from_files(explicit, spec, seed, ratios)
        info["source"] = "files"
    else:
        tried.append(
            "explicit files: none given (--train_file/--dev_file[/--test_file] or --all_file)"
        )

    if dd is None:
        if data_dir is not None:
            root, origin = Path(data_dir).expanduser(), "data_dir argument"
        elif os.environ.get(DATA_ENV_VAR):
            root, origin = Path(os.environ[DATA_ENV_VAR]).expanduser(), f"${DATA_ENV_VAR}"
        else:
            root, origin = None, ""
        if root is None:
            tried.append(f"data directory: none given (--data_dir) and ${DATA_ENV_VAR} is not set")
        else:
            found, where = _files_in_dir(root, spec)
            if found is None:
                tried.append(f"data directory from {origin}: {where}")
            else:
                dd, info = _dataset_from_files(found, spec, seed, ratios)
                info["source"] = "data_dir"
                info["data_dir"] = str(root.resolve())

    if dd is None:
        offline = hub_offline()
        if spec.hub_path is None:
            tried.append(f"Hugging Face Hub: no Hub dataset is configured for {spec.name!r}")
        elif not allow_hub:
            tried.append(f"Hugging Face Hub {spec.hub_id}: skipped (allow_hub=False)")
        elif offline:
            tried.append(f"Hugging Face Hub {spec.hub_id}: skipped ({offline} is set)")
        else:
            try:
                dd, info = _dataset_from_hub(spec, seed, ratios)
                info["source"] = "hub"
            except Exception as e:  # the Hub fails in many ways (network, auth, scripts)
                tried.append(f"Hugging Face Hub {spec.hub_id}: failed ({type(e).__name__}: {e})")

    if dd is None:
        layout = "all.jsonl" if spec.seeded_split else "train.jsonl + dev.jsonl"
        lines = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
        raise FileNotFoundError(
            f"no data found for task {spec.name!r}. Tried, in order:\n{lines}\n"
            f"Provide data with --data_dir DIR (or the environment variable {DATA_ENV_VAR}=DIR) "
            f"where DIR/{spec.local_dirs[0]}/ holds {layout} (.csv/.tsv also work), or with "
            f"--train_file/--dev_file[/--test_file] (or --all_file for a seeded split)."
        )

    info.update(
        {
            "task": spec.name,
            "seed": seed,
            "split_ratios": list(ratios) if info["split_by"].startswith("seeded") else None,
            "split_sizes": {k: len(v) for k, v in dd.items()},
            "label_counts": {
                k: np.bincount(
                    np.asarray(list(v["label"]), dtype=np.int64), minlength=spec.num_labels
                ).tolist()
                for k, v in dd.items()
                if not spec.is_regression
            },
        }
    )
    return dd, info


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the standard data flags (``--data_dir``, ``--train_file``...) to a recipe's parser."""
    g = parser.add_argument_group("data")
    g.add_argument("--data_dir", default=None, help=f"data folder (default: ${DATA_ENV_VAR})")
    g.add_argument("--train_file", default=None, help=".jsonl/.csv/.tsv training file")
    g.add_argument("--dev_file", default=None, help="dev file (with --train_file)")
    g.add_argument("--test_file", default=None, help="optional test file")
    g.add_argument("--all_file", default=None, help="one file to split train/dev/test by seed")
    g.add_argument("--split_seed", type=int, default=42, help="seed of the train/dev/test split")
    g.add_argument("--no_hub", action="store_true", help="never try the Hugging Face Hub")
    return parser


def files_from_args(args: argparse.Namespace) -> dict[str, str] | None:
    """Map parsed ``--train_file``-style flags to the ``files`` argument of :func:`load_task`."""
    names = {"train": "train_file", "dev": "dev_file", "test": "test_file", "all": "all_file"}
    files = {k: getattr(args, a) for k, a in names.items() if getattr(args, a, None)}
    return files or None


# --------------------------------------------------------------------------------------------
# Tokenisation, metrics, vocabulary check
# --------------------------------------------------------------------------------------------


def tokenize_task(
    dataset_dict: datasets.DatasetDict,
    tokenizer: Any,
    max_length: int,
    task_spec: TaskSpec | str,
    *,
    padding: str | bool = "max_length",
) -> datasets.DatasetDict:
    """Tokenise every split (pairs as two segments) into torch-format columns.

    Output columns: ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the tokenizer
    makes them) and ``labels``. Padding defaults to ``max_length`` because the SpikeBERT student
    has no attention mask and pools over all positions (SPEC §2).
    """
    spec = get_task(task_spec)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[f] for f in spec.text_fields]
        enc = tokenizer(*texts, truncation=True, max_length=max_length, padding=padding)
        out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        out["labels"] = batch["label"]
        return out

    out = datasets.DatasetDict()
    for split, ds in dataset_dict.items():
        missing = [c for c in (*spec.text_fields, "label") if c not in ds.column_names]
        if missing:
            raise ValueError(f"split {split!r} lacks columns {missing} for task {spec.name!r}")
        out[split] = ds.map(encode, batched=True, remove_columns=ds.column_names)
    out.set_format("torch")
    return out


def check_vocab_compatible(tokenizer: Any, vocab_size: int) -> None:
    """Raise ValueError unless every id of ``tokenizer`` fits a ``vocab_size``-row embedding."""
    n = len(tokenizer)
    if vocab_size <= 0 or n > vocab_size:
        raise ValueError(
            f"tokenizer/model vocabulary mismatch: the tokenizer has {n} tokens but the model's "
            f"vocab_size is {vocab_size}; use the teacher's tokenizer and a student with "
            f"vocab_size >= {n}"
        )


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as scipy.stats.rankdata."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def compute_metrics(
    task_spec: TaskSpec | str, predictions: Sequence | np.ndarray, labels: Sequence | np.ndarray
) -> dict[str, float]:
    """Compute the task's metrics (``task_spec.metrics``) from predictions or logits.

    2-D ``predictions`` are logits (argmax for classification, squeezed for regression).
    Names follow the GLUE metric: ``accuracy``, ``f1`` (class 1 positive),
    ``matthews_correlation``, ``pearson``, ``spearmanr``.
    """
    spec = get_task(task_spec)
    pred = np.asarray(predictions)
    y = np.asarray(labels)
    if spec.is_regression:
        pred = pred.reshape(len(y)).astype(np.float64)
        y = y.astype(np.float64)
    elif pred.ndim == 2:
        pred = pred.argmax(-1)
    out: dict[str, float] = {}
    for m in spec.metrics:
        if m == "accuracy":
            out[m] = float((pred == y).mean())
        elif m == "f1":
            tp = int(((pred == 1) & (y == 1)).sum())
            fp = int(((pred == 1) & (y != 1)).sum())
            fn = int(((pred != 1) & (y == 1)).sum())
            out[m] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        elif m == "matthews_correlation":
            k = max(spec.num_labels, int(max(pred.max(), y.max())) + 1)
            cm = np.zeros((k, k), dtype=np.float64)
            np.add.at(cm, (y.astype(int), pred.astype(int)), 1)
            t, p, c, s = cm.sum(1), cm.sum(0), np.trace(cm), cm.sum()
            denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
            out[m] = float((c * s - t @ p) / denom) if denom > 0 else 0.0
        elif m == "pearson":
            out[m] = _pearson(pred, y)
        elif m == "spearmanr":
            out[m] = _pearson(_rankdata(pred), _rankdata(y))
        else:  # pragma: no cover - registry and this function are kept in step by tests
            raise ValueError(f"unknown metric {m!r}")
    return out


# --------------------------------------------------------------------------------------------
# Unlabelled corpora
# --------------------------------------------------------------------------------------------

# short name -> (Hub path, config, streaming)
HUB_CORPORA: dict[str, tuple[str, str | None, bool]] = {
    "wikitext": ("Salesforce/wikitext", "wikitext-103-raw-v1", False),
    "wikitext103": ("Salesforce/wikitext", "wikitext-103-raw-v1", False),
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-raw-v1", False),
    "wikipedia": ("wikimedia/wikipedia", "20231101.en", True),
    "wikipedia_en": ("wikimedia/wikipedia", "20231101.en", True),
    "wikipedia_zh": ("wikimedia/wikipedia", "20231101.zh", True),
    "bookcorpus": ("bookcorpus/bookcorpus", None, True),
}


@dataclass
class Corpus:
    """An unlabelled text corpus: local ``files`` or a Hub ``dataset`` with a ``text`` column."""

    name: str
    files: tuple[Path, ...] = ()
    hub: str | None = None
    dataset: Any = None

    def iter_texts(self) -> Iterator[str]:
        """Yield non-empty lines (paragraphs) of the corpus, stripped."""
        if self.files:
            for path in self.files:
                with path.open(encoding="utf-8") as f:
                    for line in f:
                        if line := line.strip():
                            yield line
        else:
            for row in self.dataset:
                for line in str(row["text"]).split("\n"):
                    if line := line.strip():
                        yield line

    def fingerprint(self) -> str | None:
        """Cache key: file paths, sizes and mtimes, or the Hub id; None if unknown."""
        if self.files:
            parts = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.files]
            return _hash_json(parts)
        if self.hub:
            return _hash_json(["hub", self.hub, getattr(self.dataset, "_fingerprint", None)])
        return None


def _hash_json(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def load_corpus(
    spec: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    allow_hub: bool = True,
) -> Corpus:
    """Resolve an unlabelled corpus.

    ``spec`` is, in the order tried: a text file; a folder (all ``*.txt`` below it, sorted); a
    folder name inside the data directory (``data_dir`` else ``$SPIKEBERT_DATA``), e.g.
    ``corpus_en``; a Hub corpus (a key of :data:`HUB_CORPORA` or ``owner/name[:config]``).
    """
    tried: list[str] = []
    candidates = [Path(spec).expanduser()]
    root = data_dir if data_dir is not None else os.environ.get(DATA_ENV_VAR)
    if root:
        candidates.append(Path(root).expanduser() / str(spec))
    else:
        tried.append(f"data directory: none given (--data_dir) and ${DATA_ENV_VAR} is not set")
    for path in candidates:
        if path.is_file():
            return Corpus(name=path.stem, files=(path,))
        if path.is_dir():
            files = tuple(sorted(p for p in path.rglob("*.txt") if p.is_file()))
            if files:
                return Corpus(name=path.name, files=files)
            tried.append(f"{path}: folder has no .txt files")
        else:
            tried.append(f"{path}: not found")

    key = str(spec).strip().lower()
    hub: tuple[str, str | None, bool] | None = HUB_CORPORA.get(key)
    if hub is None and "/" in str(spec) and not Path(spec).is_absolute():
        path_, _, config = str(spec).partition(":")
        hub = (path_, config or None, False)
    if hub is None:
        tried.append(f"Hugging Face Hub: {spec!r} is not one of {sorted(HUB_CORPORA)}")
    elif not allow_hub:
        tried.append(f"Hugging Face Hub {hub[0]}: skipped (allow_hub=False)")
    elif offline := hub_offline():
        tried.append(f"Hugging Face Hub {hub[0]}: skipped ({offline} is set)")
    else:
        path_, config, streaming = hub
        try:
            ds = datasets.load_dataset(path_, config, split="train", streaming=streaming)
        except Exception as e:  # network, auth, missing dataset...
            tried.append(f"Hugging Face Hub {path_}: failed ({type(e).__name__}: {e})")
        else:
            hub_id = path_ + (f":{config}" if config else "")
            return Corpus(name=key.replace("/", "_"), hub=hub_id, dataset=ds)

    lines = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    raise FileNotFoundError(
        f"corpus {str(spec)!r} not found. Tried, in order:\n{lines}\n"
        f"Pass a text file or a folder of .txt files, or a name such as corpus_en with --data_dir "
        f"DIR (or {DATA_ENV_VAR}=DIR), or a Hub corpus ({', '.join(sorted(HUB_CORPORA))})."
    )


@dataclass
class PackedCorpus:
    """Fixed-length token blocks ``[CLS] ... [SEP]`` usable as a map-style torch dataset.

    ``blocks`` is an ``int32`` array ``[num_blocks, seq_length]`` (a memory map when loaded from
    the cache); ``indices`` selects rows of it (for held-out splits). Items are dicts of int64
    tensors ``input_ids``, ``attention_mask`` (all ones) and ``token_type_ids`` (zeros).
    """

    blocks: np.ndarray
    indices: np.ndarray | None = None
    from_cache: bool = False
    cache_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def seq_length(self) -> int:
        """Tokens per block."""
        return int(self.blocks.shape[1])

    def __len__(self) -> int:
        return len(self.blocks) if self.indices is None else len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        row = self.blocks[i if self.indices is None else self.indices[i]]
        ids = torch.from_numpy(np.asarray(row, dtype=np.int64))
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids),
        }

    def split_holdout(self, fraction: float, seed: int = 0) -> tuple[PackedCorpus, PackedCorpus]:
        """Deterministic (seeded) random split into (train, held-out) blocks.

        The held-out part has ``round(fraction * len)`` blocks, at least one when
        ``fraction > 0`` and there are two or more blocks; it feeds the periodic held-out
        alignment loss of stage 1.
        """
        if not 0 <= fraction < 1:
            raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
        base = np.arange(len(self.blocks)) if self.indices is None else np.asarray(self.indices)
        n_hold = round(fraction * len(base))
        if fraction > 0 and len(base) >= 2:
            n_hold = max(1, n_hold)
        perm = np.random.default_rng(seed).permutation(len(base))
        hold, train = np.sort(base[perm[:n_hold]]), np.sort(base[perm[n_hold:]])
        return (
            PackedCorpus(self.blocks, train, self.from_cache, self.cache_path, self.meta),
            PackedCorpus(self.blocks, hold, self.from_cache, self.cache_path, self.meta),
        )


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # drop per-call state (truncation/padding change when the tokenizer is called)
        state_dict = json.loads(backend.to_str())
        state_dict.pop("truncation", None)
        state_dict.pop("padding", None)
        state = json.dumps(state_dict, sort_keys=True)
    else:
        state = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return _hash_json([type(tokenizer).__name__, state, tokenizer.cls_token, tokenizer.sep_token])


def _iter_texts(source: Any) -> Iterator[str]:
    if isinstance(source, Corpus):
        yield from source.iter_texts()
    elif isinstance(source, str):
        raise TypeError("pack_corpus takes a Corpus, a list of strings or a dataset, not a str")
    elif isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        yield from Corpus(name="dataset", dataset=source).iter_texts()
    else:
        for text in source:
            if text := str(text).strip():
                yield text


def pack_corpus(
    texts_or_dataset: Corpus | Sequence[str] | datasets.Dataset | datasets.IterableDataset,
    tokenizer: Any,
    seq_length: int,
    cache_dir: str | os.PathLike | None = None,
    *,
    max_blocks: int | None = None,
    batch_size: int = 1000,
) -> PackedCorpus:
    """Tokenise a corpus with the teacher's tokenizer and pack it into fixed-length blocks.

    Lines are tokenised without special tokens and concatenated into one stream, cut into
    pieces of ``seq_length - 2`` tokens, each wrapped as ``[CLS] piece [SEP]``; the incomplete
    tail is dropped. ``max_blocks`` caps the result (needed for streamed Hub corpora).
    With ``cache_dir`` the blocks are saved as ``.npy`` keyed by the corpus fingerprint (file
    names, sizes and mtimes; or a content hash for in-memory texts), the tokenizer's vocabulary
    and settings hash, ``seq_length`` and ``max_blocks``; a second call loads them memory-mapped.
    """
    if seq_length < 3:
        raise ValueError(f"seq_length must be at least 3, got {seq_length}")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError("pack_corpus needs a tokenizer with [CLS] and [SEP] tokens (BERT-style)")

    source_key: str | None
    if isinstance(texts_or_dataset, Corpus):
        source_key = texts_or_dataset.fingerprint()
    elif isinstance(texts_or_dataset, datasets.Dataset):
        source_key = _hash_json(["dataset", texts_or_dataset._fingerprint])
    elif isinstance(texts_or_dataset, Sequence) and not isinstance(texts_or_dataset, str):
        source_key = _hash_json(["texts", list(texts_or_dataset)])
    else:
        source_key = None

    cache_path: Path | None = None
    meta: dict[str, Any] = {
        "format": _PACK_FORMAT_VERSION,
        "source": source_key,
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "tokenizer_name": getattr(tokenizer, "name_or_path", ""),
        "seq_length": seq_length,
        "max_blocks": max_blocks,
    }
    if cache_dir is not None and source_key is not None:
        key = _hash_json({k: v for k, v in meta.items() if k != "tokenizer_name"})[:24]
        cache_path = Path(cache_dir) / f"packed-{key}.npy"
        if cache_path.is_file():
            blocks = np.load(cache_path, mmap_mode="r")
            return PackedCorpus(blocks, from_cache=True, cache_path=cache_path, meta=meta)

    body = seq_length - 2
    cls_id, sep_id = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
    chunks: list[np.ndarray] = []
    n_blocks = 0
    buffer: list[int] = []

    def full() -> bool:
        return max_blocks is not None and n_blocks >= max_blocks

    def add(batch: list[str]) -> None:
        nonlocal buffer, n_blocks
        for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
            buffer.extend(ids)
        n = len(buffer) // body
        if max_blocks is not None:
            n = min(n, max_blocks - n_blocks)
        if n > 0:
            block = np.empty((n, seq_length), dtype=np.int32)
            block[:, 0], block[:, -1] = cls_id, sep_id
            block[:, 1:-1] = np.asarray(buffer[: n * body], dtype=np.int32).reshape(n, body)
            chunks.append(block)
            n_blocks += n
            buffer = buffer[n * body :]

    batch: list[str] = []
    for text in _iter_texts(texts_or_dataset):
        batch.append(text)
        if len(batch) == batch_size:
            add(batch)
            batch = []
            if full():
                break
    if batch and not full():
        add(batch)
    blocks = np.concatenate(chunks) if chunks else np.zeros((0, seq_length), dtype=np.int32)
    meta["num_blocks"] = len(blocks)

    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f"{cache_path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, blocks)
        os.replace(tmp, cache_path)
        cache_path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return PackedCorpus(blocks, from_cache=False, cache_path=cache_path, meta=meta)
