"""Stage 2 (recipes/distill.py), teacher fine-tuning and evaluation on data slices."""

from __future__ import annotations

import json

import pytest
import torch

from spikebert import SpikeBertForSequenceClassification

import distill
import evaluate
import finetune_teacher
from conftest import FIXTURES, TINY_STUDENT


def stage2_args(task, teacher, out, files, *extra) -> list[str]:
    return ["--task", task, "--teacher", str(teacher), *files, "--output_dir", str(out),
            "--batch_size", "8", "--max_steps", "3", "--eval_steps", "2", "--n_iter", "2",
            "--logging_steps", "1", "--report_to", "csv", "--no_hub",
            "--override", *TINY_STUDENT, *extra]


SST2 = ["--train_file", str(FIXTURES / "sst2" / "train.jsonl"),
        "--dev_file", str(FIXTURES / "sst2" / "dev.jsonl")]
WAIMAI = ["--all_file", str(FIXTURES / "waimai" / "all.jsonl")]


def test_teacher_finetuning_on_sst2_slice(tmp_path):
    from spikebert.loading import packaged_minilm_path

    out = tmp_path / "teacher"
    result = finetune_teacher.main(["--task", "sst2", "--model", packaged_minilm_path(), *SST2,
                                    "--output_dir", str(out), "--max_steps", "2",
                                    "--batch_size", "16", "--max_length", "32", "--no_hub",
                                    "--report_to", "csv", "--checkpointing_steps", "1"])
    assert 0.0 <= result["dev"]["accuracy"] <= 1.0 and result["dev"]["step"] > 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "metrics.json").read_text())["task"] == "sst2"
    assert (out / "checkpoint-2" / "training_state.json").is_file()  # the shared loop's


def test_stage2_end_to_end_english(tiny_classifier_teacher, tmp_path, monkeypatch):
    """Stage 2 into a folder holding an old run's best.json (with --overwrite_output_dir),
    augmenting only what the run draws; the student then loads in ``pipeline()`` and gets a
    model card; evaluation writes energy and plots."""
    from transformers import pipeline

    from spikebert.augment import Augmenter

    out = tmp_path / "s2"
    out.mkdir()
    (out / "best.json").write_text(json.dumps({"step": 99, "accuracy": 1.0}))
    with pytest.raises(FileExistsError, match=r"best\.json"):
        distill.main(stage2_args("sst2", tiny_classifier_teacher, out, SST2))
    calls = []
    original = Augmenter.augment_analyzed
    monkeypatch.setattr(Augmenter, "augment_analyzed",
                        lambda self, a, i: calls.append(i) or original(self, a, i))
    result = distill.main(stage2_args("sst2", tiny_classifier_teacher, out, SST2,
                                      "--n_iter", "20", "--overwrite_output_dir"))
    assert result["train_examples"] == 64 * 21
    # 3 steps of 8 drawn, plus the one batch Accelerate's loader fetches ahead; an eager
    # pass would augment all 64 examples (64 x 20 copies) first
    assert len(calls) <= 4 * 8, "only the drawn examples are augmented"
    best = json.loads((out / "best.json").read_text())
    assert best["step"] in (2, 3) and best == result["dev"]
    assert (out / "model.safetensors").is_file()

    classify = pipeline("text-classification", model=str(out))
    labels = {p["label"] for p in classify(["a great movie", "dull and long"])}
    assert labels <= {"negative", "positive"}
    card = (out / "README.md").read_text()
    for needle in ("sst2", "recipes/distill.py", "--overwrite_output_dir", "Energy per sample",
                   "layer.0.mlp.fc1", result["split"]["sha256"]["train"]):
        assert needle in card, needle

    report = evaluate.main(["--model", str(out), "--task", "sst2",
                            "--data_file", str(FIXTURES / "sst2" / "dev.jsonl"),
                            "--teacher", str(tiny_classifier_teacher),
                            "--output_json", str(tmp_path / "eval.json"), "--plots"])
    saved = json.loads((tmp_path / "eval.json").read_text())
    for key in ("accuracy", "teacher_accuracy", "energy_mj", "teacher_energy_mj",
                "energy_reduction", "markdown_row"):
        assert key in saved, key
    assert saved == report and 0 <= saved["accuracy"] <= 100
    assert saved["energy_mj"] > 0 and saved["teacher_energy_mj"] > 0
    for name in ("eval-firing_rates.png", "eval-attention.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name


def test_stage2_from_stage1_student(tiny_classifier_teacher, tmp_path):

    from spikebert import SpikeBertConfig, SpikeBertModel

    config = SpikeBertConfig.from_preset("mini", vocab_size=30522, **{
        k: int(v) for k, v in (o.split("=") for o in TINY_STUDENT)})
    torch.manual_seed(0)
    SpikeBertModel(config).save_pretrained(tmp_path / "stage1")
    out = tmp_path / "s2"
    result = distill.main(stage2_args("sst2", tiny_classifier_teacher, out, SST2,
                                      "--student", str(tmp_path / "stage1"), "--no_augment"))
    assert result["train_examples"] == 64
    assert SpikeBertForSequenceClassification.from_pretrained(out).config.num_labels == 2


def test_stage2_end_to_end_chinese(tiny_chinese_teacher, tmp_path):
    out = tmp_path / "zh"
    result = distill.main(stage2_args("waimai", tiny_chinese_teacher, out, WAIMAI,
                                      "--override", *TINY_STUDENT, "vocab_size=2000"))
    assert result["split"]["split_by"] == "seeded_stratified"
    report = evaluate.main(["--model", str(out), "--task", "waimai",
                            "--data_file", str(FIXTURES / "waimai" / "all.jsonl")])
    assert 0 <= report["accuracy"] <= 100


def test_stage2_grouped_by_length_resumes_exactly(tiny_chinese_teacher, tmp_path):
    """--group_by_length: a run resumed mid-epoch from its checkpoint trains on the same
    batches, so its losses equal the uninterrupted run's."""
    import shutil

    from spikebert.trainer import read_csv_metrics

    def run(out, *extra):
        distill.main(stage2_args("waimai", tiny_chinese_teacher, out, WAIMAI, "--override",
                                 *TINY_STUDENT, "vocab_size=2000", "--max_steps", "4",
                                 "--eval_steps", "0", "--checkpointing_steps", "2",
                                 "--group_by_length", *extra))
        return read_csv_metrics(out / "logs" / "stage2-waimai" / "metrics.csv", "loss")

    full = run(tmp_path / "full")
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "cut" / "checkpoint-2")
    resumed = run(tmp_path / "cut", "--resume_from_checkpoint", "latest")
    assert sorted(full) == [1, 2, 3, 4]
    assert sorted(resumed) == [3, 4] and resumed == {s: full[s] for s in (3, 4)}


