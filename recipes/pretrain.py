"""Stage 1: general distillation of a pre-trained BERT into SpikeBERT (SPEC.md §3).

The student (a ``SpikeBertModel``) learns, on unlabelled text, to reproduce the teacher's
embedding output (through an MLP) and its hidden states (each student block, averaged over
the T time steps, through a Linear+LayerNorm, standardised over the batch); the losses are
in :mod:`spikebert.distill`.

Offline quick start (the packaged MiniLM teacher, the English corpus of the data folder)::

    accelerate launch --cpu recipes/pretrain.py --teacher minilm --corpus corpus_en \\
        --data_dir ../shared/data --preset mini --max_steps 50 --output_dir outputs/stage1

Paper-faithful defaults (needs the Hub): ``--teacher bert-base-cased --corpus
wikipedia_en+bookcorpus``. Two CPU processes: ``accelerate launch --multi_gpu
--num_processes 2 recipes/pretrain.py ...``; GPUs and nodes: any ``accelerate config``.
Resume a killed run: the same command with ``--resume_from_checkpoint latest``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from spikebert import SpikeBertModel
from spikebert.data import check_vocab_compatible, load_corpus, pack_corpus
from spikebert.distill import FeatureAligner
from spikebert.training import (
    add_training_arguments,
    build_student_config,
    finish,
    load_teacher,
    make_accelerator,
    make_optimizer,
    resolve_teacher,
    teacher_dtype,
    train_loop,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", default="bert-base-cased",
                   help="teacher directory or Hub name; 'minilm' = the packaged offline MiniLM")
    p.add_argument("--corpus", default="wikipedia_en+bookcorpus",
                   help="text file, folder, name in --data_dir (corpus_en) or Hub corpus; "
                        "join several with '+'")
    p.add_argument("--data_dir", default=None, help="data folder (else $SPIKEBERT_DATA)")
    p.add_argument("--preset", default="mini", help="student preset: mini | paper")
    p.add_argument("--config", default=None, help="student config.json (instead of --preset)")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="student config overrides, e.g. num_hidden_layers=4 time_steps=2")
    p.add_argument("--seq_length", type=int, default=None,
                   help="tokens per packed block (default: the student's max length)")
    p.add_argument("--max_blocks", type=int, default=200_000,
                   help="cap on packed blocks (streamed Hub corpora are unbounded)")
    p.add_argument("--holdout_fraction", type=float, default=0.02)
    p.add_argument("--w_emb", type=float, default=1.0, help="embedding alignment weight")
    p.add_argument("--w_feat", type=float, default=1.0, help="feature alignment weight")
    p.add_argument("--ignored_layers", type=int, default=0,
                   help="first student blocks left out of the feature loss")
    p.add_argument("--no_normalize", action="store_true",
                   help="compare raw features (no standardisation over the batch)")
    add_training_arguments(p, lr=5e-4, weight_decay=0.01, batch_size=16, max_steps=1000)
    p.set_defaults(output_dir="outputs/stage1")
    args = p.parse_args(argv)
    if args.max_steps <= 0:
        p.error(f"--max_steps must be positive, got {args.max_steps}")
    return args


class Stage1(nn.Module):
    """Student + alignment maps in one module, so one ``prepare`` (one DDP) covers both."""

    def __init__(self, student: SpikeBertModel, aligner: FeatureAligner) -> None:
        super().__init__()
        self.student, self.aligner = student, aligner

    def forward(self, batch: dict, teacher_hidden: tuple, w_emb: float, w_feat: float,
                normalize: bool) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]
        out = self.student(input_ids=batch["input_ids"], attention_mask=mask,
                           token_type_ids=batch.get("token_type_ids"))
        emb = self.aligner.embedding_loss(out.embedding_output, teacher_hidden[0], mask)
        feat, _ = self.aligner.feature_loss(out.features, teacher_hidden, mask, normalize)
        return {"loss": w_emb * emb + w_feat * feat, "loss_emb": emb, "loss_feat": feat}


def load_blocks(args, tokenizer, seq_length: int, accelerator: Accelerator):
    """Packed corpus blocks (cached under the output dir), split into train and held-out."""
    parts = []
    with accelerator.main_process_first():
        for name in args.corpus.split("+"):
            corpus = load_corpus(name, data_dir=args.data_dir)
            parts.append(pack_corpus(corpus, tokenizer, seq_length,
                                     cache_dir=Path(args.output_dir) / "cache",
                                     max_blocks=args.max_blocks))
    splits = [part.split_holdout(args.holdout_fraction, seed=args.seed) for part in parts]
    train = ConcatDataset([s[0] for s in splits])
    held = ConcatDataset([s[1] for s in splits])
    if len(train) == 0:
        raise ValueError(f"corpus {args.corpus!r} gave no training blocks of {seq_length} tokens")
    return train, held


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    accelerator = make_accelerator(args, "stage1",
                                   find_unused_parameters=args.w_emb == 0 or args.w_feat == 0)
    set_seed(args.seed)

    teacher, tokenizer = load_teacher(resolve_teacher(args.teacher))
    config = build_student_config(args.preset, args.config, args.override, tokenizer)
    check_vocab_compatible(tokenizer, config.vocab_size)
    seq_length = args.seq_length or config.max_position_embeddings
    train, held = load_blocks(args, tokenizer, seq_length, accelerator)

    student = SpikeBertModel(config)
    aligner = FeatureAligner(config.hidden_size, teacher.config.hidden_size,
                             config.num_hidden_layers, args.ignored_layers)
    model = Stage1(student, aligner)
    optimizer, scheduler = make_optimizer(model, args)
    train_dl = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True,
                          num_workers=args.num_workers)
    held_dl = DataLoader(held, batch_size=args.batch_size)
    model, optimizer, train_dl, held_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, held_dl, scheduler)
    teacher.to(accelerator.device, teacher_dtype(accelerator.device))

    def losses(batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            hidden = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             token_type_ids=batch.get("token_type_ids"),
                             output_hidden_states=True).hidden_states
        return model(batch, hidden, args.w_emb, args.w_feat, not args.no_normalize)

    def held_out(step: int) -> None:
        if not len(held):
            return
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in held_dl:
                loss = accelerator.gather_for_metrics(losses(batch)["loss"].reshape(1))
                total, count = total + loss.sum().item(), count + loss.numel()
        model.train()
        accelerator.log({"heldout_loss": total / max(count, 1)}, step=step)

    step = train_loop(accelerator, args, model, optimizer, scheduler, train_dl, losses, held_out,
                      desc="stage 1", tokens_per_sample=seq_length)
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
            {"teacher": args.teacher, "corpus": args.corpus, "steps": step,
             "train_blocks": len(train), "heldout_blocks": len(held),
             "seq_length": seq_length, "seed": args.seed}, indent=2))
    accelerator.print(f"stage-1 student saved to {out_dir.resolve()}")
    finish(accelerator)
    return out_dir


if __name__ == "__main__":
    main()
