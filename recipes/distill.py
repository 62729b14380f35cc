"""Stage 2: task-specific distillation of a fine-tuned teacher into SpikeBERT (docs/DESIGN.md §3).

The training set is augmented (Tang et al. 2019: [MASK], same-POS words, n-grams) item by
item as batches are drawn (``spikebert.batching.LazyAugmented``); the teacher runs on each
batch, under the run's precision, giving the logits and hidden states the student learns
from: ``w_emb*emb + w_ce*CE + w_kl*KL(teacher||student) + w_feat*feat``
(:mod:`spikebert.distill`). The checkpoint with the best dev metric is kept (test is never
used for selection), with its tokenizer and a model card (README.md), so it loads with
``transformers.pipeline("text-classification", model=DIR)`` after ``import spikebert``.

    accelerate launch --cpu recipes/distill.py --task sst2 --teacher outputs/teacher-sst2 \\
        --student outputs/stage1 --data_dir ../shared/data --output_dir outputs/stage2-sst2 \\
        --epochs 3

Ablations: no ``--student`` (no stage 1), ``--no_augment``, ``--w_kl 0`` (and the others).
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from spikebert import SpikeBertForSequenceClassification, trainer
from spikebert import arguments as cli
from spikebert.augment import AugmentConfig, Augmenter
from spikebert.batching import (
    LazyAugmented,
    LengthGroupedEpochSampler,
    TaskCollator,
    row_lengths,
)
from spikebert.checkpoint import atomic_write_text, data_hash, run_fingerprint, weights_hash
from spikebert.data import check_vocab_compatible
from spikebert.distill import FeatureAligner, prediction_losses, student_forward
from spikebert.loading import build_student_config, check_max_length, load_teacher
from spikebert.model_card import describe_student, write_model_card


@dataclass
class Stage2Arguments:
    teacher: str = field(default=None, metadata={"help": "fine-tuned teacher directory",
                                                 "required": True})
    student: str | None = field(default=None, metadata={
        "help": "stage-1 output directory; without it the student starts fresh"})
    preset: str = field(default="mini", metadata={"help": "fresh student preset: mini | paper"})
    config: str | None = field(default=None, metadata={"help": "fresh student config.json"})
    override: list[str] = field(default_factory=list, metadata={
        "help": "fresh student config key=value pairs"})
    epochs: float = field(default=30.0, metadata={"help": "used when --max_steps is unset"})
    w_emb: float = 0.1
    w_ce: float = 0.1
    w_kl: float = 1.0
    w_feat: float = 0.1
    temperature: float = 1.0
    no_augment: bool = False
    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    n_iter: int = 20
    group_by_length: bool = field(default=False, metadata={
        "help": "batch training rows of similar length together (cheaper steps when rows "
                "vary in length, e.g. ChnSenti's reviews)"})

    def __post_init__(self) -> None:
        cli.check_finite("--epochs", self.epochs, low=0.0, low_open=True)
        for name in ("w_emb", "w_ce", "w_kl", "w_feat"):
            cli.check_finite(f"--{name}", getattr(self, name), low=0.0)
        if not (self.w_emb or self.w_ce or self.w_kl or self.w_feat):
            raise ValueError("all four loss weights are 0: nothing to learn")
        cli.check_finite("--temperature", self.temperature, low=0.0, low_open=True)
        for name in ("p_mask", "p_pos", "p_ng"):
            cli.check_finite(f"--{name}", getattr(self, name), low=0.0, high=1.0)
        cli.check_count("--n_iter", self.n_iter, 1)


class Stage2(nn.Module):
    """Student classifier + alignment maps, computing the four-term stage-2 loss."""

    def __init__(self, student: SpikeBertForSequenceClassification, aligner: FeatureAligner,
                 stage: Stage2Arguments, regression: bool) -> None:
        super().__init__()
        self.student, self.aligner = student, aligner
        self.w = {k: getattr(stage, f"w_{k}") for k in ("emb", "ce", "kl", "feat")}
        self.temperature, self.regression = stage.temperature, regression

    def forward(self, batch: dict, teacher_logits: torch.Tensor,
                teacher_hidden: tuple | None) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]
        out, hidden = student_forward(self.student, batch)
        ce, kl = prediction_losses(out.logits, teacher_logits, batch["labels"],
                                   self.temperature, self.regression)
        zero = ce.new_zeros(())
        terms = {"emb": zero, "ce": ce, "kl": kl, "feat": zero}
        if teacher_hidden is not None:
            if self.w["emb"]:
                terms["emb"] = self.aligner.embedding_loss(hidden[0], teacher_hidden[0], mask)
            if self.w["feat"]:
                terms["feat"], _ = self.aligner.feature_loss(hidden[1:], teacher_hidden, mask)
        loss = sum(self.w[k] * v for k, v in terms.items())
        return {"loss": loss} | {f"loss_{k}": v for k, v in terms.items()}


def build_student(stage: Stage2Arguments, tokenizer, spec):
    """The stage-1 student with a fresh head, or a fresh student from a preset/config; labels
    named as the task names them (so ``pipeline()`` prints them)."""
    kwargs = {"num_labels": spec.num_labels,
              "problem_type": "regression" if spec.is_regression else "single_label_classification"}
    if spec.label_names and not spec.is_regression:
        kwargs["id2label"] = dict(enumerate(spec.label_names))
        kwargs["label2id"] = {name: i for i, name in enumerate(spec.label_names)}
    if stage.student:
        if not (Path(stage.student) / "config.json").is_file():
            raise FileNotFoundError(f"--student {stage.student}: no config.json (expected a "
                                    f"stage-1 output folder from recipes/pretrain.py)")
        student = SpikeBertForSequenceClassification.from_pretrained(stage.student, **kwargs)
    else:
        config = build_student_config(stage.preset, stage.config, stage.override, tokenizer)
        for key, value in kwargs.items():
            setattr(config, key, value)
        student = SpikeBertForSequenceClassification(config)
    check_vocab_compatible(tokenizer, student.config.vocab_size)
    return student


def build_aligner(stage: Stage2Arguments, student_config, teacher_config) -> FeatureAligner:
    """Stage 1's alignment maps when the stage-1 folder has matching ones, else fresh ones."""
    aligner = FeatureAligner(student_config.hidden_size, teacher_config.hidden_size,
                             student_config.num_hidden_layers)
    path = Path(stage.student or "") / "aligner.safetensors"
    if stage.student and path.is_file():
        state = load_file(str(path))
        if all(k in state for k in aligner.state_dict()):
            aligner.load_state_dict(state, strict=False)
    return aligner


