"""Unlabelled corpora for stage 1: finding them, and packing them into fixed-length blocks.

:func:`load_corpus` resolves a text file, a folder of ``.txt`` files, a short name in the data
directory (``corpus_en``, ``corpus_zh``), ``sample`` (the English Wikipedia sample bundled
with the package) or a Hub corpus (``wikitext``, ``wikitext2``, ``wikipedia``,
``wikipedia_zh``, ``bookcorpus``; large ones are streamed).

:func:`pack_corpus` tokenises the lines with the teacher's tokenizer in a batched
``Dataset.map`` (cached by ``datasets`` under a fingerprint of the corpus and the tokenizer),
concatenates all tokens into one stream and cuts it into ``[CLS] piece [SEP]`` blocks of exactly
``seq_length`` tokens; only the stream's incomplete tail is dropped. (run_mlm's
``group_texts`` cuts each map batch separately and drops every batch's tail; cutting the
flattened stream once keeps all text and gives the same blocks as before.)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from .files import check_utf8
from .tasks import DATA_ENV_VAR, SAMPLES_DIR, hub_skip_reason, not_found

__all__ = ["HUB_CORPORA", "SAMPLE_CORPUS", "Corpus", "PackedCorpus", "load_corpus",
           "pack_corpus"]

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
SAMPLE_CORPUS = SAMPLES_DIR / "corpus_en"
_PACK_FORMAT_VERSION = 2  # 2: tokens cached by datasets, blocks cut from the flattened stream


def _hash_json(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def _lines(texts: Iterable[Any]) -> list[str]:
    """Non-empty stripped lines (paragraphs) of some texts (Hub rows hold whole documents)."""
    return [s for t in texts for line in str(t).split("\n") if (s := line.strip())]


@dataclass
class Corpus:
    """An unlabelled text corpus: local ``files`` or a Hub ``dataset`` with a ``text`` column."""

    name: str
    files: tuple[Path, ...] = ()
    hub: str | None = None
    dataset: Any = None

    def to_dataset(self, cache_dir: str | os.PathLike | None = None) -> Any:
        """The corpus as a ``datasets`` (Iterable)Dataset with a ``text`` column.

        Files are read with ``load_dataset("text")`` (one row per line, UTF-8); a byte that is
        not UTF-8 raises ValueError naming the file and line.
        """
        if not self.files:
            return self.dataset
        try:
            return datasets.load_dataset("text", data_files=[str(p) for p in self.files],
                                         split="train", cache_dir=cache_dir)
        except Exception:
            for path in self.files:  # the loader's error names neither file nor line
                check_utf8(path)
            raise

    def iter_texts(self) -> Iterator[str]:
        """Yield the non-empty lines (paragraphs) of the corpus, stripped."""
        for batch in self.to_dataset().iter(batch_size=1000):
            yield from _lines(batch["text"])

    def fingerprint(self) -> str | None:
        """Cache key: file paths, sizes and mtimes, or the Hub id; None if unknown."""
        if self.files:
            stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files]
            return _hash_json(stats)
        if self.hub:
            return _hash_json(["hub", self.hub, getattr(self.dataset, "_fingerprint", None)])
        return None


def _from_path(path: Path, tried: list[str], name: str | None = None) -> Corpus | None:
    if path.is_file():
        return Corpus(name=name or path.stem, files=(path,))
    if path.is_dir():
        files = tuple(sorted(p for p in path.rglob("*.txt") if p.is_file()))
        if files:
            return Corpus(name=name or path.name, files=files)
        tried.append(f"{path}: folder has no .txt files")
    else:
        tried.append(f"{path}: not found")
    return None


def load_corpus(spec: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                allow_hub: bool = True) -> Corpus:
    """Resolve an unlabelled corpus.

    ``spec`` is, in the order tried: a text file; a folder (all ``*.txt`` below it, sorted); a
    folder name inside the data directory (``data_dir`` else ``$SPIKEBERT_DATA``), e.g.
    ``corpus_en``; ``sample`` (the bundled English Wikipedia sample, ``SAMPLE_CORPUS``); a Hub
    corpus (a key of :data:`HUB_CORPORA` or ``owner/name[:config]``).
    """
    tried: list[str] = []
    candidates = [Path(spec).expanduser()]
    root = data_dir if data_dir is not None else os.environ.get(DATA_ENV_VAR)
    if root:
        candidates.append(Path(root).expanduser() / str(spec))
    else:
        tried.append(f"data directory: none given (--data_dir) and ${DATA_ENV_VAR} is not set")
    for path in candidates:
        if corpus := _from_path(path, tried):
            return corpus
    key = str(spec).strip().lower()
    if key == "sample":
        if corpus := _from_path(SAMPLE_CORPUS, tried, name="sample"):
            return corpus
    else:
        tried.append(f"bundled sample: only the name 'sample' selects it ({SAMPLE_CORPUS})")

    hub: tuple[str, str | None, bool] | None = HUB_CORPORA.get(key)
    if hub is None and "/" in str(spec) and not Path(spec).is_absolute():
        path_, _, config = str(spec).partition(":")
        hub = (path_, config or None, False)
    if hub is None:
        tried.append(f"Hugging Face Hub: {spec!r} is not one of {sorted(HUB_CORPORA)}")
    elif skip := hub_skip_reason(hub[0], allow_hub):
        tried.append(skip)
    else:
        path_, config, streaming = hub
        try:
            ds = datasets.load_dataset(path_, config, split="train", streaming=streaming)
        except Exception as e:  # network, auth, missing dataset...
            tried.append(f"Hugging Face Hub {path_}: failed ({type(e).__name__}: {e})")
        else:
            hub_id = path_ + (f":{config}" if config else "")
            return Corpus(name=key.replace("/", "_"), hub=hub_id, dataset=ds)

    raise not_found(
        f"corpus {str(spec)!r} not found", tried,
        f"Pass a text file or a folder of .txt files, a name such as corpus_en with --data_dir "
        f"DIR (or {DATA_ENV_VAR}=DIR), 'sample' for the bundled English sample, or a Hub corpus "
        f"({', '.join(sorted(HUB_CORPORA))}).")


@dataclass
class PackedCorpus:
    """Fixed-length token blocks ``[CLS] ... [SEP]`` usable as a map-style torch dataset.

    ``blocks`` is an ``int32`` array ``[num_blocks, seq_length]``; ``indices`` selects rows of
    it (for held-out splits). Items are dicts of int64 tensors ``input_ids``,
    ``attention_mask`` (all ones) and ``token_type_ids`` (zeros). ``from_cache`` says whether
    the tokens were read from ``cache_path`` instead of being tokenised.
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
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "token_type_ids": torch.zeros_like(ids)}

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
        return (PackedCorpus(self.blocks, train, self.from_cache, self.cache_path, self.meta),
                PackedCorpus(self.blocks, hold, self.from_cache, self.cache_path, self.meta))


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


