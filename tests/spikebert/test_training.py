"""The training machinery on a tiny linear model: arguments, overrides, checkpoints, resume
checks, the loop's non-finite stop, lazy batches and the model card."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from spikebert.arguments import TrainingArguments, as_dict, parse_arguments, tracker_config
from spikebert.checkpoint import (
    check_resume,
    checkpoint_dirs,
    find_resume_checkpoint,
    latest_checkpoint,
    prepare_output_dir,
    run_fingerprint,
    save_checkpoint,
    weights_hash,
)
from spikebert.configuration_spikebert import SpikeBertConfig
from spikebert.loading import apply_overrides, check_max_length
from spikebert.trainer import (
    Stopped,
    make_optimizer,
    rng_neutral_start,
    start_run,
    stop_signals,
    train,
)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def parse(*argv: str) -> TrainingArguments:
    return parse_arguments((TrainingArguments,), list(argv), "test")[0]


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "inf", "--lr must be a finite number"),
    ("--lr", "0", "--lr must be >"),
    ("--max_grad_norm", "nan", "--max_grad_norm must be a finite number"),
    ("--warmup_ratio", "nan", "--warmup_ratio must be a finite number"),
    ("--warmup_ratio", "1.5", "--warmup_ratio must be <= 1"),
    ("--logging_steps", "0", "--logging_steps must be an integer >= 1"),
    ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps must be"),
    ("--checkpointing_steps", "-1", "--checkpointing_steps must be an integer >= 0"),
    ("--max_steps", "-1", "--max_steps must be an integer >= 1"),
    ("--batch_size", "0", "--batch_size must be"),
])
def test_bad_training_flags_stop_before_anything_runs(flag, value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse("--output_dir", "x", flag, value)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_training_flags_parse_with_recipe_defaults():
    args = parse_arguments((TrainingArguments,), ["--output_dir", "o", "--mixed_precision",
                                                  "bf16"], "t", defaults={"lr": 1e-3})[0]
    assert args.lr == 1e-3 and args.mixed_precision == "bf16" and args.max_grad_norm == 1.0
    with pytest.raises(TypeError, match="undeclared"):
        parse_arguments((TrainingArguments,), ["--output_dir", "o"], "t", defaults={"lrr": 1})


@dataclasses.dataclass
class ListAndNoneFlags:
    tasks: list[str] = dataclasses.field(default_factory=lambda: ["waimai", "chnsenti"])
    config: str | None = None


def test_tensorboard_takes_every_recipe_flag(tmp_path):
    """TensorBoard's hyper-parameter table takes only scalars: None and list flags (e.g.
    ``--override`` and ``--tasks``) used to stop every run that asked for it."""
    pytest.importorskip("tensorboard")
    from accelerate import Accelerator
    from torch.utils.tensorboard.summary import hparams

    args = parse_arguments([TrainingArguments], ["--output_dir", str(tmp_path)], "t")[0]
    config = tracker_config(args, ListAndNoneFlags())
    hparams(config, {})  # raises ValueError on a value TensorBoard cannot store
    assert config["max_steps"] == "" and config["tasks"] == "waimai chnsenti"
    accelerator = Accelerator(log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("run", config=config)
    accelerator.end_training()


@pytest.mark.parametrize("schedule, lr_at_end", [("linear", 0.0), ("constant_with_warmup", 1e-3)])
def test_make_optimizer_warms_up_then_follows_the_schedule(schedule, lr_at_end):
    args = parse("--output_dir", "o", "--lr", "1e-3", "--warmup_ratio", "0.2", "--max_steps",
                 "10", "--lr_scheduler", schedule)
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), args)
    lrs = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # 2 warm-up steps
    assert lrs[-1] == pytest.approx(lr_at_end)


# ---------------------------------------------------------------- overrides and lengths


def test_override_applies_typed_values():
    config = apply_overrides(SpikeBertConfig.from_preset("mini"),
                             ["hidden_size=64", "tau=3", "use_attention_mask=false",
                              "surrogate_alpha=4.0"])
    assert (config.hidden_size, config.tau, config.use_attention_mask) == (64, 3.0, False)
    assert config.surrogate_alpha == 4.0 and isinstance(config.hidden_size, int)


@pytest.mark.parametrize("item, message", [
    ("hidden_sise=128", "did you mean 'hidden_size'"),
    ("hidden_size=12.5", "hidden_size is a int"),
    ("use_attention_mask=maybe", "use_attention_mask is a bool"),
    ("hidden_size", "must look like key=value"),
    ("num_attention_heads=5", "num_attention_heads"),  # the config's own check: 256 % 5
])
def test_override_rejects_unknown_keys_and_wrong_types(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(SpikeBertConfig.from_preset("mini"), [item])


def test_max_length_beyond_positions_is_refused():
    assert check_max_length(64, "--max_length", student=64, teacher=512) == 64
    with pytest.raises(ValueError, match="--max_length 1000 exceeds the teacher's 512"):
        check_max_length(1000, "--max_length", student=None, teacher=512)


# ---------------------------------------------------------------- checkpoints and resume


def tiny_run(tmp_path: Path, *extra: str, steps: int = 4, nan_at: int | None = None,
             signal_at: int | None = None):
    """A small regression trained by the recipes' loop; returns (args, losses per step).
    ``nan_at``: the loss of that step turns NaN (a diverged model). ``signal_at``: the
    process sends itself SIGTERM during that step (a scheduler ending the job)."""
    from accelerate.utils import set_seed

    from spikebert.trainer import make_accelerator

    args = parse("--output_dir", str(tmp_path), "--batch_size", "4", "--max_steps", str(steps),
                 "--lr", "0.1", "--checkpointing_steps", "2", "--logging_steps", "1",
                 "--report_to", "none", *extra)
    accelerator = make_accelerator(args, "tiny")
    set_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2),
                                torch.nn.Linear(8, 1))
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    rows = [{"input_ids": xi, "y": xi.sum(0, keepdim=True)} for xi in x]
    run = start_run(accelerator, args, run_fingerprint(as_dict(args), model=weights_hash(model)))
    optimizer, scheduler = make_optimizer(model, args)
    loader = DataLoader(rows, batch_size=4, shuffle=True, drop_last=True)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    losses = {}

    def loss_fn(batch):
        loss = (model(batch["input_ids"]) - batch["y"]).pow(2).mean()
        step = len(losses) + run.step + 1
        losses[step] = loss.item()
        if step == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"loss": loss * math.nan if step == nan_at else loss}

    train(accelerator, args, run, model, optimizer, scheduler, loader, loss_fn, desc="tiny")
    return args, losses


def test_resume_is_exact_and_refuses_other_runs(tmp_path):
    _, full = tiny_run(tmp_path / "full")
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full" / "checkpoint-2", cut / "checkpoint-2")
    _, resumed = tiny_run(cut, "--resume_from_checkpoint", "latest")
    assert sorted(resumed) == [3, 4] and resumed == {s: full[s] for s in (3, 4)}

    with pytest.raises(ValueError, match=r"different run[\s\S]*--seed: checkpoint 42, now 1"):
        tiny_run(cut, "--resume_from_checkpoint", "latest", "--seed", "1")
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        tiny_run(cut)  # a fresh run into a folder holding another run's checkpoints
    tiny_run(cut, "--seed", "1", "--overwrite_output_dir", steps=1)
    assert [p.name for p in cut.iterdir() if p.name.startswith("checkpoint")] == []


def test_sigterm_checkpoints_the_step_then_exits_and_resumes_exactly(tmp_path):
    _, full = tiny_run(tmp_path / "full", steps=5)
    cut = tmp_path / "cut"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:  # mid-step 3: step 3 ends, is saved, then exit
        tiny_run(cut, steps=5, signal_at=3)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    _, resumed = tiny_run(cut, "--resume_from_checkpoint", "latest", steps=5)
    assert resumed == {s: full[s] for s in (4, 5)}


def test_a_signal_on_a_checkpoint_step_saves_once_and_on_the_last_step_finishes(tmp_path):
    with pytest.raises(Stopped):
        tiny_run(tmp_path / "a", signal_at=2)  # step 2 is a scheduled checkpoint already
    assert sorted(p.name for p in (tmp_path / "a").glob("checkpoint-*")) == ["checkpoint-2"]
    _, losses = tiny_run(tmp_path / "b", steps=3, signal_at=3)  # nothing left to stop
    assert sorted(losses) == [1, 2, 3]


def test_stop_signals_records_instead_of_dying():
    seen = []
    with stop_signals(("SIGTERM",), on_signal=seen.append) as received:
        os.kill(os.getpid(), signal.SIGTERM)
    assert received == seen == [signal.SIGTERM]


def test_state_beyond_max_steps_is_refused(tmp_path):
    tiny_run(tmp_path, steps=2)
    state_file = tmp_path / "checkpoint-2" / "training_state.json"
    state = json.loads(state_file.read_text())
    state["step"] = 50
    state_file.write_text(json.dumps(state))
    fingerprint = state["fingerprint"]
    with pytest.raises(ValueError, match="step 50, beyond --max_steps 2"):
        check_resume(tmp_path / "checkpoint-2", fingerprint, 2, 0, False)


def test_incomplete_checkpoints_are_skipped_with_a_warning(tmp_path):
    tiny_run(tmp_path)
    weights = tmp_path / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a write killed half-way
    (tmp_path / "checkpoint-6").mkdir()  # a folder with nothing in it
    (tmp_path / ".checkpoint-8.incomplete").mkdir()  # never renamed: never a candidate
    with pytest.warns(UserWarning, match=r"checkpoint-6 is incomplete: training_state"):
        assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    with pytest.raises(ValueError, match=r"model.safetensors \(expected \d+ bytes, found 100"):
        find_resume_checkpoint(str(tmp_path / "checkpoint-4"), str(tmp_path))


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_unrestorable_rng_state_needs_an_explicit_flag(tmp_path, damage):
    tiny_run(tmp_path, steps=2)
    rng = tmp_path / "checkpoint-2" / "random_states_0.pkl"
    if damage == "delete":
        rng.unlink()
    else:
        rng.write_bytes(rng.read_bytes()[:10])
    state = json.loads((tmp_path / "checkpoint-2" / "training_state.json").read_text())
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"  # complete otherwise
    with pytest.raises(ValueError, match=r"random_states_0\.pkl is (missing|unreadable)"):
        check_resume(tmp_path / "checkpoint-2", state["fingerprint"], 4, 0, False)
    with pytest.warns(UserWarning, match="inexact resume"):
        assert check_resume(tmp_path / "checkpoint-2", state["fingerprint"], 4, 0, True)[
            "step"] == 2


def test_checkpoint_is_renamed_into_place(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator()
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    path = save_checkpoint(accelerator, str(tmp_path), 7, {"fingerprint": {}, "extra": {}})
    assert path == tmp_path / "checkpoint-7" and not list(tmp_path.glob(".checkpoint-*"))
    state = json.loads((path / "training_state.json").read_text())
    assert state["step"] == 7 and state["files"]["model.safetensors"] > 0
    assert model is not None


def test_save_total_limit_keeps_the_newest_checkpoints(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator()
    accelerator.prepare(torch.nn.Linear(2, 2))
    for step in (1, 2, 3):
        save_checkpoint(accelerator, str(tmp_path), step, {"fingerprint": {}, "extra": {}},
                        keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"


def test_fresh_run_refuses_another_runs_results(tmp_path):
    (tmp_path / "best.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"best\.json"):
        prepare_output_dir(str(tmp_path), resuming=False, overwrite=False, is_main_process=True)
    prepare_output_dir(str(tmp_path), resuming=False, overwrite=True, is_main_process=True)
    assert not (tmp_path / "best.json").exists()


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite (loss|gradient norm).* at step 3"
                                                 r"[\s\S]*checkpoint-2"):
        tiny_run(tmp_path, "--max_grad_norm", "0", nan_at=3)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]


# ---------------------------------------------------------------- batches and cards


def test_loader_start_leaves_the_global_rng_alone():
    loader = DataLoader(list(range(10)), batch_size=4)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(loader)  # a plain DataLoader draws its base seed from the global RNG
    assert not torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(0)
    batches = [b.tolist() for b in rng_neutral_start(loader)]
    assert torch.equal(torch.get_rng_state(), before)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(rng_neutral_start(DataLoader([]))) == []


def test_lazy_augmentation_gives_the_eager_copies():
    from spikebert.augment import AugmentConfig, Augmenter, augment_examples
    from spikebert.batching import LazyAugmented

    rows = [{"text": t, "label": i % 2} for i, t in enumerate(
        ["the film is a joy to watch", "dull and far too long", "a quiet , moving story",
         "great"])]
    config = AugmentConfig(p_mask=0.3, p_pos=0.0, p_ng=0.25, n_iter=4, seed=1)
    eager = augment_examples(rows, config=config)
    lazy = LazyAugmented(rows, Augmenter(config), ("text",))
    assert len(lazy) == 4 * 5
    for i in range(4):
        copies = [r["text"] for r in eager if r["orig_index"] == i]
        slots = [lazy[i * 5 + j]["text"] for j in range(5)]
        assert slots[:len(copies)] == copies  # original first, then the distinct copies
        assert set(slots) == set(copies)  # short texts cycle through what they have
        assert all(lazy[i * 5 + j]["label"] == i % 2 for j in range(5))


def test_model_card_names_task_data_command_and_metrics(tmp_path):
    from spikebert.model_card import write_model_card

    result = {"task": "sst2", "teacher": "t", "student": None, "steps": 3,
              "train_examples": 10, "dev": {"step": 2, "accuracy": 0.75},
              "test": {"accuracy": 0.5},
              "split": {"split_by": "given", "seed": 42, "sha256": {"train": "ab12"},
                        "split_sizes": {"train": 10}},
              "energy": {"student_mj": 0.1, "teacher_mj": 1.0, "ratio": 0.1, "samples": 4},
              "firing_rates": {"layer.0.mlp.fc1": 0.125}}
    text = write_model_card(tmp_path, result, "recipes/distill.py --task sst2").read_text()
    for needle in ("pipeline_tag: text-classification", "sst2", "ab12",
                   "recipes/distill.py --task sst2", "accuracy 75.00", "accuracy 50.00",
                   "ratio 10.00%", "layer.0.mlp.fc1 | 0.1250"):
        assert needle in text, needle


def test_length_grouped_sampler_groups_reshuffles_per_epoch_and_resumes_exactly():
    from accelerate import Accelerator

    from spikebert.batching import LengthGroupedEpochSampler

    lengths = [int(n) for n in torch.randint(1, 129, (960,),
                                             generator=torch.Generator().manual_seed(0))]
    sampler = LengthGroupedEpochSampler(lengths, batch_size=8, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(960))  # every row once
    assert order == list(sampler)  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != order and sorted(sampler) == list(range(960))

    def padded(indices):  # tokens of the batches padded to their longest row
        return sum(max(lengths[i] for i in indices[k:k + 8]) * 8
                   for k in range(0, len(indices), 8))
    random_order = torch.randperm(960, generator=torch.Generator().manual_seed(1)).tolist()
    assert padded(order) < 0.75 * padded(random_order)

    # through Accelerate: set_epoch reaches the sampler, and skipping the first batches of an
    # epoch (a resumed run) gives exactly the rest of that epoch's batches
    loader = Accelerator(cpu=True).prepare(DataLoader(
        list(range(960)), batch_size=8, drop_last=True,
        sampler=LengthGroupedEpochSampler(lengths, batch_size=8, seed=3)))
    loader.set_epoch(1)
    whole = [b.tolist() for b in loader]
    assert [i for b in whole for i in b] == list(sampler)
    loader.set_epoch(1)
    rest = [b.tolist() for b in Accelerator(cpu=True).skip_first_batches(loader, 5)]
    assert rest == whole[5:]
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedEpochSampler(lengths, batch_size=0, seed=0)


def test_row_lengths_give_augmented_slots_their_originals_length():
    from transformers import AutoTokenizer

    from spikebert.augment import AugmentConfig, Augmenter
    from spikebert.batching import LazyAugmented, row_lengths
    from spikebert.loading import packaged_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm_path())
    rows = [{"text": "a quiet , moving story", "label": 1}, {"text": "great", "label": 0},
            {"text": " ".join(["long"] * 40), "label": 0}]
    assert row_lengths(rows, tokenizer, ("text",), 32) == [5, 1, 32]
    lazy = LazyAugmented(rows, Augmenter(AugmentConfig(n_iter=2, seed=0)), ("text",))
    assert row_lengths(lazy, tokenizer, ("text",), 32) == [5, 5, 5, 1, 1, 1, 32, 32, 32]
    pairs = [{"text_a": "a b", "text_b": "c", "label": 0.5}]
    assert row_lengths(pairs, tokenizer, ("text_a", "text_b"), 32) == [3]
