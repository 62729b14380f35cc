"""Fine-tune a BERT-style teacher on a task, keeping the best checkpoint on dev.

Offline (the packaged all-MiniLM-L6-v2)::

    accelerate launch --cpu recipes/finetune_teacher.py --task sst2 --model minilm \\
        --data_dir ../shared/data --output_dir outputs/teacher-sst2 --epochs 3

Paper setting (needs the Hub): ``--model bert-base-cased``. The output folder holds the
model, its tokenizer and ``metrics.json`` (dev metrics of the kept checkpoint).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from spikebert.data import (
    add_data_arguments,
    files_from_args,
    get_task,
    load_task,
    tokenize_task,
)
from spikebert.training import (
    evaluate_model,
    finish,
    load_teacher,
    make_optimizer,
    resolve_teacher,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--model", default="bert-base-cased",
                   help="encoder directory or Hub name; 'minilm' = the packaged offline MiniLM")
    p.add_argument("--output_dir", required=True)
    add_data_arguments(p)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--warmup_ratio", type=float, default=0.1)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--max_steps", type=int, default=None, help="overrides --epochs")
    p.add_argument("--eval_steps", type=int, default=None, help="default: once per epoch")
    p.add_argument("--max_train_samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator()
    set_seed(args.seed)
    spec = get_task(args.task)
    data, split_info = load_task(spec, data_dir=args.data_dir, files=files_from_args(args),
                                 seed=args.split_seed, allow_hub=not args.no_hub)
    if args.max_train_samples:
        data["train"] = data["train"].select(range(min(args.max_train_samples,
                                                       len(data["train"]))))
    model, tokenizer = load_teacher(resolve_teacher(args.model), for_classification=True,
                                    num_labels=spec.num_labels)
    if spec.is_regression:
        model.config.problem_type = "regression"
    model.requires_grad_(True).train()
    encoded = tokenize_task(data, tokenizer, args.max_length, spec)
    train_dl = DataLoader(encoded["train"], batch_size=args.batch_size, shuffle=True)
    dev_dl = DataLoader(encoded["dev"], batch_size=2 * args.batch_size)

    steps = args.max_steps or math.ceil(args.epochs * len(train_dl))
    eval_steps = args.eval_steps or min(len(train_dl), steps)
    optimizer, scheduler = make_optimizer(model, args, steps=steps, schedule="linear")
    model, optimizer, train_dl, dev_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, dev_dl, scheduler)

    out = Path(args.output_dir)
    best: dict = {"step": -1, spec.primary_metric: -math.inf}
    step = 0
    progress = tqdm(total=steps, disable=not accelerator.is_main_process, desc="teacher")
    while step < steps:
        for batch in train_dl:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
            if step % eval_steps == 0 or step == steps:
                metrics = evaluate_model(model, dev_dl, accelerator, spec)
                accelerator.print(f"step {step}: dev {metrics}")
                if metrics[spec.primary_metric] > best[spec.primary_metric]:
                    best = {"step": step, **metrics}
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        accelerator.unwrap_model(model).save_pretrained(out)
                        tokenizer.save_pretrained(out)
            if step >= steps:
                break
    progress.close()
    result = {"task": spec.name, "model": args.model, "dev": best, "steps": steps,
              "split": split_info}
    if accelerator.is_main_process:
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    accelerator.print(f"teacher saved to {out.resolve()} (dev {spec.primary_metric} "
                      f"{100 * best[spec.primary_metric]:.2f} at step {best['step']})")
    finish(accelerator)
    return result


if __name__ == "__main__":
    main()
