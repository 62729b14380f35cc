"""The task registry: which tasks exist, their columns, labels, metrics and where copies live.

``TASKS`` maps a name to a :class:`TaskSpec`:

* the six sets of Lv et al. (2023): ``mr``, ``sst2``, ``sst5``, ``subj`` (English) and
  ``chnsenti``, ``waimai`` (Chinese);
* GLUE (Hub: ``nyu-mll/glue``): ``cola``, ``mnli``, ``mrpc``, ``qnli``, ``qqp``, ``rte``,
  ``stsb``, ``wnli`` and ``glue_sst2``. GLUE's SST-2 is called ``glue_sst2`` because ``sst2`` is
  the sentence-level SST-2 of Kim (2014) used by Lv et al.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TASKS", "TaskSpec", "get_task"]


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
        """``path`` or ``path (config)`` on the Hub, for messages and info dicts."""
        if self.hub_path is None:
            return None
        return self.hub_path + (f" ({self.hub_config})" if self.hub_config else "")


_SINGLE = ("text",)
_PAIR = ("text_a", "text_b")
_TRAIN_DEV = (("train", "train"), ("validation", "dev"))
_BINARY_SENT = ("negative", "positive")
_SST5 = ("very negative", "negative", "neutral", "positive", "very positive")


def _lv(name: str, description: str, language: str, labels: tuple[str, ...],
        dirs: tuple[str, ...], hub: str | None = None) -> TaskSpec:
    """A single-sentence set of Lv et al. (2023). SST-2/SST-5 have official train/dev splits
    (test withheld); the others ship one ``all`` file and get a seeded split."""
    official = name in ("sst2", "sst5")
    return TaskSpec(
        name=name, description=description, language=language, text_fields=_SINGLE,
        num_labels=len(labels), metrics=("accuracy",), label_names=labels,
        seeded_split=not official, local_dirs=(name, *dirs), hub_path=hub,
        hub_text_fields=_SINGLE if hub else (), hub_splits=_TRAIN_DEV if official else (),
        hub_label_text_field="label_text" if hub and name != "mr" else None,
    )


def _glue(name: str, description: str, hub_fields: tuple[str, ...],
          labels: tuple[str, ...], metrics: tuple[str, ...] = ("accuracy",), *,
          config: str | None = None, dirs: tuple[str, ...] = (),
          hub_splits: tuple[tuple[str, str], ...] = _TRAIN_DEV,
          local_splits: tuple[str, ...] = ("train", "dev"), regression: bool = False) -> TaskSpec:
    """A GLUE task on ``nyu-mll/glue`` (test labels hidden: train + dev only)."""
    return TaskSpec(
        name=name, description=description, language="en",
        text_fields=_SINGLE if len(hub_fields) == 1 else _PAIR,
        num_labels=1 if regression else len(labels), metrics=metrics, label_names=labels,
        problem_type="regression" if regression else "single_label_classification",
        local_dirs=(name, *dirs), local_splits=local_splits, hub_path="nyu-mll/glue",
        hub_config=config or name, hub_text_fields=hub_fields, hub_splits=hub_splits,
    )


_MNLI_SPLITS = (("train", "train"), ("validation_matched", "dev"),
                ("validation_mismatched", "dev_mismatched"))

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    _lv("mr", "movie-review sentence polarity (Pang & Lee 2005)", "en", _BINARY_SENT, ("MR",),
        "cornell-movie-review-data/rotten_tomatoes"),
    _lv("sst2", "SST binary, sentence level (Kim 2014 split; test withheld)", "en",
        _BINARY_SENT, ("SST2", "sst-2"), "SetFit/sst2"),
    _lv("sst5", "SST fine-grained, sentence level (test withheld)", "en", _SST5,
        ("SST5", "sst-5"), "SetFit/sst5"),
    _lv("subj", "subjectivity (Pang & Lee 2004); 0 = subjective, 1 = objective", "en",
        ("subjective", "objective"), ("SUBJ",), "SetFit/subj"),
    _lv("chnsenti", "ChnSentiCorp hotel-review sentiment (Chinese); no Hub copy configured",
        "zh", _BINARY_SENT, ("ChnSenti", "ChnSentiCorp")),
    _lv("waimai", "waimai_10k food-delivery review sentiment (Chinese); no Hub copy", "zh",
        _BINARY_SENT, ("waimai_10k",)),
    _glue("cola", "GLUE CoLA acceptability", ("sentence",), ("unacceptable", "acceptable"),
          ("matthews_correlation", "accuracy"), dirs=("CoLA",)),
    _glue("glue_sst2", "GLUE SST-2 (phrase-level train, sentence-level dev)", ("sentence",),
          _BINARY_SENT, config="sst2", dirs=("SST-2",)),
    _glue("mnli", "GLUE MultiNLI; dev = matched, dev_mismatched also loaded",
          ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), dirs=("MNLI",),
          hub_splits=_MNLI_SPLITS, local_splits=("train", "dev", "dev_mismatched")),
    _glue("mrpc", "GLUE MRPC paraphrase", ("sentence1", "sentence2"),
          ("not_equivalent", "equivalent"), ("accuracy", "f1"), dirs=("MRPC",)),
    _glue("qnli", "GLUE QNLI", ("question", "sentence"), ("entailment", "not_entailment"),
          dirs=("QNLI",)),
    _glue("qqp", "GLUE QQP duplicate questions", ("question1", "question2"),
          ("not_duplicate", "duplicate"), ("accuracy", "f1"), dirs=("QQP",)),
    _glue("rte", "GLUE RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"),
          dirs=("RTE",)),
    _glue("stsb", "GLUE STS-B similarity (regression, 0..5)", ("sentence1", "sentence2"), (),
          ("pearson", "spearmanr"), dirs=("STS-B",), regression=True),
    _glue("wnli", "GLUE WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment"),
          dirs=("WNLI",)),
)}


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
