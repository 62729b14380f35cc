"""configs/fsdp.yaml: what `accelerate launch --config_file configs/fsdp.yaml` would set up.

FSDP needs GPUs (NCCL), so CI checks the configuration itself: Accelerate parses it into the
launch environment, its FSDP plugin reads that environment, and the class it wraps exists in
SpikeBERT (a typo there would silently leave the whole model as one unsharded unit).
"""

from __future__ import annotations

from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fsdp.yaml"


def test_fsdp_config_loads_and_wraps_spikebert_blocks(monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    from spikebert import SpikeBertConfig, SpikeBertForSequenceClassification

    args = launch_command_parser().parse_args(["--config_file", str(CONFIG), "recipes/pretrain.py"])
    args, *_ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.transformer_cls_names_to_wrap == ["SpikeBertLayer"]

    config = SpikeBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=32, time_steps=2,
                             max_position_embeddings=16)
    model = SpikeBertForSequenceClassification(config)
    names = plugin.transformer_cls_names_to_wrap
    wrapped = [m for m in model.modules() if type(m).__name__ in names]
    assert len(wrapped) == config.num_hidden_layers
