"""SpikeBERT: a spiking Transformer distilled from BERT, built on ``spike_kernels``.

>>> from spikebert import SpikeBertConfig, SpikeBertForSequenceClassification
>>> model = SpikeBertForSequenceClassification(SpikeBertConfig.from_preset("mini", num_labels=2))

Importing the package registers ``model_type="spikebert"`` with the Auto classes, so
``AutoConfig``/``AutoModel``/``AutoModelForSequenceClassification.from_pretrained(dir)`` load
saved models.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_spikebert import PRESETS, SpikeBertConfig
from .modeling_spikebert import (
    SpikeBertForSequenceClassification,
    SpikeBertModel,
    SpikeBertModelOutput,
    SpikeBertPreTrainedModel,
    SpikeBertSequenceClassifierOutput,
)
from .neurons import record_firing_rates

AutoConfig.register(SpikeBertConfig.model_type, SpikeBertConfig, exist_ok=True)
AutoModel.register(SpikeBertConfig, SpikeBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(SpikeBertConfig, SpikeBertForSequenceClassification,
                                            exist_ok=True)

__all__ = [
    "PRESETS",
    "SpikeBertConfig",
    "SpikeBertForSequenceClassification",
    "SpikeBertModel",
    "SpikeBertModelOutput",
    "SpikeBertPreTrainedModel",
    "SpikeBertSequenceClassifierOutput",
    "record_firing_rates",
]
