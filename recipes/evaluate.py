"""Evaluate a SpikeBERT student (or any Hugging Face classifier) on a task, with energy.

    python recipes/evaluate.py --model outputs/stage2-sst2 --task sst2 --split dev \\
        --data_dir ../shared/data --teacher outputs/teacher-sst2 --output_json sst2.json

Writes JSON with ``accuracy`` (percent) and the task's other metrics (F1, Matthews
correlation, Pearson/Spearman where GLUE uses them), and with ``--teacher`` the energy of
both models per sample (``spikebert.energy``) and the reduction; prints a Markdown row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import spikebert  # noqa: F401  (registers SpikeBERT with the Auto classes)
from spikebert.data import compute_metrics, get_task, load_task, read_task_file
from spikebert.energy import compare


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="saved model directory")
    p.add_argument("--task", required=True)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--split", default="dev", choices=("dev", "test"))
    where.add_argument("--data_file", default=None, help="a labelled .jsonl/.csv/.tsv file")
    p.add_argument("--data_dir", default=None, help="data folder (else $SPIKEBERT_DATA)")
    p.add_argument("--split_seed", type=int, default=42, help="seed of all.jsonl splits")
    p.add_argument("--teacher", default=None, help="teacher directory: adds the energy columns")
    p.add_argument("--max_length", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lengths", choices=("real", "padded"), default="real",
                   help="energy: charge each sample at its real or its padded length")
    p.add_argument("--output_json", default=None)
    return p.parse_args(argv)


def load_classifier(path: str):
    """A saved classifier and its tokenizer, or a clear error naming what is missing."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not list(folder.glob("*.safetensors")) and not list(folder.glob("pytorch_model*.bin")):
        raise FileNotFoundError(f"{path} has no model weights (*.safetensors); found "
                                f"{sorted(p.name for p in folder.iterdir())}")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def encode(dataset, tokenizer, spec, max_length: int, batch_size: int) -> list[dict]:
    """Batches padded to their longest row (both models see the same tensors)."""
    batches = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start:start + batch_size]
        enc = tokenizer(*[rows[f] for f in spec.text_fields], truncation=True,
                        max_length=max_length, padding="longest", return_tensors="pt")
        batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        batch["labels"] = torch.tensor(rows["label"])
        batches.append(batch)
    return batches


def predict(model, batches) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([
            model(**{k: v for k, v in b.items() if k != "labels"}).logits.float().numpy()
            for b in batches])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    spec = get_task(args.task)
    model, tokenizer = load_classifier(args.model)
    if model.config.num_labels != spec.num_labels:
        raise ValueError(f"model {args.model} has {model.config.num_labels} labels but task "
                         f"{spec.name} has {spec.num_labels}")
    if args.data_file:
        dataset, source = read_task_file(args.data_file, spec), args.data_file
    else:
        data, _ = load_task(spec, data_dir=args.data_dir, seed=args.split_seed)
        if args.split not in data:
            raise ValueError(f"task {spec.name} has no {args.split!r} split here (it has "
                             f"{sorted(data)}); SST test sets are withheld: use --split dev")
        dataset, source = data[args.split], args.split
    max_length = args.max_length or getattr(model.config, "max_position_embeddings", 128)
    batches = encode(dataset, tokenizer, spec, max_length, args.batch_size)
    labels = np.concatenate([b["labels"].numpy() for b in batches])
    metrics = compute_metrics(spec, predict(model, batches), labels)
    result = {"task": spec.name, "model": args.model, "data": source,
              "num_samples": len(labels), **{k: 100 * v for k, v in metrics.items()}}
    score = result[spec.primary_metric]
    row = f"| {spec.name} | {source} | {args.model} | {spec.primary_metric} {score:.2f} |"
    if args.teacher:
        teacher, _ = load_classifier(args.teacher)
        report = compare(model, teacher, batches, args.lengths)
        result |= {
            "teacher": args.teacher,
            "teacher_accuracy": None if report.teacher.accuracy is None
            else 100 * report.teacher.accuracy,
            "energy_mj": report.student.energy_mj,
            "teacher_energy_mj": report.teacher.energy_mj,
            "sops_g": report.student.ops / 1e9,
            "teacher_flops_g": report.teacher.ops / 1e9,
            "energy_ratio": report.ratio,
            "energy_reduction": 100 * report.reduction,
            "energy_lengths": args.lengths,
        }
        teacher_acc = result["teacher_accuracy"]
        row = (f"| {spec.name} | {source} | "
               f"{'-' if teacher_acc is None else f'{teacher_acc:.2f}'} | "
               f"{score:.2f} | {result['teacher_energy_mj']:.3f} | "
               f"{result['energy_mj']:.3f} | {result['energy_reduction']:.1f}% |")
    result["markdown_row"] = row
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(result, indent=2))
    print(row)
    return result


if __name__ == "__main__":
    main()
