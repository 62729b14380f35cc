"""Stage 1: general distillation of a pre-trained BERT into SpikeBERT (docs/DESIGN.md §3).

The student (a ``SpikeBertModel``) learns, on unlabelled text, to reproduce the teacher's
embedding output (through an MLP) and its hidden states (each student block, averaged over
the T time steps, through a Linear+LayerNorm, standardised over the batch); the losses are
in :mod:`spikebert.distill`.

Offline quick start (the packaged MiniLM teacher, the English corpus of the data folder)::

    accelerate launch --cpu recipes/pretrain.py --teacher minilm --corpus corpus_en \\
        --data_dir ../shared/data --preset mini --max_steps 50 --output_dir outputs/stage1

Paper-faithful defaults (needs the Hub): ``--teacher bert-base-cased --corpus
wikipedia_en+bookcorpus``. Two CPU processes: ``accelerate launch --multi_gpu
--num_processes 2 recipes/pretrain.py ...``; bf16 autocast: ``--mixed_precision bf16``.
Resume a killed run: the same command with ``--resume_from_checkpoint latest``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from spikebert import SpikeBertModel, trainer
from spikebert import arguments as cli
from spikebert.checkpoint import run_fingerprint, sha256_bytes, sha256_file, weights_hash
from spikebert.data import check_vocab_compatible, load_corpus, pack_corpus
from spikebert.distill import FeatureAligner, student_forward
from spikebert.loading import build_student_config, check_max_length, load_teacher, resolve_teacher


@dataclass
class Stage1Arguments:
    teacher: str = field(default="bert-base-cased", metadata={
        "help": "teacher directory or Hub name; 'minilm' = the packaged offline MiniLM"})
    corpus: str = field(default="wikipedia_en+bookcorpus", metadata={
        "help": "text file, folder, name in --data_dir (corpus_en) or Hub corpus; join with '+'"})
    preset: str = field(default="mini", metadata={"help": "student preset: mini | paper"})
    config: str | None = field(default=None, metadata={"help": "student config.json"})
    override: list[str] = field(default_factory=list, metadata={
        "help": "student config key=value pairs, e.g. num_hidden_layers=4 time_steps=2"})
    seq_length: int | None = field(default=None, metadata={
        "help": "tokens per packed block (default: the student's max length)"})
    max_blocks: int = field(default=200_000, metadata={"help": "cap on packed blocks"})
    holdout_fraction: float = 0.02
    w_emb: float = field(default=1.0, metadata={"help": "embedding alignment weight"})
    w_feat: float = field(default=1.0, metadata={"help": "feature alignment weight"})
    ignored_layers: int = field(default=0, metadata={
        "help": "first student blocks left out of the feature loss"})
    no_normalize: bool = field(default=False, metadata={
        "help": "compare raw features (no standardisation over the batch)"})

    def __post_init__(self) -> None:
        cli.check_count("--seq_length", self.seq_length, 3, none_ok=True)
        cli.check_count("--max_blocks", self.max_blocks, 1)
        cli.check_count("--ignored_layers", self.ignored_layers, 0)
        cli.check_finite("--holdout_fraction", self.holdout_fraction, low=0.0, high=0.5)
        cli.check_finite("--w_emb", self.w_emb, low=0.0)
        cli.check_finite("--w_feat", self.w_feat, low=0.0)
        if self.w_emb == 0 and self.w_feat == 0:
            raise ValueError("--w_emb and --w_feat are both 0: nothing to learn")


class Stage1(nn.Module):
    """Student + alignment maps in one module, so one ``prepare`` (one DDP) covers both."""

    def __init__(self, student: SpikeBertModel, aligner: FeatureAligner) -> None:
        super().__init__()
        self.student, self.aligner = student, aligner

    def forward(self, batch: dict, teacher_hidden: tuple, w_emb: float, w_feat: float,
                normalize: bool) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]
        _, hidden = student_forward(self.student, batch)
        emb = self.aligner.embedding_loss(hidden[0], teacher_hidden[0], mask)
        feat, _ = self.aligner.feature_loss(hidden[1:], teacher_hidden, mask, normalize)
        return {"loss": w_emb * emb + w_feat * feat, "loss_emb": emb, "loss_feat": feat}


def corpus_hash(corpora) -> str:
    """SHA-256 over the corpora's files (or Hub ids, for streamed corpora)."""
    parts = [sha256_file(p) for c in corpora for p in c.files] + [c.hub or "" for c in corpora]
    return sha256_bytes("\n".join(parts).encode())


