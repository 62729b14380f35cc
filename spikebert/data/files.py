"""Reading labelled task files with ``datasets`` and checking them row by row.

JSON Lines go through ``load_dataset("json")``, CSV/TSV through ``load_dataset("csv")`` with
every column read as a string (so ``NA`` or ``123`` stay text). The columns are then renamed
to the canonical ``text`` / ``text_a`` + ``text_b`` / ``label``, labels given by name are
mapped to ids, and the label column is cast to ``ClassLabel`` (``float32`` for regression).
Every error names the file and the line: when the loader fails (bad UTF-8, bad JSON) the file
is scanned once to find the offending line.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets

from .registry import TaskSpec

__all__ = ["check_utf8", "column", "read_labelled_file", "sha256_file", "task_features"]

SINGLE_TEXT_ALIASES = ("text", "sentence", "review", "content")
PAIR_TEXT_ALIASES = (
    ("text_a", "text_b"),
    ("sentence1", "sentence2"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
    ("#1 String", "#2 String"),
)
LABEL_ALIASES = ("label", "labels", "gold_label", "score", "is_duplicate", "Quality")
EXTENSIONS = (".jsonl", ".tsv", ".csv")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes (recorded with every run)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_utf8(path: Path) -> None:
    """Raise ValueError naming file, line and byte if ``path`` is not valid UTF-8."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1}); convert the file to UTF-8, e.g. iconv -f cp1252 -t utf-8"
                ) from None


def _diagnose_jsonl(path: Path) -> None:
    """Find the first line that is not JSON or not an object."""
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


def _csv_options(path: Path) -> dict[str, Any]:
    """``load_dataset("csv")`` options: every column a string, no NA guessing, TSV unquoted."""
    check_utf8(path)  # read the header below; pandas would fail later without a line number
    tsv = path.suffix.lower() == ".tsv"
    with path.open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f, delimiter="\t" if tsv else ",",
                                 quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL), None)
    if not header:
        raise ValueError(f"{path}: no rows")
    options: dict[str, Any] = {
        "features": datasets.Features({c: datasets.Value("string") for c in header}),
        "keep_default_na": False, "na_filter": False, "encoding": "utf-8-sig",
    }
    if tsv:
        options.update(delimiter="\t", quoting=csv.QUOTE_NONE)
    return options


def _line_numbers(path: Path) -> Iterator[int]:
    """The line number of each data row, in order (blank lines skipped, as the loaders do)."""
    if path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8-sig") as f:
            yield from (n for n, line in enumerate(f, 1) if line.strip())
    else:
        tsv = path.suffix.lower() == ".tsv"
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t" if tsv else ",",
                                quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
            next(reader, None)  # header
            yield from (reader.line_num for row in reader if row)


def _line_of(path: Path, row: int) -> int:
    return next(n for i, n in enumerate(_line_numbers(path)) if i == row)


