"""Stage 2: task-specific distillation of a fine-tuned teacher into SpikeBERT (SPEC.md §3).

The training set is augmented (Tang et al. 2019: [MASK], same-POS words, n-grams), the
teacher's logits are computed once per augmented example and cached, and the student
minimises ``w_emb*emb + w_ce*CE + w_kl*KL(teacher||student) + w_feat*feat``
(:mod:`spikebert.distill`). The checkpoint with the best dev metric is kept; test is never
used for selection.

    accelerate launch --cpu recipes/distill.py --task sst2 --teacher outputs/teacher-sst2 \\
        --student outputs/stage1 --data_dir ../shared/data --output_dir outputs/stage2-sst2 \\
        --epochs 3

Ablations: no ``--student`` (no stage 1), ``--no_augment``, ``--w_kl 0`` (and the others).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from spikebert import SpikeBertForSequenceClassification
from spikebert.augment import AugmentConfig, augment_dataset
from spikebert.data import (
    add_data_arguments,
    check_vocab_compatible,
    files_from_args,
    get_task,
    load_task,
    tokenize_task,
)
from spikebert.distill import FeatureAligner, logits_kl
from spikebert.training import (
    add_training_arguments,
    build_student_config,
    evaluate_model,
    finish,
    load_teacher,
    make_accelerator,
    make_optimizer,
    teacher_dtype,
    train_loop,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--teacher", required=True, help="fine-tuned teacher directory")
    p.add_argument("--student", default=None,
                   help="stage-1 output directory; without it the student starts fresh")
    add_data_arguments(p)
    p.add_argument("--preset", default="mini", help="fresh student preset: mini | paper")
    p.add_argument("--config", default=None, help="fresh student config.json")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--max_length", type=int, default=None,
                   help="tokens per example (default: the student's max length)")
    p.add_argument("--epochs", type=float, default=30.0, help="used when --max_steps is unset")
    p.add_argument("--w_emb", type=float, default=0.1)
    p.add_argument("--w_ce", type=float, default=0.1)
    p.add_argument("--w_kl", type=float, default=1.0)
    p.add_argument("--w_feat", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--no_augment", action="store_true")
    p.add_argument("--p_mask", type=float, default=0.1)
    p.add_argument("--p_pos", type=float, default=0.1)
    p.add_argument("--p_ng", type=float, default=0.25)
    p.add_argument("--n_iter", type=int, default=20)
    p.add_argument("--max_train_samples", type=int, default=None,
                   help="use the first N training examples (before augmentation)")
    add_training_arguments(p, lr=5e-4, weight_decay=5e-3, batch_size=32, max_steps=None)
    args = p.parse_args(argv)
    if args.temperature <= 0:
        p.error(f"--temperature must be > 0, got {args.temperature}")
    return args


class Stage2(nn.Module):
    """Student classifier + alignment maps, computing the four-term stage-2 loss."""

    def __init__(self, student: SpikeBertForSequenceClassification, aligner: FeatureAligner,
                 args: argparse.Namespace, regression: bool) -> None:
        super().__init__()
        self.student, self.aligner = student, aligner
        self.w = {k: getattr(args, f"w_{k}") for k in ("emb", "ce", "kl", "feat")}
        self.temperature, self.regression = args.temperature, regression

    def forward(self, batch: dict, teacher_logits: torch.Tensor,
                teacher_hidden: tuple | None) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]
        out = self.student(input_ids=batch["input_ids"], attention_mask=mask,
                           token_type_ids=batch.get("token_type_ids"))
        logits, labels = out.logits, batch["labels"]
        zero = logits.new_zeros(())
        terms = {"emb": zero, "ce": zero, "kl": zero, "feat": zero}
        if self.regression:
            terms["ce"] = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            terms["kl"] = F.mse_loss(logits, teacher_logits.to(logits.dtype))
        else:
            terms["ce"] = F.cross_entropy(logits, labels)
            terms["kl"] = logits_kl(logits, teacher_logits, self.temperature)
        if teacher_hidden is not None:
            if self.w["emb"]:
                terms["emb"] = self.aligner.embedding_loss(out.embedding_output,
                                                           teacher_hidden[0], mask)
            if self.w["feat"]:
                terms["feat"], _ = self.aligner.feature_loss(out.features, teacher_hidden, mask)
        loss = sum(self.w[k] * v for k, v in terms.items())
        return {"loss": loss} | {f"loss_{k}": v for k, v in terms.items()}


def teacher_logits_cached(teacher, dataset, args, accelerator) -> torch.Tensor:
    """Teacher logits for every (augmented) training example, computed once and cached."""
    digest = hashlib.sha256()
    for ids in dataset["input_ids"]:
        digest.update(np.asarray(ids, dtype=np.int32).tobytes())
    digest.update(str(Path(args.teacher).resolve()).encode())
    cache = Path(args.output_dir) / "cache" / f"teacher-logits-{digest.hexdigest()[:20]}.npy"
    if cache.is_file():
        return torch.from_numpy(np.load(cache))
    loader = DataLoader(dataset, batch_size=4 * args.batch_size)
    chunks = []
    with torch.no_grad():
        for batch in tqdm(loader, desc="teacher logits", disable=not accelerator.is_main_process):
            batch = {k: v.to(accelerator.device) for k, v in batch.items() if k != "labels"}
            chunks.append(teacher(**batch).logits.float().cpu())
    logits = torch.cat(chunks)
    if accelerator.is_main_process:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, logits.numpy())
    return logits


class WithTeacherLogits(torch.utils.data.Dataset):
    """A tokenised dataset whose items also carry the cached teacher logits."""

    def __init__(self, dataset, logits: torch.Tensor) -> None:
        self.dataset, self.logits = dataset, logits

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], "teacher_logits": self.logits[i]}


def build_student(args, tokenizer, num_labels: int, regression: bool):
    """The stage-1 student with a fresh head, or a fresh student from a preset/config."""
    kwargs = {"num_labels": num_labels,
              "problem_type": "regression" if regression else "single_label_classification"}
    if args.student:
        if not (Path(args.student) / "config.json").is_file():
            raise FileNotFoundError(f"--student {args.student}: no config.json (expected a "
                                    f"stage-1 output folder from recipes/pretrain.py)")
        student = SpikeBertForSequenceClassification.from_pretrained(args.student, **kwargs)
    else:
        config = build_student_config(args.preset, args.config, args.override, tokenizer)
        config.num_labels, config.problem_type = num_labels, kwargs["problem_type"]
        student = SpikeBertForSequenceClassification(config)
    check_vocab_compatible(tokenizer, student.config.vocab_size)
    return student


def build_aligner(args, student_config, teacher_config) -> FeatureAligner:
    """Stage 1's alignment maps when the stage-1 folder has them, else fresh ones."""
    aligner = FeatureAligner(student_config.hidden_size, teacher_config.hidden_size,
                             student_config.num_hidden_layers)
    path = Path(args.student or "") / "aligner.safetensors"
    if args.student and path.is_file():
        state = load_file(str(path))
        missing = [k for k in aligner.state_dict() if k not in state]
        if not missing:
            aligner.load_state_dict(state, strict=False)
    return aligner


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    spec = get_task(args.task)
    accelerator = make_accelerator(args, f"stage2-{spec.name}",
                                   find_unused_parameters=not (args.w_emb and args.w_feat))
    set_seed(args.seed)
    data, split_info = load_task(spec, data_dir=args.data_dir, files=files_from_args(args),
                                 seed=args.split_seed, allow_hub=not args.no_hub)
    if args.max_train_samples:
        data["train"] = data["train"].select(range(min(args.max_train_samples,
                                                       len(data["train"]))))
    teacher, tokenizer = load_teacher(args.teacher, for_classification=True)
    if teacher.config.num_labels != spec.num_labels:
        raise ValueError(f"teacher {args.teacher} has {teacher.config.num_labels} labels but "
                         f"task {spec.name} has {spec.num_labels}; fine-tune a teacher for it "
                         f"with recipes/finetune_teacher.py")
    student = build_student(args, tokenizer, spec.num_labels, spec.is_regression)
    max_length = args.max_length or student.config.max_position_embeddings

    train = data["train"]
    if not args.no_augment:
        config = AugmentConfig(p_mask=args.p_mask, p_pos=args.p_pos, p_ng=args.p_ng,
                               n_iter=args.n_iter, mask_token=tokenizer.mask_token,
                               language=spec.language, seed=args.seed)
        with accelerator.main_process_first():
            train = augment_dataset(train, text_fields=spec.text_fields, config=config,
                                    cache_dir=Path(args.output_dir) / "cache")
        train = train.remove_columns(["orig_index", "aug_index"])
    data["train"] = train
    encoded = tokenize_task(data, tokenizer, max_length, spec)
    teacher.to(accelerator.device, teacher_dtype(accelerator.device))
    with accelerator.main_process_first():
        logits = teacher_logits_cached(teacher, encoded["train"], args, accelerator)
    train_set = WithTeacherLogits(encoded["train"], logits)

    if args.max_steps is None:
        per_epoch = len(train_set) // (args.batch_size * accelerator.num_processes)
        args.max_steps = max(1, math.ceil(args.epochs * per_epoch
                                          / args.gradient_accumulation_steps))
    aligner = build_aligner(args, student.config, teacher.config)
    model = Stage2(student, aligner, args, spec.is_regression)
    optimizer, scheduler = make_optimizer(model, args)
    train_dl = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                          num_workers=args.num_workers)
    dev_dl = DataLoader(encoded["dev"], batch_size=2 * args.batch_size)
    model, optimizer, train_dl, dev_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, dev_dl, scheduler)
    need_hidden = bool(args.w_emb or args.w_feat)

    def losses(batch) -> dict[str, torch.Tensor]:
        hidden = None
        if need_hidden:
            with torch.no_grad():
                hidden = teacher.base_model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch.get("token_type_ids"),
                    output_hidden_states=True).hidden_states
        return model(batch, batch["teacher_logits"], hidden)

    out_dir = Path(args.output_dir)
    best = {"step": -1, spec.primary_metric: -math.inf}
    best_file = out_dir / "best.json"
    if best_file.is_file():  # a resumed run keeps the best it had found
        best = json.loads(best_file.read_text())

    def evaluate(step: int) -> None:
        nonlocal best
        metrics = evaluate_model(accelerator.unwrap_model(model).student, dev_dl, accelerator,
                                 spec)
        accelerator.log({f"dev_{k}": v for k, v in metrics.items()}, step=step)
        if metrics[spec.primary_metric] > best[spec.primary_metric]:
            best = {"step": step, **metrics}
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).student.save_pretrained(out_dir)
                tokenizer.save_pretrained(out_dir)
                best_file.write_text(json.dumps(best, indent=2))

    step = train_loop(accelerator, args, model, optimizer, scheduler, train_dl, losses,
                      evaluate, desc=f"stage 2 ({spec.name})")
    if best["step"] != step:
        evaluate(step)
    result = {"task": spec.name, "teacher": args.teacher, "student": args.student,
              "augmented_examples": len(train_set), "steps": step, "dev": best,
              "split": split_info}
    if accelerator.is_main_process:
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    accelerator.print(f"stage-2 student saved to {out_dir.resolve()} (best dev "
                      f"{spec.primary_metric} {100 * best[spec.primary_metric]:.2f} "
                      f"at step {best['step']})")
    finish(accelerator)
    return result


if __name__ == "__main__":
    main()
