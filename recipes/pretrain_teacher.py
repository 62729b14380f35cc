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

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

from spikebert import arguments as cli
from spikebert import trainer
from spikebert.checkpoint import data_hash, run_fingerprint, sha256_bytes, sha256_file
from spikebert.data import get_task, load_corpus, load_task, pack_corpus
from spikebert.wordpiece import train_wordpiece, unknown_rate


@dataclass
class TeacherMLMArguments:
    corpus: str = field(default="corpus_zh", metadata={
        "help": "text file, folder or name in --data_dir; join several with '+'"})
    tasks: list[str] = field(default_factory=list, metadata={
        "help": "tasks whose training texts join the tokenizer and MLM text"})
    vocab_size: int = 8000
    min_frequency: int = 2
    num_layers: int = 4
    hidden_size: int = 256
    num_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 512
    seq_length: int = field(default=128, metadata={"help": "tokens per packed block"})
    mlm_probability: float = 0.15
    holdout_fraction: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "min_frequency", "num_layers", "hidden_size", "num_heads",
                     "intermediate_size"):
            cli.check_count(f"--{name}", getattr(self, name), 1)
        cli.check_finite("--mlm_probability", self.mlm_probability, low=0.0, high=1.0,
                         low_open=True)
        if self.mlm_probability == 1.0:
            raise ValueError("--mlm_probability must be below 1, got 1.0")
        cli.check_finite("--holdout_fraction", self.holdout_fraction, low=0.0, high=0.5)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"--hidden_size {self.hidden_size} is not a multiple of "
                             f"--num_heads {self.num_heads}")
        if not 3 <= self.seq_length <= self.max_position_embeddings:
            raise ValueError(f"--seq_length must be in [3, --max_position_embeddings="
                             f"{self.max_position_embeddings}], got {self.seq_length}")


def training_texts(mlm: TeacherMLMArguments, data: cli.DataArguments):
    """Corpus lines, each task's training texts (both sides of a pair), and a hash of all
    the sources (corpus files, task files, split seed)."""
    corpora = [load_corpus(name, data_dir=data.data_dir, allow_hub=not data.no_hub)
               for name in mlm.corpus.split("+")]
    corpus = [line for c in corpora for line in c.iter_texts()]
    tasks, sources = {}, [sha256_file(p) for c in corpora for p in c.files]
    for name in mlm.tasks:
        spec = get_task(name)
        dataset, info = load_task(spec, data_dir=data.data_dir, seed=data.split_seed,
                                  allow_hub=not data.no_hub)
        tasks[spec.name] = [t for f in spec.text_fields for t in dataset["train"][f] if t]
        sources.append(data_hash(info))
    return corpus, tasks, sha256_bytes("\n".join(sources).encode())


def main(argv: list[str] | None = None) -> dict:
    mlm, data, args = cli.parse_arguments(
        (TeacherMLMArguments, cli.DataArguments, cli.TrainingArguments), argv,
        __doc__.split("\n\n")[0],
        defaults={"lr": 5e-4, "weight_decay": 0.01, "batch_size": 32, "max_steps": 1000,
                  "lr_scheduler": "linear"})
    accelerator = trainer.make_accelerator(args, "teacher_mlm")
    set_seed(args.seed)
    out = Path(args.output_dir)
    corpus, tasks, sources_hash = training_texts(mlm, data)
    texts = corpus + [t for task_texts in tasks.values() for t in task_texts]
    if not texts:
        raise ValueError(f"no text in --corpus {mlm.corpus!r} or --tasks {mlm.tasks}")
    run = trainer.start_run(accelerator, args, run_fingerprint(cli.as_dict(mlm, data, args),
                                                               data=sources_hash))

    # the main process trains the tokenizer and saves it; a resumed run and the other
    # processes load that copy, so every process and every restart use the same vocabulary
    with accelerator.main_process_first():
        if (run.resume_from is not None or not accelerator.is_main_process) and (
                out / "tokenizer.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(out)
        else:
            tokenizer = train_wordpiece(texts, vocab_size=mlm.vocab_size,
                                        min_frequency=mlm.min_frequency,
                                        model_max_length=mlm.max_position_embeddings)
            tokenizer.save_pretrained(out)
        blocks = pack_corpus(texts, tokenizer, mlm.seq_length, cache_dir=out / "cache")
    train_set, held = blocks.split_holdout(mlm.holdout_fraction, seed=args.seed)
    if len(train_set) < args.batch_size:
        raise ValueError(f"{len(train_set)} training blocks of {mlm.seq_length} tokens are "
                         f"fewer than --batch_size {args.batch_size}; add text or shorten blocks")

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=mlm.hidden_size,
                        num_hidden_layers=mlm.num_layers, num_attention_heads=mlm.num_heads,
                        intermediate_size=mlm.intermediate_size,
                        max_position_embeddings=mlm.max_position_embeddings,
                        pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config)
    optimizer, scheduler = trainer.make_optimizer(model, args)
    train_dl = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                          num_workers=args.num_workers)
    # BERT's masking (15%, then 80% [MASK] / 10% random / 10% kept). Training masks draw from
    # the global RNG when the loss is computed (checkpoints save it: exact resume); the
    # held-out masks come from a seeded generator, the same at every evaluation.
    masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm.mlm_probability)
    held_masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm.mlm_probability,
                                                  seed=args.seed)
    held_batches = []
    for batch in DataLoader(held, batch_size=args.batch_size):
        inputs, labels = held_masker.torch_mask_tokens(batch["input_ids"].clone())
        held_batches.append({**batch, "input_ids": inputs, "labels": labels})
    model, optimizer, train_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, scheduler)
    accelerator.init_trackers("teacher_mlm", config=cli.tracker_config(mlm, data, args))

    def mlm_loss(batch) -> dict[str, torch.Tensor]:
        inputs, labels = masker.torch_mask_tokens(batch["input_ids"].cpu().clone())
        batch = {**batch, "input_ids": inputs.to(accelerator.device),
                 "labels": labels.to(accelerator.device)}
        return {"loss": model(**batch).loss}

    def held_out(step: int) -> dict[str, float]:
        """Masked-token loss and accuracy on the held-out blocks (same masks every time)."""
        model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with torch.no_grad(), accelerator.autocast():
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

    step = trainer.train(accelerator, args, run, model, optimizer, scheduler, train_dl, mlm_loss,
                         held_out, desc="teacher MLM", tokens_per_sample=mlm.seq_length)
    final = held_out(step)
    result = {"corpus": mlm.corpus, "tasks": list(tasks), "steps": step,
              "vocab_size": len(tokenizer), "train_blocks": len(train_set),
              "heldout_blocks": len(held), "seq_length": mlm.seq_length,
              "corpus_lines": len(corpus), "task_texts": {k: len(v) for k, v in tasks.items()},
              "unknown_rate": {k: unknown_rate(tokenizer, v) for k, v in tasks.items()},
              "fingerprint": run.fingerprint, **final}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(out, safe_serialization=True)
        (out / "pretrain_teacher.json").write_text(json.dumps(result, indent=2))
    accelerator.print(f"MLM teacher saved to {out.resolve()}: held-out masked-token accuracy "
                      f"{100 * final['heldout_accuracy']:.2f}% (loss {final['heldout_loss']:.3f})")
    trainer.finish(accelerator)
    return result


if __name__ == "__main__":
    main()
