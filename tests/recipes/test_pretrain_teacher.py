"""recipes/pretrain_teacher.py: the offline (Chinese) teacher, then the whole Chinese path."""

from __future__ import annotations

import json
import shutil

import pytest

from spikebert.trainer import read_csv_metrics

import distill
import evaluate
import finetune_teacher
import pretrain_teacher
from conftest import FIXTURES, TINY_STUDENT

TINY_BERT = ["--num_layers", "2", "--hidden_size", "32", "--num_heads", "2",
             "--intermediate_size", "64", "--max_position_embeddings", "64"]


def mlm_args(out, *extra: str) -> list[str]:
    return ["--corpus", str(FIXTURES / "corpus_zh.txt"), "--tasks", "waimai",
            "--data_dir", str(FIXTURES), "--output_dir", str(out), *TINY_BERT,
            "--seq_length", "32", "--batch_size", "8", "--max_steps", "4", "--eval_steps", "2",
            "--checkpointing_steps", "2", "--logging_steps", "1", "--vocab_size", "800",
            "--min_frequency", "1", "--report_to", "csv", *extra]


@pytest.fixture(scope="module")
def mlm_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("zh-mlm")
    return out, pretrain_teacher.main(mlm_args(out))


def test_mlm_teacher_is_saved_with_its_tokenizer(mlm_teacher):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out, result = mlm_teacher
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.tokenize("好吃") == ["好", "吃"]
    assert result["unknown_rate"]["waimai"] == 0.0
    assert result["vocab_size"] == len(tokenizer) == AutoModelForMaskedLM.from_pretrained(
        out).config.vocab_size
    assert 0 <= result["heldout_accuracy"] <= 1 and result["heldout_loss"] > 0
    saved = json.loads((out / "pretrain_teacher.json").read_text())
    assert saved["steps"] == 4 and saved["tasks"] == ["waimai"]
    assert set(read_csv_metrics(out / "logs" / "teacher_mlm" / "metrics.csv", "loss")) == {
        1, 2, 3, 4}


def test_chinese_path_end_to_end(mlm_teacher, tmp_path):
    """MLM teacher -> fine-tuned on a Waimai slice -> stage 2 -> evaluate with energy."""
    out, _ = mlm_teacher
    waimai = ["--all_file", str(FIXTURES / "waimai" / "all.jsonl"), "--no_hub"]
    teacher = tmp_path / "teacher"
    tuned = finetune_teacher.main(["--task", "waimai", "--model", str(out), *waimai,
                                   "--output_dir", str(teacher), "--max_steps", "2",
                                   "--batch_size", "16", "--max_length", "32",
                                   "--report_to", "csv"])
    assert tuned["dev"]["step"] > 0
    student = tmp_path / "student"
    distill.main(["--task", "waimai", "--teacher", str(teacher), *waimai,
                  "--output_dir", str(student), "--batch_size", "8", "--max_steps", "2",
                  "--eval_steps", "2", "--n_iter", "1", "--report_to", "csv",
                  "--override", *TINY_STUDENT])
    report = evaluate.main(["--model", str(student), "--task", "waimai", "--split", "dev",
                            "--data_dir", str(FIXTURES), "--teacher", str(teacher)])
    assert 0 <= report["accuracy"] <= 100 and report["energy_reduction"] > 0


def test_resume_is_exact(mlm_teacher, tmp_path):
    """Resuming a copy of the step-2 checkpoint (and the tokenizer saved at the start)
    gives the uninterrupted run's losses: same masks, same dropout."""
    full, _ = mlm_teacher
    cut = tmp_path / "cut"
    shutil.copytree(full / "checkpoint-2", cut / "checkpoint-2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(full / name, cut / name)
    pretrain_teacher.main(mlm_args(cut, "--resume_from_checkpoint", "latest"))
    expected = read_csv_metrics(full / "logs" / "teacher_mlm" / "metrics.csv", "loss")
    resumed = read_csv_metrics(cut / "logs" / "teacher_mlm" / "metrics.csv", "loss")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):  # a wrong mask or dropout draw moves the loss by ~1e-3
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5), step


def test_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus"):
        pretrain_teacher.main(mlm_args(tmp_path, "--corpus", str(tmp_path / "none.txt")))


def test_too_little_text(tmp_path):
    with pytest.raises(ValueError, match="fewer than --batch_size"):
        pretrain_teacher.main(mlm_args(tmp_path, "--batch_size", "10000"))


@pytest.mark.parametrize("extra", [["--hidden_size", "33"], ["--seq_length", "100"],
                                   ["--mlm_probability", "1.5"], ["--max_steps", "0"]])
def test_bad_arguments(tmp_path, extra):
    with pytest.raises(SystemExit):
        pretrain_teacher.main(mlm_args(tmp_path, *extra))