def test_stage2_nan_teacher_stops_the_run(tmp_path):
    from safetensors.torch import load_file, save_file

    from conftest import english_tokenizer, save_tiny_bert

    teacher = save_tiny_bert(tmp_path / "teacher", english_tokenizer(), 2)
    weights = load_file(teacher / "model.safetensors")
    name = next(k for k in weights if k.startswith("classifier.weight"))
    weights[name][:] = float("nan")
    save_file(weights, str(teacher / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "s2"
    with pytest.raises(FloatingPointError, match="at step 1"):
        distill.main(stage2_args("sst2", teacher, out, SST2, "--no_augment"))
    assert not (out / "model.safetensors").exists() and not (out / "best.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--max_steps", "-1"], "--max_steps must be an integer >= 1"),
    (["--w_kl", "nan"], "--w_kl must be a finite number"),
    (["--temperature", "0"], "--temperature must be >"),
    (["--epochs", "nan"], "--epochs must be a finite number"),
    (["--warmup_ratio", "nan"], "--warmup_ratio must be a finite number"),
    (["--logging_steps", "0"], "--logging_steps must be an integer >= 1"),
])
def test_bad_flags_exit_before_loading_anything(tmp_path, extra, message, capsys):
    with pytest.raises(SystemExit):
        distill.main(stage2_args("sst2", tmp_path / "no-teacher", tmp_path, SST2, *extra))
    assert message in capsys.readouterr().err


def test_finetune_epochs_zero_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        finetune_teacher.main(["--task", "sst2", *SST2, "--output_dir", str(tmp_path),
                               "--epochs", "0"])
    assert "--epochs must be >" in capsys.readouterr().err


def test_max_length_beyond_the_models_is_refused(tiny_classifier_teacher, tmp_path):
    with pytest.raises(ValueError, match="--max_length 1000 exceeds the student's 32"):
        distill.main(stage2_args("sst2", tiny_classifier_teacher, tmp_path, SST2,
                                 "--max_length", "1000"))


def test_label_count_mismatch(tiny_classifier_teacher, tmp_path):
    files = ["--train_file", str(FIXTURES / "sst2" / "train.jsonl"),
             "--dev_file", str(FIXTURES / "sst2" / "dev.jsonl")]
    with pytest.raises(ValueError, match="labels"):
        distill.main(stage2_args("sst5", tiny_classifier_teacher, tmp_path, files))


def test_unknown_task(tiny_classifier_teacher, tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        distill.main(stage2_args("imdb-xl", tiny_classifier_teacher, tmp_path, SST2))


def test_model_dir_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model weights"):
        evaluate.main(["--model", str(tmp_path), "--task", "sst2",
                       "--data_file", str(FIXTURES / "sst2" / "dev.jsonl")])


def test_data_file_with_missing_field(tiny_classifier_teacher, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 1}\n{"label": 0}\n')
    with pytest.raises(ValueError, match="text"):
        distill.main(stage2_args("sst2", tiny_classifier_teacher, tmp_path / "o",
                                 ["--train_file", str(bad), "--dev_file", str(bad)]))


def test_stage2_pairs_and_regression(tmp_path):
    """STS-B-style sentence pairs with a real-valued label, through stage 2 and evaluation."""
    from conftest import english_tokenizer, save_tiny_bert

    teacher = save_tiny_bert(tmp_path / "teacher", english_tokenizer(), num_labels=1)
    rows = [{"text_a": f"a man is playing a guitar number {i}",
             "text_b": f"a person plays music {i % 3}", "label": (i % 6) * 1.0}
            for i in range(24)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = ["--train_file", str(pairs), "--dev_file", str(pairs)]
    out = tmp_path / "s2"
    result = distill.main(stage2_args("stsb", teacher, out, files, "--no_augment"))
    assert set(result["dev"]) >= {"pearson", "spearmanr"}
    report = evaluate.main(["--model", str(out), "--task", "stsb", "--data_file", str(pairs)])
    assert -100 <= report["pearson"] <= 100 and "markdown_row" in report
