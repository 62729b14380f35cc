"""Fine-tune a BERT-style teacher on a task, keeping the best checkpoint on dev.

Offline (the packaged all-MiniLM-L6-v2)::

    accelerate launch --cpu recipes/finetune_teacher.py --task sst2 --model minilm \\
        --data_dir ../shared/data --output_dir outputs/teacher-sst2 --epochs 3

Paper setting (needs the Hub): ``--model bert-base-cased``. The output folder holds the
model, its tokenizer and ``metrics.json`` (dev metrics of the kept checkpoint). Same loop,
checkpoints and resume (``--resume_from_checkpoint latest``) as the distillation recipes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from spikebert import arguments as cli
from spikebert import trainer
from spikebert.batching import TaskCollator
from spikebert.checkpoint import atomic_write_text, data_hash, run_fingerprint, weights_hash
from spikebert.loading import check_max_length, load_teacher, resolve_teacher


@dataclass
class TeacherArguments:
    model: str = field(default="bert-base-cased", metadata={
        "help": "encoder directory or Hub name; 'minilm' = the packaged offline MiniLM"})
    epochs: float = field(default=3.0, metadata={"help": "used when --max_steps is unset"})

    def __post_init__(self) -> None:
        cli.check_finite("--epochs", self.epochs, low=0.0, low_open=True)


def main(argv: list[str] | None = None) -> dict:
    teacher_args, data, args = cli.parse_arguments(
        (TeacherArguments, cli.TaskDataArguments, cli.TrainingArguments), argv,
        __doc__.split("\n\n")[0],
        defaults={"lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.1,
                  "lr_scheduler": "linear", "batch_size": 32, "eval_steps": 0,
                  "max_length": 128})
    spec, dataset, split_info = data.load()
    accelerator = trainer.make_accelerator(args, f"teacher-{spec.name}")
    set_seed(args.seed)
    model, tokenizer = load_teacher(resolve_teacher(teacher_args.model), for_classification=True,
                                    num_labels=spec.num_labels)
    if spec.is_regression:
        model.config.problem_type = "regression"
    elif spec.label_names:
        model.config.id2label = dict(enumerate(spec.label_names))
        model.config.label2id = {name: i for i, name in enumerate(spec.label_names)}
    model.requires_grad_(True).train()
    max_length = check_max_length(data.max_length, "--max_length",
                                  model=model.config.max_position_embeddings)
    collate = TaskCollator(tokenizer, spec.text_fields, max_length, padding="longest")
    train_dl = DataLoader(dataset["train"], batch_size=args.batch_size, shuffle=True,
                          num_workers=args.num_workers, collate_fn=collate)
    dev_dl = DataLoader(dataset["dev"], batch_size=2 * args.batch_size, collate_fn=collate)
    per_epoch = math.ceil(len(dataset["train"]) / (args.batch_size * accelerator.num_processes))
    if args.max_steps is None:
        args.max_steps = trainer.steps_for_epochs(teacher_args.epochs, per_epoch,
                                                  args.gradient_accumulation_steps)
    if not args.eval_steps:  # once per epoch, and at least at the end
        args.eval_steps = min(max(1, per_epoch // args.gradient_accumulation_steps),
                              args.max_steps)
    run = trainer.start_run(accelerator, args, run_fingerprint(
        cli.as_dict(teacher_args, data, args), model_init=weights_hash(model),
        data=data_hash(split_info)))

    optimizer, scheduler = trainer.make_optimizer(model, args)
    model, optimizer, train_dl, dev_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, dev_dl, scheduler)
    accelerator.init_trackers(f"teacher-{spec.name}",
                              config=cli.tracker_config(teacher_args, data, args))

    def loss(batch) -> dict[str, torch.Tensor]:
        return {"loss": model(**batch).loss}

    out = Path(args.output_dir)

    def evaluate(step: int) -> None:
        metrics = trainer.evaluate_model(model, dev_dl, accelerator, spec)
        accelerator.log({f"dev_{k}": v for k, v in metrics.items()}, step=step)
        accelerator.print(f"step {step}: dev {metrics}")
        trainer.keep_best(accelerator, run, step, metrics, spec.primary_metric,
                          accelerator.unwrap_model(model), tokenizer, out)

    step = trainer.train(accelerator, args, run, model, optimizer, scheduler, train_dl, loss,
                         evaluate, desc=f"teacher ({spec.name})")
    if step % args.eval_steps:
        evaluate(step)
    best = run.extra["best"]
    if best["step"] < 0:
        raise ValueError(f"dev {spec.primary_metric} was never a number; no teacher was saved")
    result = {"task": spec.name, "model": teacher_args.model, "dev": best, "steps": step,
              "split": split_info, "fingerprint": run.fingerprint}
    if accelerator.is_main_process:
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=str))
    accelerator.print(f"teacher saved to {out.resolve()} (dev {spec.primary_metric} "
                      f"{100 * best[spec.primary_metric]:.2f} at step {best['step']})")
    trainer.finish(accelerator)
    return result


if __name__ == "__main__":
    main()
