"""A whole SpikeBERT training step against the same model built with SpikingJelly neurons.

One step = forward with labels (cross-entropy), backward, ``AdamW.step``; gradients are set to
None before each step (untimed). ``float32`` runs the fp32 model as is; ``bfloat16`` runs the
same fp32 model (fp32 weights and optimizer) under ``torch.autocast(dtype=torch.bfloat16)``,
what ``accelerate launch --mixed_precision bf16`` does: matmuls in bf16, spikes emitted in
bf16, membranes in fp32. ``ours`` is ``SpikeBertForSequenceClassification`` as
configured by its preset (``spike_kernels.lif`` neurons, the fused spiking attention);
``spikingjelly`` is the same config with ``neuron_impl="spikingjelly"``: SpikingJelly
``LIFNode`` neurons, plain matmuls for attention and ``nn.Linear`` (ours' spiking Linears keep
their spike-count inputs for backward in bf16), everything else identical (architecture with
the fused Q/K/V projection, weights, data, gradient checkpointing when the preset has it).

Batch 32 of random token ids at the preset's full length (``max_position_embeddings``: 64
for ``mini``, 128 for ``paper``), no padding, 2 labels. ``mini`` runs everywhere, ``paper``
on CUDA only. ``peak_bytes`` is the memory one step allocates above parameters and optimizer
state (activations, gradients, temporaries); ``peak_total_bytes`` adds those back.
"""

from __future__ import annotations

import pytest
import torch

import benchlib as bl

PROVIDERS = {"ours": "spike_kernels", "spikingjelly": "spikingjelly"}
BATCH = 32


def _state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    tensors = [*model.parameters()]
    for state in optimizer.state.values():
        tensors += [t for t in state.values() if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _sj_detail() -> str:
    sel = bl._sj_selection()
    if bl.DEVICE != "cuda" or sel is None:
        return f"spikingjelly {bl.dist_version('spikingjelly')} LIFNode ({bl.DEVICE} path)"
    try:
        impl = sel.diagnostics(torch.device("cuda"))["implementation"]
    except Exception as err:
        impl = f"unknown ({type(err).__name__})"
    return f"spikingjelly {bl.dist_version('spikingjelly')} LIFNode, CUDA implementation {impl}"


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("preset", ["mini", "paper"])
def test_train_step(bench, preset: str, dtype: str, provider: str) -> None:
    device = bl.DEVICE
    if preset == "paper" and device != "cuda":
        bl.skip("the paper preset's training step is benchmarked on CUDA only "
                "(mini is the CPU case)")
    spikebert = bl.import_or_skip("spikebert", "the project's spikebert requirements "
                                               "(transformers)")
    if provider == "spikingjelly":
        bl.import_or_skip("spikingjelly.activation_based.neuron", "spikingjelly")
    torch.manual_seed(0)
    config = spikebert.SpikeBertConfig.from_preset(preset, num_labels=2,
                                                   neuron_impl=PROVIDERS[provider])
    model = spikebert.SpikeBertForSequenceClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=5e-3)
    length = config.max_position_embeddings
    gen = torch.Generator(device=device).manual_seed(0)
    input_ids = torch.randint(1, config.vocab_size, (BATCH, length), device=device,
                              generator=gen)
    attention_mask = torch.ones_like(input_ids)
    labels = torch.randint(0, 2, (BATCH,), device=device, generator=gen)

    def setup():
        optimizer.zero_grad(set_to_none=True)

    autocast = dtype != "float32"

    def step():
        with torch.autocast(device, dtype=bl.DTYPES[dtype], enabled=autocast):
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        optimizer.step()

    detail = (f"SpikeBertForSequenceClassification({preset}, neuron_impl="
              f"{PROVIDERS[provider]!r}, gradient_checkpointing={config.gradient_checkpointing})"
              + (f", torch.autocast({dtype})" if autocast else ""))
    if autocast and device == "cpu":  # bf16 matmuls are fast only with AMX / AVX512-BF16
        detail += f"; CPU capability {torch.backends.cpu.get_cpu_capability()}"
    if provider == "spikingjelly":
        detail += f"; {_sj_detail()}"

    def metrics(stats):
        state = _state_bytes(model, optimizer)
        return {"samples_per_s": BATCH / stats["median"], "state_bytes": state}

    result = bench.run(step, setup=setup, group="train_step", mode="train",
                       params={"preset": preset, "batch": BATCH, "length": length},
                       shape=[BATCH, length], dtype=dtype, provider=provider,
                       baseline="ours", detail=detail, metrics=metrics)
    if result["peak_bytes"] is not None:
        result["peak_total_bytes"] = result["peak_bytes"] + result["state_bytes"]
    # the cross-precision target: every step against the SpikingJelly-built fp32 step
    # of the same case (whichever of the two ran first)
    bench.recorder.add(result)
    rows = [r for r in bench.recorder.results
            if r["group"] == "train_step" and r["params"] == result["params"]]
    sj32 = next((r for r in rows if r["provider"] == "spikingjelly"
                 and r["dtype"] == "float32"), None)
    if sj32 is None:
        return
    for r in rows:
        r["speedup_vs_spikingjelly_float32"] = sj32["time_s"]["median"] / r["time_s"]["median"]
        if r["peak_bytes"] and sj32["peak_bytes"]:
            r["memory_vs_spikingjelly_float32"] = r["peak_bytes"] / sj32["peak_bytes"]
    bench.recorder.write()
