"""The main job on a machine with nothing beside the clone: no data folder, no network.

Every recipe runs as a user would run it (a separate process, from an empty working
directory, ``SPIKEBERT_DATA`` unset, the Hub offline) on the data bundled inside the package:
teacher fine-tuning on the bundled SST-2, stage 1 on ``--corpus sample``, stage 2, and
``transformers.pipeline`` on the distilled student.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_STUDENT

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"

pytestmark = pytest.mark.slow


def _run(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SPIKEBERT_DATA", "PYTHONPATH")}
    # the checkout under test is the installed package (as after `pip install -e .`)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(RECIPES / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def test_main_job_from_a_bare_directory(tmp_path):
    work = tmp_path / "elsewhere"  # no ../shared, no data folder anywhere near
    work.mkdir()
    common = ["--report_to", "none", "--logging_steps", "1", "--checkpointing_steps", "0"]

    teacher = _run("finetune_teacher.py", [
        "--task", "sst2", "--model", "minilm", "--output_dir", "teacher",
        "--max_train_samples", "32", "--max_length", "32", "--batch_size", "8",
        "--max_steps", "2", "--eval_steps", "0", *common], work)
    assert "bundled" in teacher.stdout + teacher.stderr  # the log says which copy was used

    _run("pretrain.py", [
        "--teacher", "minilm", "--corpus", "sample", "--output_dir", "stage1",
        "--max_blocks", "64", "--batch_size", "4", "--max_steps", "2", "--eval_steps", "0",
        "--override", *TINY_STUDENT, *common], work)

    _run("distill.py", [
        "--task", "sst2", "--teacher", "teacher", "--student", "stage1", "--output_dir",
        "stage2", "--max_train_samples", "16", "--max_length", "32", "--batch_size", "4",
        "--n_iter", "1", "--max_steps", "2", "--eval_steps", "2", *common], work)

    student = work / "stage2"
    assert (student / "README.md").is_file(), "stage 2 writes a model card"
    code = ("import spikebert, sys; from transformers import pipeline; "
            "p = pipeline('text-classification', model=sys.argv[1]); "
            "print(p(['a gripping, funny film', 'dull and lifeless'])) ")
    env = {k: v for k, v in os.environ.items() if k != "SPIKEBERT_DATA"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, str(student)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "'label': 'positive'" in out.stdout or "'label': 'negative'" in out.stdout, out.stdout
