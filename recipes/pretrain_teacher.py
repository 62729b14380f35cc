"""Build a teacher offline: train a WordPiece tokenizer, then pre-train a small BERT by MLM.

For a language no packaged teacher covers. The offline MiniLM maps about two thirds of
Waimai's characters to [UNK], so the Chinese teachers are built here: a tokenizer trained on
``corpus_zh`` plus the tasks' *training* texts (one token per Chinese character, as in
``bert-base-chinese``), a BERT pre-trained by masked-language modelling (BERT's 15% with
80/10/10 replacement) on the same text, saved as a Hugging Face folder that
``recipes/finetune_teacher.py --model DIR`` fine-tunes::

    accelerate launch --cpu recipes/pretrain_teacher.py --corpus corpus_zh \\
        --tasks waimai chnsenti --data_dir ../shared/data --output_dir outputs/teacher-zh-mlm
    python recipes/finetune_teacher.py --task waimai --model outputs/teacher-zh-mlm ...

Only training splits feed the tokenizer and the MLM text (same seeded split as the other
recipes), never dev or test. Resume a killed run with ``--resume_from_checkpoint latest``:
the tokenizer saved at the start is reused, not retrained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from spikebert.data import get_task, load_corpus, load_task, pack_corpus
from spikebert.training import (
    add_training_arguments,
    finish,
    make_accelerator,
    make_optimizer,
    resolve_resume,
    train_loop,
)
from spikebert.wordpiece import train_wordpiece, unknown_rate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--corpus", default="corpus_zh",
                   help="text file, folder or name in --data_dir; join several with '+'")
    p.add_argument("--tasks", nargs="*", default=[],
                   help="tasks whose training texts join the tokenizer and MLM text")
    p.add_argument("--data_dir", default=None, help="data folder (else $SPIKEBERT_DATA)")
    p.add_argument("--split_seed", type=int, default=42, help="seed of the tasks' splits")
    p.add_argument("--vocab_size", type=int, default=8000)
    p.add_argument("--min_frequency", type=int, default=2)
    p.add_argument("--num_layers", type=int, default=4)
    p.add_argument("--hidden_size", type=int, default=256)
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--intermediate_size", type=int, default=1024)
    p.add_argument("--max_position_embeddings", type=int, default=512)
    p.add_argument("--seq_length", type=int, default=128, help="tokens per packed block")
    p.add_argument("--mlm_probability", type=float, default=0.15)
    p.add_argument("--holdout_fraction", type=float, default=0.02)
    add_training_arguments(p, lr=5e-4, weight_decay=0.01, batch_size=32, max_steps=1000,
                           scheduler="linear")
    args = p.parse_args(argv)
    if args.max_steps <= 0:
        p.error(f"--max_steps must be positive, got {args.max_steps}")
    if not 0 < args.mlm_probability < 1:
        p.error(f"--mlm_probability must be in (0, 1), got {args.mlm_probability}")
    if args.hidden_size % args.num_heads:
        p.error(f"--hidden_size {args.hidden_size} is not a multiple of --num_heads "
                f"{args.num_heads}")
    if not 3 <= args.seq_length <= args.max_position_embeddings:
        p.error(f"--seq_length must be in [3, --max_position_embeddings="
                f"{args.max_position_embeddings}], got {args.seq_length}")
    return args


def training_texts(args) -> tuple[list[str], dict[str, list[str]]]:
    """Corpus lines, and each task's training texts (both sides of a pair)."""
    corpus = [line for name in args.corpus.split("+")
              for line in load_corpus(name, data_dir=args.data_dir).iter_texts()]
    tasks = {}
    for name in args.tasks:
        spec = get_task(name)
        train = load_task(spec, data_dir=args.data_dir, seed=args.split_seed)[0]["train"]
        tasks[spec.name] = [t for field in spec.text_fields for t in train[field] if t]
    return corpus, tasks


