"""Stage 1 (recipes/pretrain.py) end to end on tiny models: resume, refusals, bf16, NaN,
2 processes, bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from spikebert import SpikeBertForSequenceClassification
from spikebert.trainer import read_csv_metrics

import pretrain
from conftest import FIXTURES, ROOT, TINY_STUDENT, english_tokenizer, save_tiny_bert

FULL = ("--max_steps", "4", "--checkpointing_steps", "2")


def args_for(teacher, out, *extra: str) -> list[str]:
    return ["--teacher", str(teacher), "--corpus", str(FIXTURES / "corpus_en.txt"),
            "--output_dir", str(out), "--batch_size", "4", "--logging_steps", "1",
            "--eval_steps", "2", "--report_to", "csv", "--override", *TINY_STUDENT, *extra]


def losses(out) -> dict[int, float]:
    return read_csv_metrics(out / "logs" / "stage1" / "metrics.csv", "loss")


@pytest.fixture(scope="module")
def full_run(tiny_teacher, tmp_path_factory):
    """One 4-step run with checkpoints at steps 2 and 4, shared by the tests below."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return pretrain.main(args_for(tiny_teacher, tmp_path_factory.mktemp("full"), *FULL))


def test_stage1_end_to_end(full_run):
    loss = losses(full_run)
    assert sorted(loss) == [1, 2, 3, 4] and all(torch.isfinite(torch.tensor(list(loss.values()))))
    held = read_csv_metrics(full_run / "logs" / "stage1" / "metrics.csv", "heldout_loss")
    assert held, "the held-out alignment loss was never logged"
    student = SpikeBertForSequenceClassification.from_pretrained(full_run, num_labels=3)
    assert student.config.num_labels == 3
    assert (full_run / "aligner.safetensors").is_file()
    assert (full_run / "tokenizer.json").is_file()
    assert sorted(p.name for p in full_run.glob("checkpoint-*")) == ["checkpoint-2",
                                                                     "checkpoint-4"]


