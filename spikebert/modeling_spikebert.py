"""SpikeBERT: a spiking Transformer for text classification (Lv et al. 2023), SPEC.md §2.

Every tensor inside the encoder is time-first, ``[T, B, L, D]``::

    embedding  E = word(ids) + position + token type               [B, L, D]  (real-valued)
    spikes     X = Heaviside(E) at every step (or a LIF of E)      [T, B, L, D]
    block      Q, K, V = LIF(LayerNorm(Linear(X)))                 per head [T, B, H, L, Dh]
               A = LIF_attn(scale * (Q K^T) V)                     fused op, no softmax
               X = X + LIF(LayerNorm(Linear(A)))
               X = X + LIF(LN(Linear(LIF(LN(Linear(X, 4D))))), D)  spiking MLP
    feature    F_i = mean over T of block i's output               [B, L, D]  (distillation)
    head       logits = mean_T Linear(pool_L(LayerNorm(X)))        [B, num_labels]

Residuals add spike tensors, so the stream holds small non-negative integers. Pad tokens are
masked as keys/values in attention and left out of the mean pooling; since everything else is
per token, padding cannot change the logits (exactly: products of spikes are exact integers).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

import spike_kernels

from .configuration_spikebert import SpikeBertConfig

try:  # transformers >= 5: initialisers that skip weights loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    _init = nn.init


# --------------------------------------------------------------------------------------------
# neurons


class LIFNeuron(nn.Module):
    """Stateless multi-step LIF over the leading time dim (``spike_kernels.lif``)."""

    def __init__(self, config: SpikeBertConfig, v_threshold: float) -> None:
        super().__init__()
        self.kwargs = dict(
            tau=config.tau, decay_input=config.decay_input, v_threshold=v_threshold,
            v_reset=config.v_reset, surrogate=config.surrogate, alpha=config.surrogate_alpha,
            detach_reset=config.detach_reset, backend=config.backend,
            recompute=config.lif_recompute,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spike_kernels.lif(x, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items())


class SpikingJellyNeuron(nn.Module):
    """The same neuron as SpikingJelly's ``LIFNode(step_mode="m")``, reset after every call."""

    def __init__(self, config: SpikeBertConfig, v_threshold: float) -> None:
        super().__init__()
        try:
            from spikingjelly.activation_based import neuron, surrogate
        except ImportError as err:
            raise ImportError('neuron_impl="spikingjelly" needs spikingjelly '
                              "(pip install spikingjelly)") from err
        names = {"sigmoid": "Sigmoid", "atan": "ATan", "piecewise_quadratic": "PiecewiseQuadratic",
                 "piecewise_exp": "PiecewiseExp", "soft_sign": "SoftSign",
                 "super_spike": "SuperSpike", "erf": "Erf"}
        alpha = spike_kernels.get_surrogate(config.surrogate, config.surrogate_alpha).alpha
        kwargs = dict(tau=config.tau, decay_input=config.decay_input, v_threshold=v_threshold,
                      v_reset=config.v_reset, detach_reset=config.detach_reset, step_mode="m",
                      surrogate_function=getattr(surrogate, names[config.surrogate])(alpha=alpha))
        if "backend" in inspect.signature(neuron.LIFNode).parameters:
            kwargs["backend"] = "torch" if config.backend == "auto" else config.backend
        elif config.backend != "auto":
            raise ValueError(f"this spikingjelly version chooses its backend itself; "
                             f"use backend='auto', not {config.backend!r}")
        self.node = neuron.LIFNode(**kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.node(x)
        self.node.reset()
        return s


def make_neuron(config: SpikeBertConfig, v_threshold: float) -> nn.Module:
    """The neuron factory: a multi-step LIF from ``config.neuron_impl``."""
    if config.neuron_impl == "spikingjelly":
        return SpikingJellyNeuron(config, v_threshold)
    return LIFNeuron(config, v_threshold)


def firing_rate(s: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the spikes ``s`` ``[T, B, L, D]`` over steps, neurons and real tokens
    (``mask`` ``[B, L]``, 1 = token; None = every position)."""
    s = s.detach().float()
    if mask is None:
        return s.mean()
    m = mask.to(s.dtype)
    per_token = s.mean(dim=(0, 3))  # [B, L]
    return (per_token * m).sum() / m.sum()


class Probe:
    """What a forward pass records besides its outputs: the firing rate of every LIF layer
    (``rates``) and/or the last block's attention map at the last step (``attention_map``)."""

    def __init__(self, mask: torch.Tensor | None, rates: bool, attention_map: bool) -> None:
        self.mask = mask
        self.rates: dict[str, torch.Tensor] | None = {} if rates else None
        self.want_map = attention_map
        self.attention_map: torch.Tensor | None = None

    def record(self, name: str, s: torch.Tensor) -> None:
        if self.rates is not None:
            self.rates[name] = firing_rate(s, self.mask)


# --------------------------------------------------------------------------------------------
# layers


class SpikingLinear(nn.Module):
    """``LIF(LayerNorm(Linear(x)))`` over ``[T, B, L, in]``."""

    def __init__(self, config: SpikeBertConfig, n_in: int, n_out: int,
                 v_threshold: float | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm = nn.LayerNorm(n_out, eps=config.layer_norm_eps)
        self.lif = make_neuron(config, config.v_threshold if v_threshold is None else v_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.norm(self.linear(x)))


class SpikingSelfAttention(nn.Module):
    """SSA: Q, K, V spikes, ``LIF_attn(scale * Q K^T V)`` per head (no softmax), projection."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.query = SpikingLinear(config, D, D)
        self.key = SpikingLinear(config, D, D)
        self.value = SpikingLinear(config, D, D)
        self.output = SpikingLinear(config, D, D)
        self.scale = config.attention_scale
        if config.neuron_impl == "spike_kernels":  # matmuls and neuron in one fused op
            self.attn = spike_kernels.SpikingAttention(
                v_threshold=config.attention_threshold, tau=config.tau,
                decay_input=config.decay_input, v_reset=config.v_reset,
                detach_reset=config.detach_reset,
                surrogate_function=spike_kernels.get_surrogate(config.surrogate,
                                                               config.surrogate_alpha),
                scale=config.attention_scale, backend=config.backend,
                recompute=config.lif_recompute)
        else:  # SpikingJelly: plain matmuls, then its neuron
            self.attn = None
            self.attn_lif = make_neuron(config, config.attention_threshold)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                probe: Probe | None = None, prefix: str = "",
                want_map: bool = False) -> torch.Tensor:
        T, B, L, D = x.shape
        heads = lambda s: s.view(T, B, L, self.num_heads, self.head_dim).transpose(2, 3)
        q, k, v = self.query(x), self.key(x), self.value(x)
        hq, hk, hv = heads(q), heads(k), heads(v)
        if self.attn is not None:
            y = self.attn(hq, hk, hv, attention_mask=key_mask, out_layout="blhd")
        else:
            if key_mask is not None:
                m = key_mask.to(x.dtype)[None, :, None, :, None]
                hk, hv = hk * m, hv * m
            y = (hq @ hk.transpose(-1, -2) @ hv) * self.scale
            y = self.attn_lif(y).transpose(2, 3).reshape(T, B, L, D)
        out = self.output(y)
        if probe is not None:
            for name, s in (("query", q), ("key", k), ("value", v), ("attention", y),
                            ("output", out)):
                probe.record(f"{prefix}attention.{name}", s)
            if want_map:
                probe.attention_map = spike_kernels.attention_map(hq, hk, key_mask)
        return out


class SpikingMLP(nn.Module):
    """``LIF(LN(Linear(LIF(LN(Linear(x, 4D))), D)))``."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        self.fc1 = SpikingLinear(config, config.hidden_size, config.intermediate_size)
        self.fc2 = SpikingLinear(config, config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor, probe: Probe | None = None,
                prefix: str = "") -> torch.Tensor:
        h = self.fc1(x)
        out = self.fc2(h)
        if probe is not None:
            probe.record(f"{prefix}mlp.fc1", h)
            probe.record(f"{prefix}mlp.fc2", out)
        return out


class SpikeBertLayer(nn.Module):
    """One spiking Transformer block; residuals add spike tensors."""

    def __init__(self, config: SpikeBertConfig, index: int) -> None:
        super().__init__()
        self.attention = SpikingSelfAttention(config)
        self.mlp = SpikingMLP(config)
        self.prefix = f"layer.{index}."
        self.is_last = index == config.num_hidden_layers - 1

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                probe: Probe | None = None) -> torch.Tensor:
        want_map = probe is not None and probe.want_map and self.is_last
        x = x + self.attention(x, key_mask, probe, self.prefix, want_map)
        return x + self.mlp(x, probe, self.prefix)


class SpikeBertEmbeddings(nn.Module):
    """Word + (learned position) + (token type) embeddings: the real-valued input [B, L, D]."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, D)
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, D)
                                    if config.position_embedding_type == "learned" else None)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, D)
                                      if config.type_vocab_size > 0 else None)

    def forward(self, input_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        e = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            e = e + self.position_embeddings(positions)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                e = e + self.token_type_embeddings.weight[0]
            else:
                e = e + self.token_type_embeddings(token_type_ids)
        return e


class SpikeBertEncoder(nn.Module):
    """The blocks; returns the last spike tensor and every block's mean over T."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(SpikeBertLayer(config, i)
                                   for i in range(config.num_hidden_layers))
        self.gradient_checkpointing = False  # set by PreTrainedModel.gradient_checkpointing_enable

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                probe: Probe | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        features = []
        for block in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = self._gradient_checkpointing_func(block.__call__, x, key_mask, probe)
            else:
                x = block(x, key_mask, probe)
            features.append(x.mean(0))
        return x, tuple(features)


# --------------------------------------------------------------------------------------------
# outputs


@dataclass
class SpikeBertModelOutput(ModelOutput):
    """Output of :class:`SpikeBertModel`.

    Args:
        last_hidden_state: the last block's output ``[T, B, L, D]`` (spike counts).
        features: per block, its output averaged over T ``[B, L, D]`` (what distillation
            aligns with the teacher's hidden states).
        embedding_output: the real-valued embedding before the spike encoding ``[B, L, D]``.
        firing_rates: with ``output_firing_rates=True``, ``{layer name: rate}`` (0-d tensors):
            the mean spike output of every LIF layer over real tokens, steps and neurons.
        attention_map: with ``output_attention_map=True``, ``Q K^T`` of the last block at the
            last step ``[B, H, L, L]`` (padded keys zeroed; no gradient).
    """

    last_hidden_state: torch.Tensor | None = None
    features: tuple[torch.Tensor, ...] | None = None
    embedding_output: torch.Tensor | None = None
    firing_rates: dict[str, torch.Tensor] | None = None
    attention_map: torch.Tensor | None = None


@dataclass
class SpikeBertSequenceClassifierOutput(ModelOutput):
    """Output of :class:`SpikeBertForSequenceClassification`: ``loss`` (with ``labels``),
    ``logits`` ``[B, num_labels]`` and the fields of :class:`SpikeBertModelOutput`."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    features: tuple[torch.Tensor, ...] | None = None
    embedding_output: torch.Tensor | None = None
    firing_rates: dict[str, torch.Tensor] | None = None
    attention_map: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------
# models


class SpikeBertPreTrainedModel(PreTrainedModel):
    config_class = SpikeBertConfig
    base_model_prefix = "spikebert"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["SpikeBertLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)


def _check_inputs(config: SpikeBertConfig, input_ids, attention_mask, token_type_ids):
    """Clear errors for inputs the model cannot take; returns the boolean mask (or None)."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be an integer tensor [batch, length], got "
                         f"{input_ids.dtype} of shape {tuple(input_ids.shape)}")
    B, length = input_ids.shape
    if B == 0 or length == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)})")
    if length > config.max_position_embeddings:
        raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                         f"({config.max_position_embeddings}); truncate the input")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= config.vocab_size:
        raise ValueError(f"input_ids must be in [0, vocab_size={config.vocab_size}), got values "
                         f"in [{lo}, {hi}]: was the text tokenised for another vocabulary?")
    if token_type_ids is not None:
        if not isinstance(token_type_ids, torch.Tensor) or token_type_ids.shape != (B, length):
            shape = getattr(token_type_ids, "shape", type(token_type_ids).__name__)
            raise ValueError(f"token_type_ids must have input_ids' shape {(B, length)}, "
                             f"got {shape}")
        n_types = max(config.type_vocab_size, 1)
        if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= n_types:
            raise ValueError(f"token_type_ids must be in [0, {n_types}) "
                             f"(type_vocab_size={config.type_vocab_size})")
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != (B, length):
        shape = tuple(getattr(attention_mask, "shape", ())) or type(attention_mask).__name__
        raise ValueError(f"attention_mask must have input_ids' shape {(B, length)} (1 = token, "
                         f"0 = pad), got {shape}")
    if not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 (pad) and 1 (token)")
    mask = attention_mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"attention_mask rows {empty.tolist()} have no token at all")
    return mask


