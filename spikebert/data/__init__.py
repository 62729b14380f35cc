"""Data for SpikeBERT, on Hugging Face ``datasets``; one module per job.

* :mod:`~spikebert.data.registry`: the tasks (``TASKS``, :class:`TaskSpec`, :func:`get_task`);
* :mod:`~spikebert.data.files`: reading labelled JSONL/CSV/TSV files (errors name file + line);
* :mod:`~spikebert.data.tasks`: :func:`load_task` (files, data folder, bundled copy, Hub) and
  the seeded stratified split whose results are pinned by hash;
* :mod:`~spikebert.data.encode`: :func:`encode`, the one tokenisation of a task for a model;
* :mod:`~spikebert.data.metrics`: :func:`compute_metrics`;
* :mod:`~spikebert.data.corpus`: stage-1 corpora (:func:`load_corpus`, :func:`pack_corpus`).

Bundled data (``spikebert/data/samples``, sources and licences in its README.md): the
sentence-level SST-2 train/dev, used by ``load_task("sst2")`` when no other copy is given, and
an English Wikipedia sample selected by ``load_corpus("sample")`` (``--corpus sample``).
"""

from .corpus import HUB_CORPORA, SAMPLE_CORPUS, Corpus, PackedCorpus, load_corpus, pack_corpus
from .encode import check_vocab_compatible, encode, encode_batch
from .metrics import compute_metrics
from .registry import TASKS, TaskSpec, get_task
from .tasks import (
    DATA_ENV_VAR,
    SAMPLES_DIR,
    hub_offline,
    load_task,
    read_task_file,
    split_hashes,
    stratified_split,
)

__all__ = [
    "DATA_ENV_VAR",
    "HUB_CORPORA",
    "SAMPLES_DIR",
    "SAMPLE_CORPUS",
    "TASKS",
    "Corpus",
    "PackedCorpus",
    "TaskSpec",
    "check_vocab_compatible",
    "compute_metrics",
    "encode",
    "encode_batch",
    "get_task",
    "hub_offline",
    "load_corpus",
    "load_task",
    "pack_corpus",
    "read_task_file",
    "split_hashes",
    "stratified_split",
]
