"""Tests for SpikeBertConfig, SpikeBertModel and SpikeBertForSequenceClassification (CPU).

Tiny configs (2 blocks x 32 wide, T=2, L <= 12). Thresholds are lowered from the paper's so
that every layer, the attention neuron included, fires at initialisation (with the paper's
values and random weights the attention neuron of a tiny model stays silent).
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
)

from spikebert import (
    PRESETS,
    SpikeBertConfig,
    SpikeBertForSequenceClassification,
    SpikeBertModel,
    record_firing_rates,
)

VOCAB = 50


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    # compiling the CPU LIF loop costs more than it saves on these tiny shapes
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


def tiny_config(**overrides) -> SpikeBertConfig:
    values = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, time_steps=2, max_position_embeddings=12, num_labels=3,
                  v_threshold=0.5, attention_threshold=0.25, attention_scale=0.5,
                  backend="torch")
    values.update(overrides)
    return SpikeBertConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> SpikeBertForSequenceClassification:
    torch.manual_seed(seed)
    return SpikeBertForSequenceClassification(tiny_config(**overrides)).eval()


def batch(B: int = 3, L: int = 10, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1:2, 6:] = 0
    mask[2:3, 3:] = 0
    ids[mask == 0] = 0
    return ids, mask


# ---------------------------------------------------------------------------------- config


def test_presets():
    paper = SpikeBertConfig.from_preset("paper")
    assert (paper.num_hidden_layers, paper.hidden_size, paper.num_attention_heads,
            paper.time_steps, paper.max_position_embeddings) == (12, 768, 12, 4, 128)
    mini = SpikeBertConfig.from_preset("mini", num_labels=5)
    assert mini.vocab_size == 30522 and mini.num_labels == 5
    assert set(PRESETS) == {"paper", "mini"}
    with pytest.raises(ValueError, match="unknown preset"):
        SpikeBertConfig.from_preset("huge")


def test_beta_is_the_snntorch_form():
    c = SpikeBertConfig(beta=0.9)
    assert c.tau == pytest.approx(10.0) and c.decay_input is False
    with pytest.raises(ValueError, match="not both"):
        SpikeBertConfig(beta=0.9, tau=2.0)


@pytest.mark.parametrize("bad, error, match", [
    (dict(hidden_size=30, num_attention_heads=4), ValueError, "multiple"),
    (dict(num_hidden_layers=0), ValueError, "num_hidden_layers"),
    (dict(time_steps=2.0), TypeError, "time_steps"),
    (dict(tau=1.0), ValueError, "tau"),
    (dict(beta=1.5), ValueError, "beta"),
    (dict(v_threshold=-1.0), ValueError, "v_threshold"),
    (dict(attention_threshold=float("nan")), ValueError, "finite"),
    (dict(v_reset=2.0), ValueError, "v_reset"),
    (dict(surrogate="relu"), ValueError, "surrogate"),
    (dict(surrogate_alpha=0.0), ValueError, "surrogate_alpha"),
    (dict(attention_scale=0), ValueError, "attention_scale"),
    (dict(pooling="max"), ValueError, "pooling"),
    (dict(position_embedding_type="rope"), ValueError, "position_embedding_type"),
    (dict(input_encoding="poisson"), ValueError, "input_encoding"),
    (dict(neuron_impl="snntorch"), ValueError, "neuron_impl"),
    (dict(backend="cuda"), ValueError, "backend"),
    (dict(backend="cupy"), ValueError, "backend"),
    (dict(detach_reset=1), TypeError, "detach_reset"),
    (dict(num_labels=0), ValueError, "num_labels"),
    (dict(problem_type="ranking"), ValueError, "problem_type"),
    (dict(problem_type="single_label_classification", num_labels=1), ValueError, "num_labels"),
    (dict(pad_token_id=VOCAB), ValueError, "pad_token_id"),
    (dict(type_vocab_size=-1), ValueError, "type_vocab_size"),
])
def test_config_rejects_bad_values(bad, error, match):
    with pytest.raises(error, match=match):
        tiny_config(**bad)


def test_config_round_trip(tmp_path):
    c = tiny_config(v_reset=None, surrogate="sigmoid", surrogate_alpha=3.0)
    c.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SpikeBertConfig)
    for key in ("v_reset", "surrogate", "surrogate_alpha", "hidden_size", "time_steps"):
        assert getattr(loaded, key) == getattr(c, key)
    assert SpikeBertConfig(**c.to_dict()).to_dict() == c.to_dict()


# ---------------------------------------------------------------------------------- forward


def test_output_shapes():
    model = tiny_model()
    ids, mask = batch()
    out = model(ids, mask, labels=torch.tensor([0, 2, 1]), output_hidden_states=True,
                output_attentions=True)
    T, B, L, D, H = 2, 3, 10, 32, 4
    assert out.logits.shape == (B, 3)
    assert out.loss.shape == ()
    assert len(out.hidden_states) == 3 and all(h.shape == (B, L, D) for h in out.hidden_states)
    emb = model.spikebert.embeddings(ids)
    assert torch.equal(out.hidden_states[0], emb)  # the real-valued embedding output
    assert len(out.attentions) == 2 and all(a.shape == (B, H, L, L) for a in out.attentions)
    base = SpikeBertModel(tiny_config())
    base_out = base(ids, mask, output_hidden_states=True)
    spikes = base_out.last_hidden_state
    assert spikes.shape == (T, B, L, D)
    assert torch.equal(spikes, spikes.round()) and spikes.min() >= 0  # spike counts
    assert torch.equal(base_out.hidden_states[-1], spikes.mean(0))  # per block: mean over T
    assert isinstance(model(ids, mask, return_dict=False), tuple)


def test_hidden_states_and_attentions_only_when_asked():
    model = tiny_model()
    ids, mask = batch()
    out = model(ids, mask)
    assert out.hidden_states is None and out.attentions is None
    model.config.output_hidden_states = True  # the config default, as in transformers
    assert len(model(ids, mask).hidden_states) == 3


def test_firing_rates_are_recorded_by_hooks():
    model = tiny_model()
    ids, mask = batch()
    with record_firing_rates(model) as rates:
        model(ids, mask)
    names = set(rates)
    assert "embeddings" in names and "layer.1.attention.attention" in names
    assert {"layer.0.attention.query", "layer.0.attention.key", "layer.0.attention.value",
            "layer.0.attention.output", "layer.0.mlp.fc1", "layer.0.mlp.fc2"} <= names
    assert len(names) == 1 + 2 * 7
    assert all(0.0 < float(r) < 1.0 for r in rates.values())
    # by hand: the query rate over real tokens only, from the fused Q/K/V spikes
    block = model.spikebert.encoder.layer[0].attention
    x = model.spikebert.encoding(model.spikebert.embeddings(ids))
    q = block.qkv(x)[:, :, :, 0]
    m = mask.float()
    want = (q.mean(dim=(0, 3)) * m).sum() / m.sum()
    torch.testing.assert_close(rates["layer.0.attention.query"], want)
    with record_firing_rates(model) as twice:  # two passes: weighted by real tokens
        model(ids, mask)
        model(ids, mask)
    torch.testing.assert_close(twice["embeddings"], rates["embeddings"])
    model(ids, mask)
    assert not model.spikebert._forward_pre_hooks  # hooks removed on exit
    with pytest.raises(TypeError, match="SpikeBERT"), record_firing_rates(torch.nn.Linear(2, 2)):
        pass


def test_fused_qkv_matches_three_projections():
    model = tiny_model()
    qkv = model.spikebert.encoder.layer[1].attention.qkv
    x = (torch.rand(2, 3, 5, 32) < 0.3).float()
    D = 32
    for j in range(3):
        lin = torch.nn.Linear(D, D)
        norm = torch.nn.LayerNorm(D)
        with torch.no_grad():
            lin.weight.copy_(qkv.linear.weight[j * D:(j + 1) * D])
            lin.bias.copy_(qkv.linear.bias[j * D:(j + 1) * D])
            norm.weight.copy_(qkv.norm.weight[j] + 0.1 * j)
            norm.bias.copy_(qkv.norm.bias[j] - 0.1 * j)
            qkv.norm.weight[j] += 0.1 * j
            qkv.norm.bias[j] -= 0.1 * j
        torch.testing.assert_close(qkv(x)[:, :, :, j], qkv.lif(norm(lin(x))))


def test_time_constant_input_is_projected_once():
    model = tiny_model()
    layer = model.spikebert.encoder.layer[0].attention.qkv
    x1 = (torch.rand(3, 5, 32) < 0.4).float()
    expanded = x1.unsqueeze(0).expand(2, 3, 5, 32)
    calls = []
    handle = layer.linear.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    a = layer(expanded)
    b = layer(expanded.contiguous())
    handle.remove()
    assert calls == [(3, 5, 32), (2, 3, 5, 32)]  # once, not T times
    torch.testing.assert_close(a, b)


def test_padding_does_not_change_logits():
    model = tiny_model()
    assert model.config.padding_invariant  # what lets stage 2 pad to the longest row
    ids, mask = batch(L=8)
    pad = torch.zeros(3, 4, dtype=torch.long)
    longer = model(torch.cat([ids, pad], 1), torch.cat([mask, pad], 1), output_hidden_states=True)
    short = model(ids, mask, output_hidden_states=True)
    assert torch.equal(short.logits, longer.logits)
    for a, b in zip(short.hidden_states, longer.hidden_states, strict=True):  # real tokens
        assert torch.equal(a[mask.bool()], b[:, :8][mask.bool()])


def test_pads_matter_without_masking():
    model = tiny_model(pooling="mean_all", use_attention_mask=False)
    assert not model.config.padding_invariant
    assert not tiny_model(pooling="mean_all").config.padding_invariant
    assert not tiny_model(use_attention_mask=False).config.padding_invariant
    ids, mask = batch(L=8)
    pad = torch.zeros(3, 4, dtype=torch.long)
    assert not torch.equal(model(ids, mask).logits,
                           model(torch.cat([ids, pad], 1), torch.cat([mask, pad], 1)).logits)


def test_deterministic_for_a_seed():
    ids, mask = batch()
    a, b = tiny_model(seed=3), tiny_model(seed=3)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert torch.equal(a(ids, mask).logits, b(ids, mask).logits)
    assert torch.equal(a(ids, mask).logits, a(ids, mask).logits)
    assert not torch.equal(a(ids, mask).logits, tiny_model(seed=4)(ids, mask).logits)


def test_every_parameter_gets_a_gradient():
    model = tiny_model().train()
    ids, mask = batch()
    types = (torch.arange(10) >= 5).long().expand(3, 10)
    model(ids, mask, token_type_ids=types, labels=torch.tensor([0, 2, 1])).loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing


def test_gradient_checkpointing_gives_the_same_gradients():
    ids, mask = batch()
    labels = torch.tensor([0, 2, 1])
    grads = []
    for flag in (False, True):
        model = tiny_model(gradient_checkpointing=flag).train()
        assert model.spikebert.encoder.gradient_checkpointing is flag
        model(ids, mask, labels=labels).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_sentence_pairs_use_token_types():
    model = tiny_model()
    ids, mask = batch()
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    types[mask == 0] = 0
    assert torch.equal(model(ids, mask).logits, model(ids, mask, torch.zeros_like(ids)).logits)
    assert not torch.equal(model(ids, mask).logits, model(ids, mask, types).logits)


def test_regression_and_multi_label_heads():
    model = tiny_model(num_labels=1)
    ids, mask = batch()
    out = model(ids, mask, labels=torch.tensor([0.5, 2.0, 1.0]))
    assert out.logits.shape == (3, 1) and model.config.problem_type == "regression"
    assert torch.isfinite(out.loss)
    model = tiny_model(num_labels=2, problem_type="multi_label_classification")
    out = model(ids, mask, labels=torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("overrides", [
    dict(position_embedding_type="none", type_vocab_size=0),
    dict(input_encoding="lif"),
    dict(v_reset=None, beta=0.8),
])
def test_variants_run(overrides):
    model = tiny_model(**overrides)
    ids, mask = batch()
    out = model(ids, mask, labels=torch.tensor([0, 2, 1]))
    out.loss.backward()
    assert torch.isfinite(out.logits).all()


def test_torch_and_triton_backends_agree():
    pytest.importorskip("triton")
    from spike_kernels.backend import interpreter_enabled

    if not torch.cuda.is_available() and not interpreter_enabled():
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1 before triton is imported")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids, mask = (t.to(device) for t in batch(B=3, L=6))
    ref = tiny_model(backend="torch").to(device)
    tri = tiny_model(backend="triton").to(device)
    tri.load_state_dict(ref.state_dict())
    torch.testing.assert_close(tri(ids, mask).logits, ref(ids, mask).logits,
                               rtol=1e-5, atol=1e-6)


def test_spikingjelly_neurons_give_the_same_model():
    pytest.importorskip("spikingjelly")
    ids, mask = batch()
    ref = tiny_model()
    sj = tiny_model(neuron_impl="spikingjelly", backend="auto")
    sj.load_state_dict(ref.state_dict())
    torch.testing.assert_close(sj(ids, mask).logits, ref(ids, mask).logits,
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- training


def test_a_few_steps_lower_the_loss():
    model = tiny_model().train()
    ids, mask = batch(B=4, seed=5)
    mask[3, 7:] = 0
    labels = torch.tensor([0, 1, 2, 1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# ---------------------------------------------------------------------------------- save/load


def test_save_and_load_round_trips(tmp_path):
    model = tiny_model(num_labels=2)
    ids, mask = batch()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    expected = model(ids, mask).logits
    for cls in (SpikeBertForSequenceClassification, AutoModelForSequenceClassification):
        loaded = cls.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, SpikeBertForSequenceClassification)
        assert torch.equal(loaded(ids, mask).logits, expected)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(base, SpikeBertModel)
    assert torch.equal(base(ids, mask).last_hidden_state,
                       model.spikebert(ids, mask).last_hidden_state)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PretrainedConfig)


def test_stage1_model_loads_under_a_head(tmp_path):
    torch.manual_seed(0)
    base = SpikeBertModel(tiny_config()).eval()
    base.save_pretrained(tmp_path)
    clf = SpikeBertForSequenceClassification.from_pretrained(tmp_path, num_labels=4).eval()
    ids, mask = batch()
    assert clf(ids, mask).logits.shape == (3, 4)
    assert torch.equal(clf.spikebert(ids, mask).last_hidden_state,
                       base(ids, mask).last_hidden_state)


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make, match", [
    (lambda ids, mask: (ids.clamp(max=0) + VOCAB, mask, None), "vocab_size"),
    (lambda ids, mask: (ids - 100, mask, None), "vocab_size"),
    (lambda ids, mask: (torch.ones(1, 13, dtype=torch.long), None, None),
     "max_position_embeddings"),
    (lambda ids, mask: (ids, mask[:, :5], None), "attention_mask"),
    (lambda ids, mask: (ids, mask * 2, None), "only 0"),
    (lambda ids, mask: (ids, torch.zeros_like(mask), None), "no token"),
    (lambda ids, mask: (ids, mask, torch.full_like(ids, 2)), "token_type_ids"),
    (lambda ids, mask: (ids, mask, ids[:, :3]), "token_type_ids"),
    (lambda ids, mask: (ids.float(), mask, None), "integer"),
    (lambda ids, mask: (ids[0], None, None), "batch, length"),
])
def test_bad_inputs_raise(make, match):
    model = tiny_model()
    ids, mask = batch()
    ids, mask, types = make(ids, mask)
    with pytest.raises(ValueError, match=match):
        model(ids, mask, types)


def test_bad_labels_raise():
    model = tiny_model()
    ids, mask = batch()
    with pytest.raises(ValueError, match="num_labels"):
        model(ids, mask, labels=torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="shape"):
        model(ids, mask, labels=torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------- bf16


@pytest.mark.parametrize("neuron_impl", ["spike_kernels", "spikingjelly"])
def test_bf16_autocast_training_follows_fp32(neuron_impl):
    """A short run under CPU bf16 autocast follows the fp32 loss curve (|difference| < 0.15
    at every step, both decreasing), and spikes are emitted in bf16."""
    if neuron_impl == "spikingjelly":
        pytest.importorskip("spikingjelly")
    backend = "torch" if neuron_impl == "spike_kernels" else "auto"
    ids, mask = batch(B=4, seed=5)
    labels = torch.tensor([0, 1, 2, 1])
    curves = []
    for dtype in (None, torch.bfloat16):
        model = tiny_model(neuron_impl=neuron_impl, backend=backend).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(6):
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(ids, mask, labels=labels, output_hidden_states=True)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(out.loss.item())
            if dtype is not None:
                assert out.hidden_states[1].dtype == torch.bfloat16  # spike counts in bf16
                assert all(p.dtype == torch.float32 for p in model.parameters())
        curves.append(losses)
    fp32, bf16 = curves
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) < 0.15, curves
    assert bf16[-1] < 0.8 * bf16[0], curves


def test_bf16_spikes_agree_with_fp32_except_near_threshold():
    """One block's Q/K/V spikes under bf16 autocast equal the fp32 ones, except where the fp32
    membrane lies within bf16 rounding of the threshold (T=1: H = X / tau)."""
    model = tiny_model(time_steps=1)
    qkv = model.spikebert.encoder.layer[0].attention.qkv
    x = (torch.rand(1, 8, 12, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    s32 = qkv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s16 = qkv(x)
    assert s16.dtype == torch.bfloat16
    h = qkv.norm(qkv.linear(x).unflatten(-1, (3, -1))) / model.config.tau
    differ = s16.float() != s32
    assert differ.float().mean() < 0.02
    near = (h - model.config.v_threshold).abs() < 0.05
    assert not (differ & ~near).any()


# ---------------------------------------------------------------------------------- pipeline


def test_text_classification_pipeline_loads_a_saved_student(tmp_path, monkeypatch):
    """``transformers.pipeline("text-classification", model=dir)`` offline on a saved student
    with its tokenizer (a WordPiece trained on the test fixtures): the labels come from the
    config's id2label and the scores are the model's softmax."""
    import json
    from pathlib import Path

    from transformers import pipeline

    from spikebert.wordpiece import train_wordpiece

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fixture = Path(__file__).parents[1] / "fixtures" / "sst2" / "train.jsonl"
    texts = [json.loads(line)["text"] for line in fixture.read_text().splitlines()]
    tokenizer = train_wordpiece(texts, vocab_size=300, model_max_length=12)
    labels = ["negative", "positive"]
    model = tiny_model(vocab_size=len(tokenizer), num_labels=2,
                       id2label=dict(enumerate(labels)),
                       label2id={name: i for i, name in enumerate(labels)},
                       pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    classify = pipeline("text-classification", model=str(tmp_path))
    sentences = ["a gripping , funny movie", texts[0] + " " + texts[1]]  # the 2nd: truncated
    results = classify(sentences, truncation=True)
    enc = tokenizer(sentences, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.softmax(-1)
    for result, p in zip(results, probs, strict=True):
        assert result["label"] == labels[int(p.argmax())]
        assert result["score"] == pytest.approx(float(p.max()), abs=1e-5)
    ranked = classify(sentences[0], top_k=None)
    assert {r["label"] for r in ranked} == set(labels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_spike_linear_gradients_are_identical_to_linear(dtype):
    """SpikeLinear (ours' spiking-layer Linear) gives nn.Linear's outputs and gradients bit
    for bit; on CPU it saves the input in its own dtype (no conversion), and 16-bit inputs
    are saved as they are."""
    from spikebert.spike_linear import SpikeLinear

    torch.manual_seed(0)
    ours, ref = SpikeLinear(16, 8).to(dtype), torch.nn.Linear(16, 8).to(dtype)
    ref.load_state_dict(ours.state_dict())
    x = torch.randint(0, 9, (2, 3, 4, 16)).to(dtype)  # residual spike counts
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(2, 3, 4, 8).to(dtype)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ya = ours(xa)
    ya.backward(g)
    ref(xb).backward(g)
    assert torch.equal(ya, ref(xb))
    assert torch.equal(xa.grad, xb.grad) and xa.grad.dtype == dtype
    assert torch.equal(ours.weight.grad, ref.weight.grad)
    assert torch.equal(ours.bias.grad, ref.bias.grad)
    assert [t.dtype for t in saved if t.shape == x.shape] == [dtype]


def test_spike_linear_saves_16_bits_on_gpus_only():
    """The saved-input policy: bf16 for fp32/fp64 inputs on a GPU (half the activation
    memory, exact for spike counts up to 256); on CPU and for 16-bit inputs, the input's own."""
    from spikebert.spike_linear import saved_dtype

    assert saved_dtype(torch.float32, "cuda") == torch.bfloat16
    assert saved_dtype(torch.float64, "cuda") == torch.bfloat16
    assert saved_dtype(torch.float16, "cuda") == torch.float16
    assert saved_dtype(torch.float32, "cpu") == torch.float32
    assert saved_dtype(torch.bfloat16, "cpu") == torch.bfloat16