def main(argv: list[str] | None = None) -> dict:
    stage, data, args = cli.parse_arguments(
        (Stage2Arguments, cli.TaskDataArguments, cli.TrainingArguments), argv,
        __doc__.split("\n\n")[0],
        defaults={"lr": 5e-4, "weight_decay": 5e-3, "batch_size": 32})
    spec, dataset, split_info = data.load()
    accelerator = trainer.make_accelerator(
        args, f"stage2-{spec.name}", find_unused_parameters=not (stage.w_emb and stage.w_feat))
    set_seed(args.seed)
    teacher, tokenizer = load_teacher(stage.teacher, for_classification=True)
    if teacher.config.num_labels != spec.num_labels:
        raise ValueError(f"teacher {stage.teacher} has {teacher.config.num_labels} labels but "
                         f"task {spec.name} has {spec.num_labels}; fine-tune a teacher for it "
                         f"with recipes/finetune_teacher.py")
    student = build_student(stage, tokenizer, spec)
    max_length = check_max_length(data.max_length or student.config.max_position_embeddings,
                                  "--max_length", student=student.config.max_position_embeddings,
                                  teacher=teacher.config.max_position_embeddings)

    train_set = dataset["train"]
    if not stage.no_augment:
        train_set = LazyAugmented(train_set, Augmenter(AugmentConfig(
            p_mask=stage.p_mask, p_pos=stage.p_pos, p_ng=stage.p_ng, n_iter=stage.n_iter,
            mask_token=tokenizer.mask_token, language=spec.language, seed=args.seed)),
            spec.text_fields)
    if args.max_steps is None:
        per_epoch = len(train_set) // (args.batch_size * accelerator.num_processes)
        args.max_steps = trainer.steps_for_epochs(stage.epochs, per_epoch,
                                                  args.gradient_accumulation_steps)
    aligner = build_aligner(stage, student.config, teacher.config)
    model = Stage2(student, aligner, stage, spec.is_regression)
    run = trainer.start_run(accelerator, args, run_fingerprint(
        cli.as_dict(stage, data, args), teacher=weights_hash(teacher),
        student_init=weights_hash(model), data=data_hash(split_info)))

    optimizer, scheduler = trainer.make_optimizer(model, args)
    # pads change nothing in a padding-invariant student (nor in the teacher, which masks
    # them), so batches stop at their longest row: a random batch of 32 SST-2 sentences is
    # ~52 tokens long, not 64: a step costs 20% less (README) and every loss term is the same
    padding = "longest" if student.config.padding_invariant else "max_length"
    collate = TaskCollator(tokenizer, spec.text_fields, max_length, padding=padding)
    order = (dict(sampler=LengthGroupedEpochSampler(
        row_lengths(train_set, tokenizer, spec.text_fields, max_length), args.batch_size,
        args.seed)) if stage.group_by_length else dict(shuffle=True))
    train_dl = DataLoader(train_set, batch_size=args.batch_size, drop_last=True,
                          num_workers=args.num_workers, collate_fn=collate, **order)
    dev_dl = DataLoader(dataset["dev"], batch_size=2 * args.batch_size, collate_fn=collate)
    model, optimizer, train_dl, dev_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, dev_dl, scheduler)
    teacher.to(accelerator.device)
    accelerator.init_trackers(f"stage2-{spec.name}", config=cli.tracker_config(stage, data, args))
    need_hidden = bool(stage.w_emb or stage.w_feat)

    def losses(batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # one teacher forward: logits, and hidden states if used
            out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          token_type_ids=batch.get("token_type_ids"),
                          output_hidden_states=need_hidden)
        return model(batch, out.logits, out.hidden_states if need_hidden else None)

    out_dir = Path(args.output_dir)

    def evaluate(step: int) -> None:
        student = accelerator.unwrap_model(model).student
        metrics = trainer.evaluate_model(student, dev_dl, accelerator, spec)
        accelerator.log({f"dev_{k}": v for k, v in metrics.items()}, step=step)
        trainer.keep_best(accelerator, run, step, metrics, spec.primary_metric, student,
                          tokenizer, out_dir)

    step = trainer.train(accelerator, args, run, model, optimizer, scheduler, train_dl, losses,
                         evaluate, desc=f"stage 2 ({spec.name})")
    if run.extra.get("best", {}).get("step") != step:
        evaluate(step)
    best = run.extra["best"]
    if best["step"] < 0:
        raise ValueError(f"dev {spec.primary_metric} was never a number (constant predictions?);"
                         f" no student was saved")
    result = {"task": spec.name, "teacher": stage.teacher, "student": stage.student,
              "train_examples": len(train_set), "steps": step, "dev": best,
              "split": split_info, "fingerprint": run.fingerprint}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        saved = SpikeBertForSequenceClassification.from_pretrained(out_dir)
        card = describe_student(saved, teacher, tokenizer, spec, dataset, max_length)
        result |= card
        atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=2, default=str))
        write_model_card(out_dir, result, command=shlex.join(
            ["recipes/distill.py", *(sys.argv[1:] if argv is None else argv)]))
    accelerator.print(f"stage-2 student saved to {out_dir.resolve()} (best dev "
                      f"{spec.primary_metric} {100 * best[spec.primary_metric]:.2f} "
                      f"at step {best['step']})")
    trainer.finish(accelerator)
    return result


if __name__ == "__main__":
    main()
