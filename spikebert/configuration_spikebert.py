"""SpikeBERT configuration: every argument documented and validated, plus named presets.

>>> from spikebert import SpikeBertConfig
>>> config = SpikeBertConfig.from_preset("mini", num_labels=2)

Where the paper and the authors' code disagree (docs/DESIGN.md §2) the choice is a config value; the
defaults follow the authors' code except where noted (learned positions, masked attention and
masked pooling are improvements over it).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig

from spike_kernels.surrogate import SURROGATE_NAMES

POSITION_EMBEDDING_TYPES = ("learned", "none")
INPUT_ENCODINGS = ("heaviside", "lif")
POOLINGS = ("mean", "mean_all")
NEURON_IMPLS = ("spike_kernels", "spikingjelly")
BACKENDS = {
    "spike_kernels": ("auto", "triton", "torch"),
    "spikingjelly": ("auto", "torch", "cupy", "triton"),
}
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
SPIKE_DTYPES = ("auto", "input")

# Named presets (see SpikeBertConfig.from_preset). Sizes and why (measured on a shared
# 2-core CPU, torch 2.13, fp32, AdamW, one training step = forward + backward + update):
# * paper: SpikeBERT as published: 12 blocks x 768, 12 heads (the authors' code uses 8),
#   T=4, length 128; 108.7M parameters (85.3M without the word embeddings). A training step
#   at batch 32 peaks at 4.6 GB RSS with block-wise activation checkpointing (switched on by
#   this preset) and LIF recompute; without checkpointing it would need about 15 GB (about
#   35 GB with SpikingJelly's neurons; both extrapolated from batches 2 and 4), more than
#   the 12 GB budget.
# * mini: a CPU-sized student for the 6 x 384 all-MiniLM-L6-v2 teacher (same 30522 WordPiece
#   vocabulary): 4 blocks x 256, 4 heads of 64, MLP 1024, T=4, length 64 (covers 99.9% of
#   SST-2's sentences); 11.0M parameters (7.8M of them the embedding table). A training step
#   at batch 32 and full length 64 takes 2.5-3.1 s of CPU time on one thread (5-6 s wall on
#   the loaded shared machine; with two threads fighting other jobs it was slower, 8-16 s),
#   so about 600 stage-1 steps (roughly one pass over corpus_en in 64-token blocks) plus a
#   few SST-2 epochs (216 steps each) fit in about two hours; 6 x 384 would cost about three
#   times more per step.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, time_steps=4, max_position_embeddings=128,
        gradient_checkpointing=True,
    ),
    "mini": dict(
        vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=1024, time_steps=4, max_position_embeddings=64,
    ),
}


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def _choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


class SpikeBertConfig(PretrainedConfig):
    r"""Configuration of :class:`~spikebert.SpikeBertModel` and its heads.

    Defaults are the ``paper`` preset's sizes (without its gradient checkpointing); see
    :meth:`from_preset` and ``PRESETS`` for the ``paper`` and ``mini`` presets.

    Sizes:
        vocab_size (int, 30522): token vocabulary (the teacher's; WordPiece of BERT/MiniLM).
        hidden_size (int, 768): width D of the residual stream.
        num_hidden_layers (int, 12): number of spiking Transformer blocks.
        num_attention_heads (int, 12): heads of spiking self-attention; must divide hidden_size.
        intermediate_size (int, 3072): width of the spiking MLP (the paper uses 4 D).
        time_steps (int, 4): simulation steps T; every tensor inside is time-first [T, B, L, D].
        max_position_embeddings (int, 128): longest accepted sequence (enforced even without
            position embeddings); the size of the learned position table.
        type_vocab_size (int, 2): token-type (segment) embeddings for sentence pairs, as BERT;
            0 disables them (then token_type_ids must be absent or all zero).

    Input:
        position_embedding_type ("learned"): "learned" adds BERT-style absolute position
            embeddings (position 0 is the first token: pad on the right); "none" is the authors'
            code, which has no position information at all.
        input_encoding ("heaviside"): how the real-valued embedding becomes spikes.
            "heaviside" (paper and code): S = Heaviside(embedding), the same at every step, with
            the surrogate below as its gradient; "lif": the embedding is the constant input
            current of a LIF neuron (direct encoding, as Spikformer).
        use_attention_mask (True): mask pad tokens as keys/values in attention. False is the
            authors' code: pads are attended to (padding then changes the logits).

    Neurons (SpikingJelly LIFNode semantics, docs/DESIGN.md §1; every LIF in the model):
        tau (float, 2.0): membrane time constant, > 1 (stage-2 script 2.0; stage-1 default 10).
        beta (float or None): alternative to tau, the paper's decay rate in (0, 1) (0.9 in the
            paper): the snnTorch form U[t] = beta U[t-1] + X[t], i.e. tau = 1 / (1 - beta) and
            decay_input=False. Only tau and decay_input are stored; passing both tau and beta
            is an error.
        decay_input (bool, True): divide the input by tau in the charge equation.
        v_threshold (float, 1.0): firing threshold of every LIF but the attention one.
        attention_threshold (float, 0.5): threshold of the LIF after Q K^T V (0.5 in the code,
            0.25 in the paper).
        v_reset (float or None, 0.0): hard reset to this value; None selects the soft
            (subtract-threshold) reset. Must be below the thresholds.
        detach_reset (bool, True): no gradient through the reset term.
        surrogate (str, "atan"): surrogate gradient of the spike, one of
            ``spike_kernels.SURROGATE_NAMES``.
        surrogate_alpha (float or None): its sharpness; None takes the surrogate's default
            (2.0 for atan).
        attention_scale (float, 0.125): scale applied to Q K^T V before the attention LIF.

    Head:
        pooling ("mean"): "mean" averages over the real tokens only (attention_mask), so pad
            tokens cannot change the logits; "mean_all" averages over every position, as the
            authors' code.
        num_labels / problem_type (PretrainedConfig): num_labels=1 or problem_type="regression"
            gives a regression head (MSE); otherwise single- or multi-label classification.

    Initialisation: layer_norm_eps (1e-5, PyTorch's default as in the authors' code),
    initializer_range (0.02: normal init of linears and embeddings).

    Implementation (these change speed or memory, never the function):
        neuron_impl ("spike_kernels"): "spike_kernels" uses the fused kernels (LIF op and the
            fused spiking-attention op); "spikingjelly" builds the same model from SpikingJelly
            LIFNode neurons and plain matmuls for attention (for benchmarks; needs spikingjelly).
        backend ("auto"): kernel backend. spike_kernels: "auto" (Triton on CUDA, PyTorch on
            CPU), "triton", "torch"; spikingjelly: "auto" (= "torch"), "torch", "cupy", "triton".
        lif_recompute (True): the LIFs save only their input and recompute the membrane in
            backward instead of saving it.
        spike_dtype ("auto"): "auto" emits spikes in the autocast dtype when autocast is on
            (bf16 under ``torch.autocast``/``--mixed_precision bf16``: 0/1 is exact, the next
            matmul reads them without a cast; membranes stay fp32), else in the input's dtype;
            "input" always in the dtype of the neuron's input.
        gradient_checkpointing (False): activation checkpointing of every block (Hugging Face's
            mechanism: consumed when the model is built, like calling
            ``model.activation_checkpointing_enable()`` (transformers 5) or
            ``model.gradient_checkpointing_enable()``, and not saved with the config). Costs
            one more forward per step; the ``paper`` preset needs it to train in 12 GB.
    """

    model_type = "spikebert"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        time_steps: int = 4,
        max_position_embeddings: int = 128,
        type_vocab_size: int = 2,
        position_embedding_type: str = "learned",
        input_encoding: str = "heaviside",
        use_attention_mask: bool = True,
        tau: float | None = None,
        beta: float | None = None,
        decay_input: bool | None = None,
        v_threshold: float = 1.0,
        attention_threshold: float = 0.5,
        v_reset: float | None = 0.0,
        detach_reset: bool = True,
        surrogate: str = "atan",
        surrogate_alpha: float | None = None,
        attention_scale: float = 0.125,
        pooling: str = "mean",
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        neuron_impl: str = "spike_kernels",
        backend: str = "auto",
        lif_recompute: bool = True,
        spike_dtype: str = "auto",
        gradient_checkpointing: bool = False,
        pad_token_id: int | None = 0,
        **kwargs,
    ) -> None:
        self.vocab_size = _int("vocab_size", vocab_size, 1)
        self.hidden_size = _int("hidden_size", hidden_size, 1)
        self.num_hidden_layers = _int("num_hidden_layers", num_hidden_layers, 1)
        self.num_attention_heads = _int("num_attention_heads", num_attention_heads, 1)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of "
                             f"num_attention_heads ({num_attention_heads})")
        self.intermediate_size = _int("intermediate_size", intermediate_size, 1)
        self.time_steps = _int("time_steps", time_steps, 1)
        self.max_position_embeddings = _int("max_position_embeddings", max_position_embeddings, 1)
        self.type_vocab_size = _int("type_vocab_size", type_vocab_size, 0)
        self.position_embedding_type = _choice(
            "position_embedding_type", position_embedding_type, POSITION_EMBEDDING_TYPES)
        self.input_encoding = _choice("input_encoding", input_encoding, INPUT_ENCODINGS)
        self.use_attention_mask = _bool("use_attention_mask", use_attention_mask)

        if beta is not None:
            if tau is not None:
                raise ValueError("give the neuron's leak as tau or as beta, not both "
                                 f"(got tau={tau}, beta={beta})")
            if decay_input:
                raise ValueError("beta is the snnTorch form (decay_input=False); "
                                 "do not also pass decay_input=True")
            beta = _float("beta", beta)
            if not 0.0 < beta < 1.0:
                raise ValueError(f"beta (decay rate) must be in (0, 1), got {beta}")
            tau, decay_input = 1.0 / (1.0 - beta), False
        tau = 2.0 if tau is None else tau
        self.tau = _float("tau", tau)
        if self.tau <= 1.0:
            raise ValueError(f"tau must be > 1 (membrane time constant), got {self.tau}")
        self.decay_input = _bool("decay_input", True if decay_input is None else decay_input)
        self.v_threshold = _float("v_threshold", v_threshold, positive=True)
        self.attention_threshold = _float("attention_threshold", attention_threshold,
                                          positive=True)
        if v_reset is not None:
            v_reset = _float("v_reset", v_reset)
            if v_reset >= min(self.v_threshold, self.attention_threshold):
                raise ValueError(f"v_reset ({v_reset}) must be below v_threshold "
                                 f"({self.v_threshold}) and attention_threshold "
                                 f"({self.attention_threshold})")
        self.v_reset = v_reset
        self.detach_reset = _bool("detach_reset", detach_reset)
        if not isinstance(surrogate, str):
            raise TypeError(f"surrogate must be a name (str), got {type(surrogate).__name__}")
        self.surrogate = _choice("surrogate", surrogate.lower(), SURROGATE_NAMES)
        self.surrogate_alpha = (None if surrogate_alpha is None
                                else _float("surrogate_alpha", surrogate_alpha, positive=True))
        self.attention_scale = _float("attention_scale", attention_scale, positive=True)
        self.pooling = _choice("pooling", pooling, POOLINGS)
        self.layer_norm_eps = _float("layer_norm_eps", layer_norm_eps, positive=True)
        self.initializer_range = _float("initializer_range", initializer_range, positive=True)
        self.neuron_impl = _choice("neuron_impl", neuron_impl, NEURON_IMPLS)
        self.backend = _choice(f"backend (for neuron_impl={neuron_impl!r})", backend,
                               BACKENDS[neuron_impl])
        self.lif_recompute = _bool("lif_recompute", lif_recompute)
        self.spike_dtype = _choice("spike_dtype", spike_dtype, SPIKE_DTYPES)
        self.gradient_checkpointing = _bool("gradient_checkpointing", gradient_checkpointing)
        if pad_token_id is not None:
            _int("pad_token_id", pad_token_id, 0)
            if pad_token_id >= vocab_size:
                raise ValueError(f"pad_token_id ({pad_token_id}) must be < vocab_size "
                                 f"({vocab_size})")

        problem_type = kwargs.get("problem_type")
        _choice("problem_type", problem_type, PROBLEM_TYPES)
        num_labels = kwargs.get("num_labels")
        if num_labels is not None:
            _int("num_labels", num_labels, 1)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        if problem_type == "single_label_classification" and self.num_labels < 2:
            raise ValueError('problem_type="single_label_classification" needs num_labels >= 2 '
                             '(use problem_type="regression" for one output)')

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def padding_invariant(self) -> bool:
        """Whether pad tokens (on the right) leave the real tokens' states and the logits
        unchanged: pads masked as keys and left out of the mean pooling. A batch may then be
        padded to its longest row instead of the maximum length."""
        return self.use_attention_mask and self.pooling == "mean"

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SpikeBertConfig:
        """A named preset (``"paper"`` or ``"mini"``, see ``PRESETS``) with ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})