def _load_raw(path: Path) -> datasets.Dataset:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        check_utf8(path)  # pyarrow's JSON reader lets bad bytes through to the first read
        builder, options = "json", {}
    elif suffix in (".csv", ".tsv"):
        builder, options = "csv", _csv_options(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .csv or .tsv")
    first = next(_line_numbers(path), None)
    if first is None:
        raise ValueError(f"{path}: no rows")
    if builder == "json":  # datasets reads a file of JSON arrays as a 'text' column: refuse
        with path.open(encoding="utf-8-sig") as f:
            line = next(line for n, line in enumerate(f, 1) if n == first)
        if not line.lstrip().startswith("{"):
            raise ValueError(f"{path}:{first}: expected a JSON object per line")
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as e:  # pyarrow/pandas errors name neither file nor line: find the line
        if builder == "json":
            _diagnose_jsonl(path)
        cause = e.__cause__ or e
        raise ValueError(f"{path}: not readable as {builder} "
                         f"({type(cause).__name__}: {cause})") from e


def _resolve_fields(keys: Iterable[str], spec: TaskSpec, path: Path) -> tuple[list[str], str]:
    """Pick the text and label columns of a file from its column names."""
    keyset = set(keys)
    if spec.is_pair:
        text_cols = next((list(p) for p in PAIR_TEXT_ALIASES if set(p) <= keyset), None)
        wanted = " / ".join("+".join(p) for p in PAIR_TEXT_ALIASES)
    else:
        text_cols = next(([a] for a in SINGLE_TEXT_ALIASES if a in keyset), None)
        wanted = " / ".join(SINGLE_TEXT_ALIASES)
    if text_cols is None:
        raise ValueError(f"{path}: no text column for task {spec.name!r}; expected one of "
                         f"{wanted}, found {sorted(keyset)}")
    label_col = next((a for a in LABEL_ALIASES if a in keyset), None)
    if label_col is None:
        raise ValueError(f"{path}: missing field 'label' (accepted names: "
                         f"{', '.join(LABEL_ALIASES)}); found {sorted(keyset)}")
    return text_cols, label_col


def parse_label(value: Any, spec: TaskSpec) -> int | float:
    """Turn a raw label (id, numeric string or label name) into an int id or a float."""
    if spec.is_regression:
        return float(value)
    if isinstance(value, bool):
        raise ValueError(f"boolean label {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        names = {n.lower(): i for i, n in enumerate(spec.label_names)}
        s = value.strip()
        if s.lower() in names:
            value = names[s.lower()]
        else:
            try:
                value = int(s)
            except ValueError:
                raise ValueError(f"label {value!r} is neither an integer nor one of "
                                 f"{list(spec.label_names)}") from None
    if not isinstance(value, int):
        raise ValueError(f"label {value!r} has unsupported type {type(value).__name__}")
    if not 0 <= value < spec.num_labels:
        raise ValueError(f"label {value} outside [0, {spec.num_labels}) for task {spec.name!r}")
    return value


def column(ds: datasets.Dataset, name: str) -> list:
    """One column as a list, in one Arrow read (``ds[name]`` iterates row by row)."""
    return ds.select_columns([name])[:][name]


def task_features(spec: TaskSpec) -> datasets.Features:
    """Canonical features: string text column(s), ``ClassLabel`` (or ``float32``) label."""
    feats: dict[str, Any] = {f: datasets.Value("string") for f in spec.text_fields}
    feats["label"] = (datasets.Value("float32") if spec.is_regression
                      else datasets.ClassLabel(names=list(spec.label_names)))
    return datasets.Features(feats)


def read_labelled_file(path: Path, spec: TaskSpec) -> datasets.Dataset:
    """One split file as a Dataset with canonical columns; ValueError names file, line, field."""
    raw = _load_raw(path)
    if len(raw) == 0:
        raise ValueError(f"{path}: no rows")
    text_cols, label_col = _resolve_fields(raw.column_names, spec, path)
    raw = raw.select_columns([*text_cols, label_col])
    for col in text_cols:
        values = column(raw, col)
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            what = "missing field" if values[bad] is None else "field"
            tail = "" if values[bad] is None else f" is not a string: {values[bad]!r}"
            raise ValueError(f"{path}:{_line_of(path, bad)}: {what} {col!r}{tail}")

    def parse(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out = []
        for i, value in zip(indices, batch[label_col], strict=True):
            if value is None or value == "":
                raise ValueError(f"{path}:{_line_of(path, i)}: missing field {label_col!r}")
            try:
                out.append(parse_label(value, spec))
            except ValueError as e:
                raise ValueError(f"{path}:{_line_of(path, i)}: field {label_col!r}: {e}") from None
        return {"label": out}

    renamed = dict(zip(text_cols, spec.text_fields, strict=True))
    ds = raw.map(parse, batched=True, with_indices=True, remove_columns=[label_col],
                 features=datasets.Features({**{c: raw.features[c] for c in text_cols},
                                             "label": task_features(spec)["label"]}))
    return ds.rename_columns(renamed).select_columns(list(task_features(spec)))


def find_split_file(folder: Path, stems: Iterable[str]) -> Path | None:
    """The first ``<stem><ext>`` that exists in ``folder``."""
    for stem in stems:
        for ext in EXTENSIONS:
            if (p := folder / f"{stem}{ext}").is_file():
                return p
    return None
