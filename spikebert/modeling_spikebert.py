"""SpikeBERT: a spiking Transformer for text classification (Lv et al. 2023), docs/DESIGN.md §2.

Every tensor inside the encoder is time-first, ``[T, B, L, D]``::

    embedding  E = word(ids) + position + token type               [B, L, D]  (real-valued)
    spikes     X = Heaviside(E) at every step (or a LIF of E)      [T, B, L, D]
    block      Q, K, V = LIF(LayerNorm_{q,k,v}(X W_qkv + b))       one matmul, 3 LayerNorms
               A = LIF_attn(scale * (Q K^T) V)                     fused op, no softmax
               X = X + LIF(LayerNorm(Linear(A)))
               X = X + LIF(LN(Linear(LIF(LN(Linear(X, 4D))))), D)  spiking MLP
    head       logits = mean_T Linear(pool_L(LayerNorm(X)))        [B, num_labels]

``output_hidden_states=True`` returns, as Hugging Face's BERT does, the embedding output ``E``
followed by each block's output averaged over T (``[B, L, D]`` each: what distillation
aligns with the teacher's hidden states); ``output_attentions=True`` returns each block's
``Q K^T`` at the last step. Firing rates: :func:`spikebert.neurons.record_firing_rates`.

Residuals add spike tensors, so the stream holds small non-negative integers. Pad tokens are
masked as keys/values in attention and left out of the mean pooling; since everything else is
per token, padding cannot change the logits (exactly: products of spikes are exact integers).
Work is not repeated over time steps where the input does not change: with the Heaviside
encoding the first block's Q/K/V projection runs once and is shared by all T steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

import spike_kernels

from .configuration_spikebert import SpikeBertConfig
from .neurons import make_neuron, spike_dtype_for
from .spike_linear import SpikeLinear

try:  # transformers >= 5: initialisers that skip weights loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    _init = nn.init


# --------------------------------------------------------------------------------------------
# layers


def _time_constant(x: torch.Tensor) -> bool:
    """True when ``x`` ``[T, ...]`` is one tensor repeated over T (an ``expand``): a per-step
    layer then needs to run once, not T times."""
    return x.shape[0] > 1 and x.stride(0) == 0


def _over_time(layer, x: torch.Tensor) -> torch.Tensor:
    """``layer`` (per token, no state) applied to ``[T, ...]``, once if x is time-constant
    (the result is then copied to every step: neuron kernels take dense inputs)."""
    if _time_constant(x):
        y = layer(x[0])
        return y.unsqueeze(0).expand(x.shape[0], *y.shape).contiguous()
    return layer(x)


def _linear(config: SpikeBertConfig, n_in: int, n_out: int) -> nn.Linear:
    """The Linear of a spiking layer: its input is spike counts, which ours saves for backward
    in 16 bits on GPUs (:class:`~spikebert.spike_linear.SpikeLinear`); the SpikingJelly-built model
    uses ``nn.Linear`` as a SpikingJelly user would."""
    return (SpikeLinear if config.neuron_impl == "spike_kernels" else nn.Linear)(n_in, n_out)


class SpikeEncoder(nn.Module):
    """Real-valued embedding ``[B, L, D]`` -> spikes ``[T, B, L, D]``: Heaviside (the same
    spikes at every step, surrogate gradient) or a LIF driven by the embedding as a constant
    current (direct encoding)."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        self.time_steps = config.time_steps
        self.spike_dtype = config.spike_dtype
        self.surrogate = spike_kernels.get_surrogate(config.surrogate, config.surrogate_alpha)
        self.lif = (make_neuron(config, config.v_threshold)
                    if config.input_encoding == "lif" else None)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        current = emb.unsqueeze(0).expand(self.time_steps, *emb.shape)
        if self.lif is not None:
            return self.lif(current.contiguous())
        s = spike_kernels.spike(emb, self.surrogate).to(spike_dtype_for(emb, self.spike_dtype))
        return s.unsqueeze(0).expand(self.time_steps, *s.shape)


