"""Evaluate a SpikeBERT student (or any Hugging Face classifier) on a task, with energy.

    python recipes/evaluate.py --model outputs/stage2-sst2 --task sst2 --split dev \\
        --data_dir ../shared/data --teacher outputs/teacher-sst2 --output_json sst2.json --plots

Writes JSON with ``accuracy`` (percent) and the task's other metrics (F1, Matthews
correlation, Pearson/Spearman where GLUE uses them), and with ``--teacher`` the energy of
both models per sample (``spikebert.energy``) and the reduction; prints a Markdown row.
``--plots`` (a SpikeBERT model) also writes ``<json stem>-firing_rates.png`` and
``<json stem>-attention.png`` (the first example's attention map) beside the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import spikebert  # noqa: F401  (registers SpikeBERT with the Auto classes)
from spikebert.arguments import DataArguments, check_count, parse_arguments
from spikebert.batching import TaskCollator
from spikebert.data import compute_metrics, get_task, load_task, read_task_file
from spikebert.energy import compare
from spikebert.loading import check_max_length


@dataclass
class EvaluateArguments:
    model: str = field(default=None, metadata={"help": "saved model directory",
                                               "required": True})
    task: str = field(default=None, metadata={"help": "task name", "required": True})
    split: str = field(default="dev", metadata={"help": "split of the task's data",
                                                "choices": ["dev", "test"]})
    data_file: str | None = field(default=None, metadata={
        "help": "a labelled .jsonl/.csv/.tsv file (instead of --split)"})
    teacher: str | None = field(default=None, metadata={
        "help": "teacher directory: adds the energy columns"})
    max_length: int | None = None
    batch_size: int = 64
    lengths: str = field(default="real", metadata={
        "help": "energy: charge each sample at its real or its padded length",
        "choices": ["real", "padded"]})
    output_json: str | None = None
    plots: bool = field(default=False, metadata={
        "help": "also write firing-rate and attention-map PNGs beside --output_json"})

    def __post_init__(self) -> None:
        check_count("--batch_size", self.batch_size, 1)
        check_count("--max_length", self.max_length, 2, none_ok=True)
        if self.plots and not self.output_json:
            raise ValueError("--plots writes beside --output_json; give --output_json")


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


def predict(model, batches) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([
            model(**{k: v for k, v in b.items() if k != "labels"}).logits.float().numpy()
            for b in batches])


def main(argv: list[str] | None = None) -> dict:
    args, data = parse_arguments((EvaluateArguments, DataArguments), argv,
                                 __doc__.split("\n\n")[0])
    spec = get_task(args.task)
    model, tokenizer = load_classifier(args.model)
    if model.config.num_labels != spec.num_labels:
        raise ValueError(f"model {args.model} has {model.config.num_labels} labels but task "
                         f"{spec.name} has {spec.num_labels}")
    if args.data_file:
        dataset, source = read_task_file(args.data_file, spec), args.data_file
    else:
        splits, _ = load_task(spec, data_dir=data.data_dir, seed=data.split_seed,
                              allow_hub=not data.no_hub)
        if args.split not in splits:
            raise ValueError(f"task {spec.name} has no {args.split!r} split here (it has "
                             f"{sorted(splits)}); SST test sets are withheld: use --split dev")
        dataset, source = splits[args.split], args.split
    positions = getattr(model.config, "max_position_embeddings", None)
    max_length = check_max_length(args.max_length or positions or 128, "--max_length",
                                  model=positions)
    # batches padded to their longest row: both models see the same tensors
    collate = TaskCollator(tokenizer, spec.text_fields, max_length, padding="longest")
    batches = list(DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate))
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
        out = Path(args.output_json)
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.plots:
            result["plots"] = write_plots(model, tokenizer, dataset, spec, batches, out)
        out.write_text(json.dumps(result, indent=2))
    print(row)
    return result


def write_plots(model, tokenizer, dataset, spec, batches, out: Path) -> list[str]:
    """Firing rates over the evaluated batches and the first example's attention map, as
    PNGs named after ``out`` (``spikebert.plots``)."""
    from spikebert.plots import collect_firing_rates, plot_firing_rates, plot_sentence_attention

    if getattr(model.config, "model_type", None) != "spikebert":
        raise ValueError(f"--plots needs a SpikeBERT model; {type(model).__name__} has no "
                         f"spikes")
    rates = collect_firing_rates(model, [{k: v for k, v in b.items() if k != "labels"}
                                         for b in batches])
    first = [dataset[0][f] for f in spec.text_fields]
    paths = [plot_firing_rates(rates, out.with_name(f"{out.stem}-firing_rates.png")),
             plot_sentence_attention(model, tokenizer, first[0] if len(first) == 1 else first,
                                     out.with_name(f"{out.stem}-attention.png"))]
    return [str(p) for p in paths]


if __name__ == "__main__":
    main()
