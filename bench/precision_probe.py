"""Can a spiking student train under bf16 autocast? Probe a stage-1 checkpoint.

bf16 keeps 8 significant bits, so every current a bf16 matmul or LayerNorm hands to a LIF is
rounded by up to 2^-9 of its size. A neuron whose membrane lands that close to its threshold
fires in one precision and not in the other, and the flip travels on through the blocks. This
script measures, on held-out blocks of the stage-1 corpus and the student's current weights:

* ``flips``: per LIF, the share of (step, token, neuron) spikes that differ between the fp32
  forward and the same forward under ``torch.autocast(dtype=torch.bfloat16)``, beside the
  LIF's firing rate (flips as many as the spikes: the two forwards share almost none);
* ``loss``: the stage-1 alignment loss (``recipes/pretrain.py``) of both forwards;
* ``cos``: cosines between whole-student gradients: bf16 vs fp32; fp32 with only the LIF
  input currents rounded to bf16 (forward; the gradient passes unchanged) vs fp32, i.e. a
  perturbation of bf16's size and nothing else; and, for scale, two batches' fp32 gradients;
* ``error``: the bf16 gradient's error ``e = g_bf16 - g_fp32`` as a share of ``|g_fp32|``,
  and the cosine between consecutive batches' errors: near 0, the error is noise that
  averages out over steps; clearly above 0, a bias that accumulates.

Usage (a training checkpoint of ``recipes/pretrain.py``, or its finished output folder)::

    python bench/precision_probe.py --checkpoint outputs/table/stage1-en/checkpoint-1000 \\
        --teacher minilm --corpus corpus_en --data_dir ../shared/data [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from spikebert import SpikeBertModel
from spikebert.data import load_corpus, pack_corpus
from spikebert.distill import FeatureAligner, student_forward
from spikebert.loading import build_student_config, load_teacher, resolve_teacher
from spikebert.neurons import LIFNeuron

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def load_stage1(path: Path, teacher, tokenizer, preset: str, overrides: list[str]):
    """(student, aligner) from a finished stage-1 folder or a training checkpoint (whose
    ``model.safetensors`` holds ``student.*`` and ``aligner.*``; its config is rebuilt from
    ``preset`` and ``overrides``, as the run built it)."""
    if (path / "config.json").is_file():
        student = SpikeBertModel.from_pretrained(path)
        aligner_state = load_file(str(path / "aligner.safetensors"))
    else:
        config = build_student_config(preset, None, overrides, tokenizer)
        student = SpikeBertModel(config)
        state = load_file(str(path / "model.safetensors"))
        student.load_state_dict({k.removeprefix("student."): v for k, v in state.items()
                                 if k.startswith("student.")})
        aligner_state = {k.removeprefix("aligner."): v for k, v in state.items()
                         if k.startswith("aligner.")}
    config = student.config
    aligned = [int(k.split(".")[1]) for k in aligner_state if k.startswith("block_maps.")]
    aligner = FeatureAligner(config.hidden_size, teacher.config.hidden_size,
                             config.num_hidden_layers, ignored_layers=min(aligned))
    aligner.load_state_dict(aligner_state)
    return student.eval(), aligner.eval()


def stage1_loss(student, aligner, teacher_hidden, batch) -> torch.Tensor:
    """``MSE(MLP(E_s), E_t) + sum_i MSE(N(W_i F_i), N(H_m(i)))`` (weights 1, as the table)."""
    mask = batch["attention_mask"]
    _, hidden = student_forward(student, batch)
    feat, _ = aligner.feature_loss(hidden[1:], teacher_hidden, mask)
    return aligner.embedding_loss(hidden[0], teacher_hidden[0], mask) + feat


def round_currents(module, args):
    """Forward pre-hook: the LIF's input current rounded to bf16, gradient passed as is."""
    (x,) = args
    return (x + (x.to(torch.bfloat16).to(x.dtype) - x).detach(),)


def gradient(student, aligner, teacher_hidden, batch, autocast: bool) -> torch.Tensor:
    student.zero_grad()
    with torch.autocast(**BF16, enabled=autocast):
        loss = stage1_loss(student, aligner, teacher_hidden, batch)
    loss.backward()
    return torch.cat([p.grad.flatten().float() for p in student.parameters()
                      if p.grad is not None])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--teacher", default="minilm")
    parser.add_argument("--corpus", default="corpus_en")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--preset", default="mini", help="checkpoint folders only")
    parser.add_argument("--override", nargs="*", default=[], help="checkpoint folders only")
    parser.add_argument("--seq_length", type=int, default=None)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--holdout_fraction", type=float, default=0.02, help="as the run")
    parser.add_argument("--max_blocks", type=int, default=200_000, help="as the run")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.batches < 2:
        parser.error(f"--batches must be at least 2 (two batches give the gradient-noise "
                     f"scale), got {args.batches}")

    with tempfile.TemporaryDirectory() as cache:
        return probe(args, cache)