def test_resume_is_exact(tiny_teacher, full_run, tmp_path):
    """A run killed after its step-2 checkpoint (here: a copy of that checkpoint, with a
    torn step-4 checkpoint beside it) resumes to the same losses as the uninterrupted run."""
    cut = tmp_path / "cut"
    shutil.copytree(full_run / "checkpoint-2", cut / "checkpoint-2")
    (cut / "checkpoint-4").mkdir()  # killed while writing: no training_state.json
    with pytest.warns(UserWarning, match="checkpoint-4 is incomplete"):
        pretrain.main(args_for(tiny_teacher, cut, *FULL, "--resume_from_checkpoint", "latest"))
    expected, resumed = losses(full_run), losses(cut)
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_resume_refuses_another_runs_checkpoint(tiny_teacher, full_run, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(full_run / "checkpoint-4", cut / "checkpoint-4")
    with pytest.raises(ValueError, match=r"different run[\s\S]*--seed: checkpoint 42, now 1"):
        pretrain.main(args_for(tiny_teacher, cut, *FULL, "--seed", "1",
                               "--resume_from_checkpoint", "latest"))
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        pretrain.main(args_for(tiny_teacher, cut, *FULL, "--seed", "1"))
    state_file = cut / "checkpoint-4" / "training_state.json"  # hand-edited to step 50
    state_file.write_text(state_file.read_text().replace('"step": 4', '"step": 50'))
    with pytest.raises(ValueError, match="step 50, beyond --max_steps 4"):
        pretrain.main(args_for(tiny_teacher, cut, *FULL, "--resume_from_checkpoint", "latest"))


def test_bf16_follows_the_fp32_loss_curve(tiny_teacher, full_run, tmp_path):
    """bf16 autocast (student and teacher forwards) on CPU: the loss of each of 4 steps
    within 5% of the fp32 run's (bf16 keeps 8 bits of mantissa: ~0.4% per rounding)."""
    out = pretrain.main(args_for(tiny_teacher, tmp_path / "bf16", *FULL,
                                 "--mixed_precision", "bf16"))
    fp32, bf16 = losses(full_run), losses(out)
    assert sorted(bf16) == [1, 2, 3, 4]
    for step in fp32:
        assert bf16[step] == pytest.approx(fp32[step], rel=5e-2), step


def test_non_finite_loss_stops_the_run(tmp_path):
    """A teacher with a NaN weight: the run stops at step 1 and saves no student."""
    from safetensors.torch import load_file, save_file

    teacher = save_tiny_bert(tmp_path / "nan-teacher", english_tokenizer())
    weights = load_file(teacher / "model.safetensors")
    name = next(k for k in weights if "word_embeddings" in k)
    weights[name][:, :] = float("nan")
    save_file(weights, str(teacher / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step 1"):
        pretrain.main(args_for(teacher, out, "--max_steps", "2"))
    assert not (out / "model.safetensors").exists()


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def two_processes(teacher, out, port: int, *extra: str) -> list[str]:
    """Stage 1 launched as two CPU processes (one gloo group) by ``accelerate launch``."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port),
            str(ROOT / "recipes" / "pretrain.py"), *args_for(teacher, out, *extra)]


def test_two_cpu_processes(tiny_teacher, tmp_path):
    out = tmp_path / "ddp"
    run = subprocess.run(two_processes(tiny_teacher, out, 29517, "--max_steps", "2"),
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    # one group of two, not two runs that each think they are alone (each would print this)
    assert run.stdout.count("stage-1 student saved") == 1, run.stdout[-4000:]
    assert SpikeBertForSequenceClassification.from_pretrained(out, num_labels=2)


def _worker_of_rank(launcher_pid: int, rank: int) -> int | None:
    """The pid of a launcher's worker process with ``RANK=<rank>`` in its environment (Linux)."""
    from pathlib import Path

    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds workers in /proc")
def test_sigterm_to_one_of_two_processes_stops_both_at_one_checkpoint(tiny_teacher, tmp_path):
    """A scheduler may signal one worker first: both stop after the same step, which is saved
    (without agreeing, the other worker would hang in its next collective)."""
    import signal
    import time

    from spikebert.checkpoint import latest_checkpoint

    out = tmp_path / "ddp"
    cmd = two_processes(tiny_teacher, out, 29519, "--max_steps", "100000",
                        "--checkpointing_steps", "0", "--eval_steps", "0")
    launcher = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    metrics = out / "logs" / "stage1" / "metrics.csv"
    try:
        deadline = time.monotonic() + 300
        while not (metrics.exists() and losses(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = _worker_of_rank(launcher.pid, 1)
        assert worker is not None, "no rank-1 worker found"
        os.kill(worker, signal.SIGTERM)
        output, _ = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    stopped = [line for line in output.splitlines() if "SIGTERM received" in line]
    assert stopped, output[-4000:]
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and f"saved {checkpoint}" in stopped[0], stopped


@pytest.mark.parametrize("extra, error, message", [
    (["--seq_length", "1000"], ValueError, "--seq_length 1000 exceeds the student's 32"),
    (["--override", *TINY_STUDENT, "hidden_sise=16"], ValueError, "did you mean 'hidden_size'"),
    (["--override", *TINY_STUDENT, "vocab_size=100"], ValueError, "vocabulary mismatch"),
])
def test_refused_before_training(tiny_teacher, tmp_path, extra, error, message):
    with pytest.raises(error, match=message):
        pretrain.main(args_for(tiny_teacher, tmp_path, "--max_steps", "1", *extra))
    assert not list(tmp_path.glob("checkpoint-*"))


def test_missing_corpus(tiny_teacher, tmp_path):
    argv = args_for(tiny_teacher, tmp_path, "--max_steps", "1")
    argv[argv.index("--corpus") + 1] = str(tmp_path / "nowhere.txt")
    with pytest.raises(FileNotFoundError, match="Tried, in order"):
        pretrain.main(argv)


def test_teacher_without_tokenizer(tiny_teacher, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny_teacher / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        pretrain.main(args_for(bare, tmp_path / "o", "--max_steps", "1"))


def test_precision_probe_reads_checkpoints_and_finished_runs(tiny_teacher, full_run):
    """bench/precision_probe.py on the run's last checkpoint and on its finished folder (the
    same weights): the same fp32 loss, every LIF probed, cosines in [-1, 1]."""
    sys.path.insert(0, str(ROOT / "bench"))
    import precision_probe

    common = ["--teacher", str(tiny_teacher), "--corpus", str(FIXTURES / "corpus_en.txt"),
              "--batches", "2", "--batch_size", "2", "--holdout_fraction", "0.4"]
    finished = precision_probe.main(["--checkpoint", str(full_run), *common])
    checkpoint = precision_probe.main(["--checkpoint", str(full_run / "checkpoint-4"),
                                       "--override", *TINY_STUDENT, *common])
    assert finished["loss_fp32"] == checkpoint["loss_fp32"]
    assert torch.isfinite(torch.tensor(finished["loss_bf16"]))
    assert len(finished["flips"]) == 2 * 4  # per block: Q/K/V, attention output, fc1, fc2
    assert finished["bf16_error_share"] >= 0.0
    for key in ("cos_bf16_vs_fp32", "cos_rounded_currents_vs_fp32", "cos_two_batches_fp32",
                "cos_bf16_errors_two_batches"):
        assert -1.0 <= finished[key] <= 1.0 + 1e-6
    with pytest.raises(SystemExit):  # one batch cannot give the gradient-noise scale
        precision_probe.main(["--checkpoint", str(full_run), *common[:-6], "--batches", "1"])