class _GroupedLayerNormFn(torch.autograd.Function):
    """``y = xhat * w + b``, ``xhat = (x - mean) * rstd`` over the last dim of ``[..., n, D]``,
    ``w, b`` ``[n, D]``. Saves only x and the row statistics (autograd through
    ``layer_norm`` + ``addcmul`` would also keep ``xhat``, a second copy of x); backward
    recomputes ``xhat`` for the weight gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        xhat, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], None, None, eps)
        ctx.save_for_backward(x, mean, rstd, weight)
        return torch.addcmul(bias.to(x.dtype), xhat, weight.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        x, mean, rstd, weight = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.native_layer_norm_backward(
                grad * weight.to(grad.dtype), x, x.shape[-1:], mean, rstd, None, None,
                [True, False, False])[0]
        xhat = torch.addcmul(-mean * rstd, x, rstd)  # (x - mean) * rstd in one pass
        grad_w = (grad * xhat).flatten(0, -3).sum(0, dtype=torch.float32)
        grad_b = grad.flatten(0, -3).sum(0, dtype=torch.float32)
        return grad_x, grad_w.to(weight.dtype), grad_b.to(weight.dtype), None


class GroupedLayerNorm(nn.Module):
    """``n`` independent LayerNorms over the last dim of ``[..., n, D]`` (weight, bias
    ``[n, D]``): the Q, K and V norms applied to one fused projection."""

    def __init__(self, n: int, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, dim))
        self.bias = nn.Parameter(torch.zeros(n, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GroupedLayerNormFn.apply(x, self.weight, self.bias, self.eps)


class SpikingLinear(nn.Module):
    """``LIF(LayerNorm(Linear(x)))`` over ``[T, B, L, in]``."""

    def __init__(self, config: SpikeBertConfig, n_in: int, n_out: int,
                 v_threshold: float | None = None) -> None:
        super().__init__()
        self.linear = _linear(config, n_in, n_out)
        self.norm = nn.LayerNorm(n_out, eps=config.layer_norm_eps)
        self.lif = make_neuron(config, config.v_threshold if v_threshold is None else v_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(_over_time(lambda h: self.norm(self.linear(h)), x))


class SpikingQKV(nn.Module):
    """Q, K and V spikes from one matmul: ``[T, B, L, D]`` -> ``[T, B, L, 3, D]``
    (``LIF(LayerNorm_j(X W_j + b_j))`` for j = q, k, v; one Linear to 3D, one LIF call)."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.linear = _linear(config, D, 3 * D)
        self.norm = GroupedLayerNorm(3, D, config.layer_norm_eps)
        self.lif = make_neuron(config, config.v_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(_over_time(lambda h: self.norm(self.linear(h).unflatten(-1, (3, -1))),
                                   x))


class PlainSpikingAttention(nn.Module):
    """``LIF_attn(scale * (Q K^T) V)`` with plain matmuls and a separate neuron (the
    SpikingJelly-built model); the same function as ``spike_kernels.SpikingAttention``."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        self.scale = config.attention_scale
        self.lif = make_neuron(config, config.attention_threshold)

    def forward(self, q, k, v, attention_mask=None, out_layout="blhd"):
        if attention_mask is not None:
            m = attention_mask.to(k.dtype)[None, :, None, :, None]
            k, v = k * m, v * m
        y = self.lif((q @ k.transpose(-1, -2) @ v) * self.scale)  # [T, B, H, L, Dh]
        return y.transpose(2, 3).flatten(3)


class SpikingSelfAttention(nn.Module):
    """SSA: Q, K, V spikes, ``LIF_attn(scale * Q K^T V)`` per head (no softmax), projection."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.qkv = SpikingQKV(config)
        if config.neuron_impl == "spike_kernels":  # matmuls and neuron in one fused op
            self.core = spike_kernels.SpikingAttention(
                v_threshold=config.attention_threshold, tau=config.tau,
                decay_input=config.decay_input, v_reset=config.v_reset,
                detach_reset=config.detach_reset,
                surrogate_function=spike_kernels.get_surrogate(config.surrogate,
                                                               config.surrogate_alpha),
                scale=config.attention_scale, backend=config.backend,
                recompute=config.lif_recompute)
        else:
            self.core = PlainSpikingAttention(config)
        self.output = SpikingLinear(config, D, D)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        T, B, L, _ = x.shape
        s = self.qkv(x).view(T, B, L, 3, self.num_heads, self.head_dim)
        # strided head views [T, B, H, L, Dh] of the one spike tensor: no copies
        q, k, v = (s.select(3, j).transpose(2, 3) for j in range(3))
        # the fused op sets its own precision (spikes in, fp32 sums and membrane); autocast
        # must not recast the matmuls inside it
        with torch.autocast(x.device.type, enabled=False):
            y = self.core(q, k, v, attention_mask=key_mask, out_layout="blhd")  # [T, B, L, D]
        amap = spike_kernels.attention_map(q, k, key_mask) if output_attentions else None
        return self.output(y), amap


class SpikingMLP(nn.Module):
    """``LIF(LN(Linear(LIF(LN(Linear(x, 4D))), D)))``."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        self.fc1 = SpikingLinear(config, config.hidden_size, config.intermediate_size)
        self.fc2 = SpikingLinear(config, config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class SpikeBertLayer(nn.Module):
    """One spiking Transformer block; residuals add spike tensors."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        self.attention = SpikingSelfAttention(config)
        self.mlp = SpikingMLP(config)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, amap = self.attention(x, key_mask, output_attentions)
        x = x + a
        return x + self.mlp(x), amap


def is_rate_source(module: nn.Module) -> bool:
    """Modules whose output is a spike tensor reported as a layer's firing rate."""
    return isinstance(module, SpikeEncoder | SpikingQKV | SpikingLinear | PlainSpikingAttention
                      | spike_kernels.SpikingAttention)


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
    """The blocks; returns the last spike tensor and, when asked, every block's mean over T
    and its attention map at the last step."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(SpikeBertLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False  # set by PreTrainedModel.gradient_checkpointing_enable

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                output_hidden_states: bool = False, output_attentions: bool = False
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        features, maps = [], []
        for block in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, amap = self._gradient_checkpointing_func(block.__call__, x, key_mask,
                                                            output_attentions)
            else:
                x, amap = block(x, key_mask, output_attentions)
            if output_hidden_states:
                features.append(x.mean(0))
            if output_attentions:
                maps.append(amap)
        return x, tuple(features), tuple(maps)


# --------------------------------------------------------------------------------------------
# outputs


@dataclass
class SpikeBertModelOutput(ModelOutput):
    """Output of :class:`SpikeBertModel`.

    Args:
        last_hidden_state: the last block's output ``[T, B, L, D]`` (spike counts).
        hidden_states: with ``output_hidden_states=True``, ``num_hidden_layers + 1`` tensors
            ``[B, L, D]``: the real-valued embedding before the spike encoding, then each
            block's output averaged over T.
        attentions: with ``output_attentions=True``, per block ``Q K^T`` at the last step
            ``[B, H, L, L]`` (co-active spike counts, padded keys zeroed; no gradient).
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SpikeBertSequenceClassifierOutput(ModelOutput):
    """Output of :class:`SpikeBertForSequenceClassification`: ``loss`` (with ``labels``),
    ``logits`` ``[B, num_labels]``, and ``hidden_states``/``attentions`` as in
    :class:`SpikeBertModelOutput` (the fields of transformers' ``SequenceClassifierOutput``)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


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
        elif isinstance(module, nn.LayerNorm | GroupedLayerNorm):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)


def _check_values() -> bool:
    """Whether to check input values (ids in the vocabulary, a 0/1 mask). Only on CPU in
    eager mode: there a min/max is one cheap pass; on an accelerator it would wait for the
    device at every forward, and under ``torch.compile`` it would break the graph (bad ids
    there still fail, as the embedding lookup's own device-side error)."""
    return not torch.compiler.is_compiling()


def _check_inputs(config: SpikeBertConfig, input_ids, attention_mask, token_type_ids):
    """Clear errors for inputs the model cannot take (shapes and dtypes always; values on CPU,
    see :func:`_check_values`); returns the mask (or None)."""
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
    for name, t in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.shape != (B, length)):
            shape = tuple(getattr(t, "shape", ())) or type(t).__name__
            raise ValueError(f"{name} must have input_ids' shape {(B, length)}, got {shape}"
                             + (" (1 = token, 0 = pad)" if name == "attention_mask" else ""))
    if input_ids.device.type != "cpu" or not _check_values():
        return attention_mask
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= config.vocab_size:
        raise ValueError(f"input_ids must be in [0, vocab_size={config.vocab_size}), got values "
                         f"in [{lo}, {hi}]: was the text tokenised for another vocabulary?")
    n_types = max(config.type_vocab_size, 1)
    if token_type_ids is not None and (int(token_type_ids.min()) < 0
                                       or int(token_type_ids.max()) >= n_types):
        raise ValueError(f"token_type_ids must be in [0, {n_types}) "
                         f"(type_vocab_size={config.type_vocab_size})")
    if attention_mask is not None:
        if not ((attention_mask == 0) | (attention_mask == 1)).all():
            raise ValueError("attention_mask must hold only 0 (pad) and 1 (token)")
        empty = (attention_mask == 0).all(dim=1).nonzero().flatten()
        if len(empty):
            raise ValueError(f"attention_mask rows {empty.tolist()} have no token at all")
    return attention_mask


def _flag(value: bool | None, config: SpikeBertConfig, name: str) -> bool:
    return bool(getattr(config, name, False)) if value is None else bool(value)


class SpikeBertModel(SpikeBertPreTrainedModel):
    """Embeddings, spike encoding and the spiking Transformer blocks (no head)."""

    def __init__(self, config: SpikeBertConfig) -> None:
        super().__init__(config)
        self.embeddings = SpikeBertEmbeddings(config)
        self.encoding = SpikeEncoder(config)
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SpikeBertModelOutput | tuple:
        """``input_ids`` ``[B, L]`` (pad on the right), ``attention_mask`` ``[B, L]`` (1 token,
        0 pad), ``token_type_ids`` ``[B, L]`` (sentence pairs)."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        c = self.config
        want_hidden = _flag(output_hidden_states, c, "output_hidden_states")
        want_maps = _flag(output_attentions, c, "output_attentions")
        mask = _check_inputs(c, input_ids, attention_mask, token_type_ids)
        emb = self.embeddings(input_ids, token_type_ids)
        key_mask = mask if c.use_attention_mask else None
        last, features, maps = self.encoder(self.encoding(emb), key_mask, want_hidden,
                                            want_maps)
        out = SpikeBertModelOutput(last_hidden_state=last,
                                   hidden_states=(emb, *features) if want_hidden else None,
                                   attentions=maps if want_maps else None)
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SpikeBertSequenceClassifierOutput | tuple:
        out = self.spikebert(input_ids, attention_mask, token_type_ids,
                             output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states, **kwargs)
        logits = self.classifier(self.pool(out.last_hidden_state, attention_mask)).mean(0)
        loss = None if labels is None else self.loss(logits, labels)
        result = SpikeBertSequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states,
            attentions=out.attentions)
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
            if labels.device.type == "cpu" and _check_values() and (
                    int(labels.min()) < 0 or int(labels.max()) >= n):
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
]