def probe(args: argparse.Namespace, cache: str) -> dict:
    teacher, tokenizer = load_teacher(resolve_teacher(args.teacher))
    student, aligner = load_stage1(args.checkpoint, teacher, tokenizer, args.preset,
                                   args.override)
    seq_length = args.seq_length or student.config.max_position_embeddings
    corpus = load_corpus(args.corpus, data_dir=args.data_dir, allow_hub=False)
    # the packed blocks are cached in a temporary folder: never write into the checkpoint
    blocks = pack_corpus(corpus, tokenizer, seq_length, cache_dir=Path(cache),
                         max_blocks=args.max_blocks)
    _, held = blocks.split_holdout(args.holdout_fraction, seed=args.seed)
    need = args.batches * args.batch_size
    if len(held) < need:
        raise ValueError(f"{len(held)} held-out blocks, fewer than --batches x --batch_size "
                         f"= {need}")
    batches = [{k: torch.stack([torch.as_tensor(held[i][k]) for i in
                                range(b * args.batch_size, (b + 1) * args.batch_size)])
                for k in held[0]} for b in range(args.batches)]

    lifs = {name: m for name, m in student.named_modules() if isinstance(m, LIFNeuron)}
    spikes: dict[str, list[torch.Tensor]] = {name: [] for name in lifs}
    for name, m in lifs.items():
        m.register_forward_hook(lambda m, i, out, name=name: spikes[name].append(out.detach()))
    flips = {name: [] for name in lifs}
    rates = {name: [] for name in lifs}
    loss32, loss16, cos16, cos_round, cos_batches = [], [], [], [], []
    error_share, cos_errors = [], []
    previous = previous_error = None
    for batch in batches:
        with torch.no_grad():
            teacher_hidden = [h.float() for h in teacher(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=True).hidden_states]
            for autocast, losses in ((False, loss32), (True, loss16)):
                with torch.autocast(**BF16, enabled=autocast):
                    losses.append(float(stage1_loss(student, aligner, teacher_hidden, batch)))
        for name in lifs:
            s32, s16 = spikes[name]
            flips[name].append(float((s32 != s16.to(s32.dtype)).float().mean()))
            rates[name].append(float(s32.float().mean()))
            spikes[name].clear()
        g32 = gradient(student, aligner, teacher_hidden, batch, autocast=False)
        g16 = gradient(student, aligner, teacher_hidden, batch, True)
        cos16.append(cosine(g32, g16))
        error = g16 - g32
        error_share.append(float(error.norm() / g32.norm()))
        hooks = [m.register_forward_pre_hook(round_currents) for m in lifs.values()]
        cos_round.append(cosine(g32, gradient(student, aligner, teacher_hidden, batch, False)))
        for h in hooks:
            h.remove()
        for name in lifs:
            spikes[name].clear()
        if previous is not None:
            cos_batches.append(cosine(g32, previous))
            cos_errors.append(cosine(error, previous_error))
        previous, previous_error = g32, error

    mean = statistics.fmean
    result = {
        "checkpoint": str(args.checkpoint), "batches": args.batches,
        "loss_fp32": mean(loss32), "loss_bf16": mean(loss16),
        "cos_bf16_vs_fp32": mean(cos16), "cos_rounded_currents_vs_fp32": mean(cos_round),
        "cos_two_batches_fp32": mean(cos_batches),
        "bf16_error_share": mean(error_share), "cos_bf16_errors_two_batches": mean(cos_errors),
        "flips": {name: mean(v) for name, v in flips.items()},
        "firing_rates_fp32": {name: mean(v) for name, v in rates.items()},
    }
    print(f"{args.checkpoint}: {args.batches} held-out batches of {args.batch_size}")
    print(f"loss  fp32 {result['loss_fp32']:.4f}   bf16 autocast {result['loss_bf16']:.4f}")
    print(f"gradient cosine  bf16 vs fp32 {result['cos_bf16_vs_fp32']:.3f}   fp32 with "
          f"bf16-rounded currents {result['cos_rounded_currents_vs_fp32']:.3f}   two "
          f"batches (fp32) {result['cos_two_batches_fp32']:.3f}")
    print(f"bf16 gradient error |g_bf16 - g_fp32| / |g_fp32| {result['bf16_error_share']:.3f}"
          f", cosine between two batches' errors {result['cos_bf16_errors_two_batches']:.4f}")
    print("per LIF: firing rate (fp32), share of spikes that differ (bf16 vs fp32 forward)")
    for name, value in result["flips"].items():
        print(f"  {name:45s} {100 * mean(rates[name]):6.2f}%  {100 * value:6.2f}%")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
