"""Model card (``README.md``) of a saved SpikeBERT student: what it is, what it was trained
on, how, and how well it does at what energy.

:func:`describe_student` measures what the card reports (test metrics if the task has a test
split, energy per sample against the teacher, firing rates); :func:`write_model_card`
renders it with Hugging Face's card front matter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .batching import TaskCollator
from .checkpoint import atomic_write_text

# samples the energy estimate and the firing rates are measured on (they are averages)
PROBE_SAMPLES = 64


@torch.no_grad()
def _logits(model, loader) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = [], []
    for batch in loader:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        preds.append(model(**inputs).logits.float().numpy())
        labels.append(batch["labels"].numpy())
    return np.concatenate(preds), np.concatenate(labels)


def describe_student(student, teacher, tokenizer, spec, dataset, max_length: int,
                     batch_size: int = 32) -> dict[str, Any]:
    """Test metrics (when ``dataset`` has a test split), the energy estimate against
    ``teacher`` and the firing rate of every LIF layer on the first :data:`PROBE_SAMPLES`
    dev examples (each at its real length)."""
    from .data import compute_metrics
    from .energy import compare
    from .plots import collect_firing_rates

    student.eval()
    collate = TaskCollator(tokenizer, spec.text_fields, max_length, padding="longest")
    out: dict[str, Any] = {}
    if "test" in dataset:
        loader = DataLoader(dataset["test"], batch_size=batch_size, collate_fn=collate)
        out["test"] = compute_metrics(spec, *_logits(student, loader))
    probe = dataset["dev"].select(range(min(PROBE_SAMPLES, len(dataset["dev"]))))
    batches = list(DataLoader(probe, batch_size=batch_size, collate_fn=collate))
    report = compare(student, teacher, batches, "real")
    out["energy"] = {"student_mj": report.student.energy_mj,
                     "teacher_mj": report.teacher.energy_mj, "ratio": report.ratio,
                     "samples": len(probe)}
    out["firing_rates"] = collect_firing_rates(
        student, [{k: v for k, v in b.items() if k != "labels"} for b in batches])
    return out


def _metrics_line(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    return ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()
                     if k != "step" and isinstance(v, float))


def write_model_card(folder: str | Path, result: dict[str, Any], command: str) -> Path:
    """``folder/README.md`` from a stage-2 ``result`` (as ``recipes/distill.py`` returns it,
    with :func:`describe_student`'s fields)."""
    split = result.get("split", {})
    energy = result.get("energy", {})
    rates = result.get("firing_rates", {})
    hashes = split.get("sha256", {})
    nan = float("nan")
    student_mj, teacher_mj = energy.get("student_mj", nan), energy.get("teacher_mj", nan)
    rows = "\n".join(f"| {name} | {rate:.4f} |" for name, rate in rates.items())
    text = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [spikebert, spiking-neural-network, knowledge-distillation]
---

# SpikeBERT student for {result['task']}

A spiking Transformer (SpikeBERT) distilled from the teacher `{result['teacher']}`
(stage 1 student: `{result.get('student') or 'none, trained from scratch'}`).
Load it with `import spikebert` first (it registers the architecture), then
`transformers.pipeline("text-classification", model="<this folder>")`.

## Data

- task: `{result['task']}`; split: {split.get('split_by', '?')}, seed {split.get('seed', '?')},
  sizes {json.dumps(split.get('split_sizes', {}))}
- files (SHA-256): {json.dumps(hashes) if hashes else split.get('hub_id', split.get('source', '?'))}
- training examples seen per epoch (with augmentation): {result.get('train_examples', '?')}

## Training

{result['steps']} optimizer steps; run fingerprint (arguments and weight/data hashes) in
`metrics.json`. Command:

```
{command}
```

## Results

| split | metrics (%) |
|---|---|
| dev (best, step {result['dev'].get('step', '?')}) | {_metrics_line(result['dev'])} |
| test | {_metrics_line(result.get('test'))} |

Energy per sample (theoretical, 45 nm: `spikebert.energy`, on {energy.get('samples', '?')} dev
examples at their real length): student {student_mj:.4f} mJ, teacher {teacher_mj:.4f} mJ,
ratio {energy.get('ratio', nan):.2%}.

## Firing rates (same dev examples)

| layer | rate |
|---|---|
{rows}
"""
    path = Path(folder) / "README.md"
    atomic_write_text(path, text)
    return path