def main(argv: list[str] | None = None) -> Path:
    stage, data, args = cli.parse_arguments(
        (Stage1Arguments, cli.DataArguments, cli.TrainingArguments), argv,
        __doc__.split("\n\n")[0],
        defaults={"lr": 5e-4, "weight_decay": 0.01, "batch_size": 16, "max_steps": 1000})
    accelerator = trainer.make_accelerator(
        args, "stage1", find_unused_parameters=stage.w_emb == 0 or stage.w_feat == 0)
    set_seed(args.seed)

    teacher, tokenizer = load_teacher(resolve_teacher(stage.teacher))
    config = build_student_config(stage.preset, stage.config, stage.override, tokenizer)
    check_vocab_compatible(tokenizer, config.vocab_size)
    seq_length = check_max_length(stage.seq_length or config.max_position_embeddings,
                                  "--seq_length", student=config.max_position_embeddings,
                                  teacher=teacher.config.max_position_embeddings)
    corpora = [load_corpus(name, data_dir=data.data_dir, allow_hub=not data.no_hub)
               for name in stage.corpus.split("+")]
    student = SpikeBertModel(config)
    aligner = FeatureAligner(config.hidden_size, teacher.config.hidden_size,
                             config.num_hidden_layers, stage.ignored_layers)
    model = Stage1(student, aligner)
    run = trainer.start_run(accelerator, args, run_fingerprint(
        cli.as_dict(stage, data, args), teacher=weights_hash(teacher),
        student_init=weights_hash(model), corpus=corpus_hash(corpora)))

    parts = []
    with accelerator.main_process_first():  # the main process packs and caches first
        for corpus in corpora:
            parts.append(pack_corpus(corpus, tokenizer, seq_length,
                                     cache_dir=Path(args.output_dir) / "cache",
                                     max_blocks=stage.max_blocks))
    splits = [part.split_holdout(stage.holdout_fraction, seed=args.seed) for part in parts]
    train_set, held = ConcatDataset([s[0] for s in splits]), ConcatDataset([s[1] for s in splits])
    if len(train_set) < args.batch_size:
        raise ValueError(f"corpus {stage.corpus!r} gave {len(train_set)} training blocks of "
                         f"{seq_length} tokens, fewer than --batch_size {args.batch_size}")

    optimizer, scheduler = trainer.make_optimizer(model, args)
    train_dl = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                          num_workers=args.num_workers)
    held_dl = DataLoader(held, batch_size=args.batch_size)
    model, optimizer, train_dl, held_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, held_dl, scheduler)
    teacher.to(accelerator.device)
    accelerator.init_trackers("stage1", config=cli.tracker_config(stage, data, args))

    def losses(batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            hidden = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             token_type_ids=batch.get("token_type_ids"),
                             output_hidden_states=True).hidden_states
        return model(batch, hidden, stage.w_emb, stage.w_feat, not stage.no_normalize)

    def held_out(step: int) -> None:
        if not len(held):
            return
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad(), accelerator.autocast():
            for batch in held_dl:
                loss = accelerator.gather_for_metrics(losses(batch)["loss"].reshape(1))
                total, count = total + loss.float().sum().item(), count + loss.numel()
        model.train()
        accelerator.log({"heldout_loss": total / max(count, 1)}, step=step)

    step = trainer.train(accelerator, args, run, model, optimizer, scheduler, train_dl, losses,
                         held_out, desc="stage 1", tokens_per_sample=seq_length)
    held_out(step)

    out_dir = Path(args.output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.student.save_pretrained(out_dir, safe_serialization=True)
        save_file({k: v.contiguous() for k, v in unwrapped.aligner.state_dict().items()},
                  str(out_dir / "aligner.safetensors"))
        tokenizer.save_pretrained(out_dir)
        (out_dir / "stage1.json").write_text(json.dumps(
            {"teacher": stage.teacher, "corpus": stage.corpus, "steps": step,
             "train_blocks": len(train_set), "heldout_blocks": len(held),
             "seq_length": seq_length, "seed": args.seed, "fingerprint": run.fingerprint},
            indent=2))
    accelerator.print(f"stage-1 student saved to {out_dir.resolve()}")
    trainer.finish(accelerator)
    return out_dir


if __name__ == "__main__":
    main()