class SpikeBertModel(SpikeBertPreTrainedModel):
    """Embeddings, spike encoding and the spiking Transformer blocks (no head)."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__(config)
        self.embeddings = SpikeBertEmbeddings(config)
        self.encoding_lif = (make_neuron(config, config.v_threshold)
                             if config.input_encoding == "lif" else None)
        self.encoder = SpikeBertEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_firing_rates: bool = False,
        output_attention_map: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SpikeBertModelOutput | tuple:
        """``input_ids`` ``[B, L]`` (pad on the right), ``attention_mask`` ``[B, L]`` (1 token,
        0 pad), ``token_type_ids`` ``[B, L]`` (sentence pairs)."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        c = self.config
        mask = _check_inputs(c, input_ids, attention_mask, token_type_ids)
        emb = self.embeddings(input_ids, token_type_ids)
        T = c.time_steps
        if self.encoding_lif is None:  # the same spikes at every step
            x = spike_kernels.spike(emb, c.surrogate, c.surrogate_alpha)
            x = x.unsqueeze(0).expand(T, *emb.shape)
        else:  # the embedding as a constant input current
            x = self.encoding_lif(emb.unsqueeze(0).expand(T, *emb.shape).contiguous())
        probe = None
        if output_firing_rates or output_attention_map:
            probe = Probe(mask, output_firing_rates, output_attention_map)
            probe.record("embeddings", x)
        key_mask = mask if c.use_attention_mask else None
        last, features = self.encoder(x, key_mask, probe)
        out = SpikeBertModelOutput(
            last_hidden_state=last, features=features, embedding_output=emb,
            firing_rates=None if probe is None else probe.rates,
            attention_map=None if probe is None else probe.attention_map)
        return out if return_dict is not False else out.to_tuple()