def mask_tokens(input_ids: torch.Tensor, tokenizer, probability: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: each non-special token is chosen with ``probability``; a chosen token
    becomes [MASK] (80%), a random token (10%) or stays (10%). Returns (inputs, labels) with
    labels -100 where nothing is predicted. Draws from ``generator`` (else the global RNG,
    which checkpoints save and resume restores)."""
    where = input_ids.device if generator is None else "cpu"  # a Generator lives on the CPU

    def draw(p: float) -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=where).to(
            input_ids.device) < p

    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for token_id in tokenizer.all_special_ids:
        special |= input_ids == token_id
    chosen = draw(probability) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    to_mask = chosen & draw(0.8)
    to_random = chosen & ~to_mask & draw(0.5)
    random_ids = torch.randint(len(tokenizer), input_ids.shape, generator=generator,
                               device=where).to(input_ids.device)
    inputs = torch.where(to_mask, torch.full_like(input_ids, tokenizer.mask_token_id), input_ids)
    return torch.where(to_random, random_ids, inputs), labels


def get_tokenizer(args, texts: list[str], reuse_saved: bool):
    """The tokenizer saved in ``output_dir`` (when resuming, and on every process but the
    main one, which trains and saves it first), else a newly trained one."""
    out = Path(args.output_dir)
    if reuse_saved and (out / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(out)
    return train_wordpiece(texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                           model_max_length=args.max_position_embeddings)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = make_accelerator(args, "teacher_mlm")
    set_seed(args.seed)
    out = Path(args.output_dir)
    corpus, tasks = training_texts(args)
    texts = corpus + [t for task_texts in tasks.values() for t in task_texts]
    if not texts:
        raise ValueError(f"no text in --corpus {args.corpus!r} or --tasks {args.tasks}")
    resuming = resolve_resume(args.resume_from_checkpoint, args.output_dir) is not None
    with accelerator.main_process_first():
        tokenizer = get_tokenizer(args, texts, resuming or not accelerator.is_main_process)
        if accelerator.is_main_process:
            tokenizer.save_pretrained(out)
        blocks = pack_corpus(texts, tokenizer, args.seq_length, cache_dir=out / "cache")
    train, held = blocks.split_holdout(args.holdout_fraction, seed=args.seed)
    if len(train) < args.batch_size:
        raise ValueError(f"{len(train)} training blocks of {args.seq_length} tokens are fewer "
                         f"than --batch_size {args.batch_size}; add text or shorten blocks")

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=args.hidden_size,
                        num_hidden_layers=args.num_layers, num_attention_heads=args.num_heads,
                        intermediate_size=args.intermediate_size,
                        max_position_embeddings=args.max_position_embeddings,
                        pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config)
    optimizer, scheduler = make_optimizer(model, args)
    train_dl = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True,
                          num_workers=args.num_workers)
    held_masks = torch.Generator().manual_seed(args.seed)  # the same held-out masks each time
    held_batches = []
    for batch in DataLoader(held, batch_size=args.batch_size):
        inputs, labels = mask_tokens(batch["input_ids"], tokenizer, args.mlm_probability,
                                     held_masks)
        held_batches.append({**batch, "input_ids": inputs, "labels": labels})
    model, optimizer, train_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, scheduler)

    def mlm_loss(batch) -> dict[str, torch.Tensor]:
        inputs, labels = mask_tokens(batch["input_ids"], tokenizer, args.mlm_probability)
        return {"loss": model(**{**batch, "input_ids": inputs, "labels": labels}).loss}

    def held_out(step: int) -> dict[str, float]:
        """Masked-token loss and accuracy on the held-out blocks (same masks every time)."""
        model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for batch in held_batches:
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                masked = batch["labels"] != -100
                loss_sum += torch.nn.functional.cross_entropy(
                    logits[masked].float(), batch["labels"][masked], reduction="sum").item()
                correct += (logits[masked].argmax(-1) == batch["labels"][masked]).sum().item()
                count += int(masked.sum())
        model.train()
        metrics = {"heldout_loss": loss_sum / max(count, 1),
                   "heldout_accuracy": correct / max(count, 1)}
        accelerator.log(metrics, step=step)
        return metrics

    step = train_loop(accelerator, args, model, optimizer, scheduler, train_dl, mlm_loss,
                      held_out, desc="teacher MLM", tokens_per_sample=args.seq_length)
    final = held_out(step)
    result = {"corpus": args.corpus, "tasks": list(tasks), "steps": step,
              "vocab_size": len(tokenizer), "train_blocks": len(train),
              "heldout_blocks": len(held), "seq_length": args.seq_length,
              "corpus_lines": len(corpus), "task_texts": {k: len(v) for k, v in tasks.items()},
              "unknown_rate": {k: unknown_rate(tokenizer, v) for k, v in tasks.items()},
              **final}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(out, safe_serialization=True)
        (out / "pretrain_teacher.json").write_text(json.dumps(result, indent=2))
    accelerator.print(f"MLM teacher saved to {out.resolve()}: held-out masked-token accuracy "
                      f"{100 * final['heldout_accuracy']:.2f}% (loss {final['heldout_loss']:.3f})")
    finish(accelerator)
    return result


if __name__ == "__main__":
    main()
