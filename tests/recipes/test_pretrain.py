"""Stage 1 (recipes/pretrain.py) end to end on tiny models, resume, 2 processes, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from spikebert import SpikeBertForSequenceClassification
from spikebert.training import read_csv_metrics

import pretrain
from conftest import FIXTURES, ROOT, TINY_STUDENT


def args_for(teacher, out, *extra: str) -> list[str]:
    return ["--teacher", str(teacher), "--corpus", str(FIXTURES / "corpus_en.txt"),
            "--output_dir", str(out), "--batch_size", "4", "--logging_steps", "1",
            "--eval_steps", "2", "--report_to", "csv", "--override", *TINY_STUDENT, *extra]


def test_stage1_end_to_end(tiny_teacher, tmp_path):
    out = pretrain.main(args_for(tiny_teacher, tmp_path / "s1", "--max_steps", "3"))
    loss = read_csv_metrics(out / "logs" / "stage1" / "metrics.csv", "loss")
    assert sorted(loss) == [1, 2, 3] and all(torch.isfinite(torch.tensor(list(loss.values()))))
    held = read_csv_metrics(out / "logs" / "stage1" / "metrics.csv", "heldout_loss")
    assert held, "the held-out alignment loss was never logged"
    student = SpikeBertForSequenceClassification.from_pretrained(out, num_labels=3)
    assert student.config.num_labels == 3
    assert (out / "aligner.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_resume_is_exact(tiny_teacher, tmp_path):
    common = ("--max_steps", "4", "--checkpointing_steps", "2", "--holdout_fraction", "0")
    full = pretrain.main(args_for(tiny_teacher, tmp_path / "full", *common))
    with pytest.raises(SystemExit):
        pretrain.main(args_for(tiny_teacher, tmp_path / "cut", *common, "--stop_after_step", "2"))
    pretrain.main(args_for(tiny_teacher, tmp_path / "cut", *common,
                           "--resume_from_checkpoint", "latest"))
    expected = read_csv_metrics(full / "logs" / "stage1" / "metrics.csv", "loss")
    resumed = read_csv_metrics(tmp_path / "cut" / "logs" / "stage1" / "metrics.csv", "loss")
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_two_cpu_processes(tiny_teacher, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", "29517",
           str(ROOT / "recipes" / "pretrain.py"),
           *args_for(tiny_teacher, out, "--max_steps", "2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "stage-1 student saved" in run.stdout
    assert SpikeBertForSequenceClassification.from_pretrained(out, num_labels=2)


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


def test_vocab_mismatch(tiny_teacher, tmp_path):
    argv = args_for(tiny_teacher, tmp_path, "--max_steps", "1",
                    "--override", *TINY_STUDENT, "vocab_size=100")
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        pretrain.main(argv)