class SpikeBertForSequenceClassification(SpikeBertPreTrainedModel):
    """SpikeBERT with its head: LayerNorm, mean over tokens, a linear classifier at every
    time step, logits averaged over T. Loss: cross-entropy, MSE (regression) or BCE
    (multi-label), chosen by ``config.problem_type`` as in Hugging Face's BERT."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__(config)
        self.spikebert = SpikeBertModel(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.spikebert.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.spikebert.set_input_embeddings(value)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``[T, B, L, D]`` -> ``[T, B, D]``: LayerNorm, then the mean over (real) tokens."""
        h = self.norm(hidden)
        if self.config.pooling == "mean_all" or attention_mask is None:
            return h.mean(dim=2)
        m = attention_mask.to(h.dtype)
        # a sum over a non-innermost dim adds rows in order, so pads (exact zeros) appended
        # on the right leave it bit-identical
        return (h * m[None, :, :, None]).sum(dim=2) / m.sum(dim=1)[None, :, None]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_firing_rates: bool = False,
        output_attention_map: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SpikeBertSequenceClassifierOutput | tuple:
        out = self.spikebert(input_ids, attention_mask, token_type_ids,
                             output_firing_rates=output_firing_rates,
                             output_attention_map=output_attention_map, **kwargs)
        logits = self.classifier(self.pool(out.last_hidden_state, attention_mask)).mean(0)
        loss = None if labels is None else self.loss(logits, labels)
        result = SpikeBertSequenceClassifierOutput(
            loss=loss, logits=logits, last_hidden_state=out.last_hidden_state,
            features=out.features, embedding_output=out.embedding_output,
            firing_rates=out.firing_rates, attention_map=out.attention_map)
        return result if return_dict is not False else result.to_tuple()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c, n = self.config, self.config.num_labels
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if c.problem_type is None:
            if n == 1:
                c.problem_type = "regression"
            elif not labels.is_floating_point():
                c.problem_type = "single_label_classification"
            else:
                c.problem_type = "multi_label_classification"
        B = logits.shape[0]
        if c.problem_type == "regression":
            if labels.numel() != B * n:
                raise ValueError(f"regression labels must have {B * n} values ([batch] or "
                                 f"[batch, num_labels]), got shape {tuple(labels.shape)}")
            return F.mse_loss(logits.view(-1), labels.reshape(-1).to(logits.dtype))
        if c.problem_type == "single_label_classification":
            if labels.shape != (B,) or labels.is_floating_point():
                raise ValueError(f"classification labels must be integer class ids of shape "
                                 f"({B},), got {labels.dtype} {tuple(labels.shape)}")
            if int(labels.min()) < 0 or int(labels.max()) >= n:
                raise ValueError(f"labels must be in [0, num_labels={n}), got values in "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
            return F.cross_entropy(logits, labels)
        if labels.shape != logits.shape:
            raise ValueError(f"multi-label labels must have shape {tuple(logits.shape)}, "
                             f"got {tuple(labels.shape)}")
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


__all__ = [
    "SpikeBertForSequenceClassification",
    "SpikeBertModel",
    "SpikeBertModelOutput",
    "SpikeBertPreTrainedModel",
    "SpikeBertSequenceClassifierOutput",
    "firing_rate",
    "make_neuron",
]