def _as_dataset(source: Any, cache_dir: str | os.PathLike | None) -> tuple[Any, str | None]:
    """(``text``-column dataset, fingerprint of its content or None) for any accepted source."""
    if isinstance(source, Corpus):
        return source.to_dataset(cache_dir), source.fingerprint()
    if isinstance(source, str):
        raise TypeError("pack_corpus takes a Corpus, a list of strings or a dataset, not a str")
    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        if "text" not in (source.column_names or ["text"]):
            raise ValueError(f"pack_corpus needs a 'text' column, got {source.column_names}")
        key = source._fingerprint if isinstance(source, datasets.Dataset) else None
        return source, key
    texts = [str(t) for t in source]
    return datasets.Dataset.from_dict({"text": texts}), _hash_json(["texts", texts])


def pack_corpus(texts_or_dataset: Corpus | Sequence[str] | datasets.Dataset
                | datasets.IterableDataset, tokenizer: Any, seq_length: int,
                cache_dir: str | os.PathLike | None = None, *, max_blocks: int | None = None,
                batch_size: int = 1000) -> PackedCorpus:
    """Tokenise a corpus with the teacher's tokenizer and pack it into fixed-length blocks.

    Lines are tokenised without special tokens and concatenated into one stream, cut into
    pieces of ``seq_length - 2`` tokens, each wrapped as ``[CLS] piece [SEP]``; the incomplete
    tail is dropped. ``max_blocks`` caps the result (needed for streamed Hub corpora; only as
    many lines as needed are tokenised, without caching). Otherwise the tokens are cached as
    ``tokens-<key>.arrow`` in ``cache_dir`` (else in the ``datasets`` cache next to the corpus),
    the key hashing the corpus (file names, sizes and mtimes, or the texts) and the tokenizer's
    vocabulary and settings, so any ``seq_length`` reuses them.
    """
    if seq_length < 3:
        raise ValueError(f"seq_length must be at least 3, got {seq_length}")
    if max_blocks is not None and max_blocks < 0:
        raise ValueError(f"max_blocks must be >= 0, got {max_blocks}")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError("pack_corpus needs a tokenizer with [CLS] and [SEP] tokens (BERT-style)")
    ds, source_key = _as_dataset(texts_or_dataset, cache_dir)
    body = seq_length - 2
    meta: dict[str, Any] = {
        "format": _PACK_FORMAT_VERSION, "source": source_key,
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "tokenizer_name": getattr(tokenizer, "name_or_path", ""),
        "seq_length": seq_length, "max_blocks": max_blocks,
    }

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        lines = _lines(batch["text"])
        if not lines:
            return {"input_ids": []}
        return {"input_ids": tokenizer(lines, add_special_tokens=False, verbose=False)["input_ids"]}

    cache_path: Path | None = None
    from_cache = False
    if max_blocks is not None or isinstance(ds, datasets.IterableDataset):
        needed = None if max_blocks is None else max_blocks * body
        pieces: list[np.ndarray] = []
        have = 0
        for batch in ds.iter(batch_size=batch_size):
            if needed is not None and have >= needed:
                break
            for ids in tokenize(batch)["input_ids"]:
                pieces.append(np.asarray(ids, dtype=np.int32))
                have += len(ids)
        stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    else:
        key = None
        if source_key is not None:
            key = _hash_json([_PACK_FORMAT_VERSION, source_key, meta["tokenizer"]])[:32]
        if cache_dir is not None and key is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            cache_path = Path(cache_dir) / f"tokens-{key}.arrow"
            from_cache = cache_path.is_file()
        tokens = ds.map(tokenize, batched=True, batch_size=batch_size,
                        remove_columns=ds.column_names, new_fingerprint=key,
                        cache_file_name=None if cache_path is None else str(cache_path),
                        features=datasets.Features(
                            {"input_ids": datasets.Sequence(datasets.Value("int32"))}),
                        desc="tokenising corpus")
        stream = pc.list_flatten(tokens.data.column("input_ids")).to_numpy()
    n = len(stream) // body if max_blocks is None else min(len(stream) // body, max_blocks)
    blocks = np.empty((n, seq_length), dtype=np.int32)
    blocks[:, 0], blocks[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    blocks[:, 1:-1] = stream[: n * body].reshape(n, body)
    meta["num_blocks"] = n
    return PackedCorpus(blocks, from_cache=from_cache, cache_path=cache_path, meta=meta)
