"""recipes/results.py: the plan's commands parse, the runner skips, resumes and stops
dependants of a failure, and the README table is generated from the JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys

import pytest

from spikebert.arguments import DataArguments, TaskDataArguments, TrainingArguments, parse_arguments

import distill
import evaluate
import finetune_teacher
import pretrain
import pretrain_teacher
import results

PARSERS = {
    "recipes/pretrain.py": (pretrain.Stage1Arguments, DataArguments, TrainingArguments),
    "recipes/pretrain_teacher.py": (pretrain_teacher.TeacherMLMArguments, DataArguments,
                                    TrainingArguments),
    "recipes/finetune_teacher.py": (finetune_teacher.TeacherArguments, TaskDataArguments,
                                    TrainingArguments),
    "recipes/distill.py": (distill.Stage2Arguments, TaskDataArguments, TrainingArguments),
    "recipes/evaluate.py": (evaluate.EvaluateArguments, DataArguments),
}


@pytest.mark.parametrize("budget", sorted(results.BUDGETS))
def test_every_planned_command_parses(budget, tmp_path):
    jobs, rows = results.plan(results.BUDGETS[budget], "data", tmp_path)
    names = [j.name for j in jobs]
    for job in jobs:
        resume = ["--resume_from_checkpoint", "latest"] if job.resumable else []
        parse_arguments(PARSERS[job.argv[0]], job.argv[1:] + resume, "t")
        assert all(names.index(n) < names.index(job.name) for n in job.needs), job.name
        assert shlex.split(job.command()) == ["python", *job.argv]
    assert {r.task for r in rows} == {"sst2", "mr", "subj", "sst5", "waimai", "chnsenti"}
    assert len(rows) == 9  # six tasks and three SST-2 ablations
    grouped = {j.name for j in jobs if "--group_by_length" in j.argv}
    assert grouped == {"stage2-waimai", "stage2-chnsenti"}  # the long, uneven reviews


def test_training_jobs_run_under_the_launcher(tmp_path):
    jobs, _ = results.plan(results.BUDGETS["cpu"], "data", tmp_path, ("accelerate", "launch"))
    for job in jobs:
        launcher = ["accelerate", "launch"] if job.resumable else [sys.executable]
        assert job.process_argv()[:len(launcher)] == launcher, job.name
        assert job.process_argv()[len(launcher)] == str(results.ROOT / job.argv[0])
    assert jobs[0].command().startswith("accelerate launch recipes/pretrain_teacher.py ")


def test_only_selects_a_row_and_what_it_needs(tmp_path):
    jobs, rows = results.plan(results.BUDGETS["cpu"], "data", tmp_path)
    chosen = [j.name for j in results.select(jobs, rows, ["waimai"])]
    assert chosen == ["teacher-zh-mlm", "teacher-waimai", "stage1-zh", "stage2-waimai",
                      "eval-waimai"]
    with pytest.raises(SystemExit, match="unknown rows"):
        results.select(jobs, rows, ["sst-2"])


FAKE = """
import pathlib, sys
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
runs = out / "runs.txt"; runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
if sys.argv[2] == "fail":
    sys.exit(3)
if sys.argv[2] == "wait":  # a recipe that checkpoints on SIGTERM, as spikebert.trainer's
    import signal, time
    signal.signal(signal.SIGTERM, lambda n, f: sys.exit(128 + n))
    (out / "ready").touch()
    time.sleep(60)
(out / "final.json").write_text("{}")
"""


def test_runner_skips_done_jobs_and_stops_the_dependants_of_a_failure(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE)

    def job(name, mode, needs=()):
        return results.Job(name, [str(script), str(tmp_path / name), mode], "final.json",
                           list(needs))

    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "final.json").write_text("{}")
    jobs = [job("done", "ok"), job("ok", "ok", ["done"]), job("bad", "fail"),
            job("after-bad", "ok", ["bad"]), job("after-ok", "ok", ["ok"])]
    failed = results.run_all(jobs, tmp_path, parallel=2, log=lambda _: None)
    assert sorted(failed) == ["after-bad", "bad"]
    assert not (tmp_path / "done" / "runs.txt").exists()  # done: not run again
    assert not (tmp_path / "after-bad").exists()
    record = json.loads((tmp_path / "bad" / "job.json").read_text())
    assert record["invocations"][0]["rc"] == 3
    assert (tmp_path / "after-ok" / "final.json").exists()
    # a second call runs only what is not done, and adds to the failed job's record
    failed = results.run_all(jobs, tmp_path, parallel=1, log=lambda _: None)
    assert sorted(failed) == ["after-bad", "bad"]
    assert (tmp_path / "ok" / "runs.txt").read_text() == "x"
    assert len(json.loads((tmp_path / "bad" / "job.json").read_text())["invocations"]) == 2


def test_table_is_generated_from_the_json_into_the_readme(tmp_path):
    jobs, rows = results.plan(results.BUDGETS["cpu"], "data", tmp_path)
    (tmp_path / "eval-sst2").mkdir()
    (tmp_path / "eval-sst2" / "eval.json").write_text(json.dumps({
        "accuracy": 85.0, "teacher_accuracy": 88.65, "energy_mj": 0.1,
        "teacher_energy_mj": 1.25, "energy_reduction": 92.0}))
    (tmp_path / "stage2-sst2" / "logs" / "s").mkdir(parents=True)
    (tmp_path / "stage2-sst2" / "logs" / "s" / "metrics.csv").write_text(
        "step,name,value\n10,s_per_step,2.0\n20,s_per_step,3.0\n30,s_per_step,2.5\n")
    (tmp_path / "stage2-sst2" / "metrics.json").write_text("{}")  # its final file: done
    (tmp_path / "stage2-sst2" / "job.json").write_text(json.dumps(
        {"invocations": [{"wall_s": 600.0, "rc": 0}, {"wall_s": 1200.0, "rc": 0}]}))
    # a runner killed mid-job leaves wall_s None: counted until the job's log last changed
    (tmp_path / "stage2-mr").mkdir()
    (tmp_path / "stage2-mr" / "job.json").write_text(json.dumps({"invocations": [
        {"started_unix": 1_000_000, "wall_s": None, "rc": None}]}))
    (tmp_path / "stage2-mr" / "job.log").write_text("step 1")
    os.utime(tmp_path / "stage2-mr" / "job.log", (1_000_120, 1_000_120))
    # two killed runs in a row: the first ends no later than the second's start
    (tmp_path / "stage2-subj").mkdir()
    (tmp_path / "stage2-subj" / "job.json").write_text(json.dumps({"invocations": [
        {"started_unix": 1_000_000, "wall_s": None, "rc": None},
        {"started_unix": 1_000_500, "wall_s": None, "rc": None}]}))
    (tmp_path / "stage2-subj" / "job.log").write_text("step 1")
    os.utime(tmp_path / "stage2-subj" / "job.log", (1_000_900, 1_000_900))
    result = results.collect("cpu", jobs, rows, tmp_path)
    assert result["jobs"]["stage2-mr"]["wall_s"] == 120.0
    assert result["jobs"]["stage2-subj"]["wall_s"] == 900.0
    sst2 = result["rows"][0]
    assert sst2["gap"] == pytest.approx(-3.65)
    assert result["jobs"]["stage2-sst2"]["wall_s"] == 1800.0
    assert result["jobs"]["stage2-sst2"]["s_per_step"] == 2.5
    table = results.render_table(result)
    assert "| sst2 | 88.65 | 85.00 | -3.65 | 1.250 | 0.100 | 92.0% | 30 min | 2.50 |" in table
    assert "| mr | pending |" in table
    assert "| 2 min so far |" in table  # stage2-mr has no final file yet: not done
    # a finished evaluation has no steps: its rate is "-", not "pending"
    assert "| eval-sst2 | yes | - | - |" in table
    assert "| eval-mr | no | - | pending |" in table
    (tmp_path / "teacher-mr").mkdir()
    (tmp_path / "teacher-mr" / "metrics.json").write_text(json.dumps({"dev": {"accuracy": 0.8321}}))
    mr = results.collect("cpu", jobs, rows, tmp_path)["rows"][1]
    assert mr["teacher_accuracy"] == pytest.approx(83.21) and mr["student_accuracy"] is None
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.TABLE_BEGIN}\nold\n{results.TABLE_END}\nrest\n")
    results.write_readme(readme, table)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("\nrest\n")
    assert table in text
    readme.write_text("no markers")
    with pytest.raises(SystemExit, match="results-table"):
        results.write_readme(readme, table)


def test_main_writes_json_without_running_anything(tmp_path, capsys):
    out = tmp_path / "table.json"
    results.main(["--output_json", str(out), "--runs_dir", str(tmp_path / "runs"),
                  "--table_only"])
    saved = json.loads(out.read_text())
    assert saved["budget"] == "cpu" and len(saved["rows"]) == 9
    assert not (tmp_path / "runs").exists()
    assert "| sst2 | pending |" in capsys.readouterr().out


def test_a_lost_runs_folder_keeps_the_measured_rows_of_the_json(tmp_path):
    """The JSON is the record: a row and its jobs measured on a machine whose runs folder is
    gone stay in the table, marked carried, until a new run of the same row has measured
    it; a new run of its student (here in bf16) does not borrow the old numbers' times."""
    jobs, rows = results.plan(results.BUDGETS["cpu"], "data", tmp_path)
    old_command = "python recipes/distill.py --task sst2 --max_steps 1500"  # fp32
    previous = {"budget": "cpu", "rows": [{
        "row": "sst2", "task": "sst2", "teacher_job": "teacher-sst2",
        "student_job": "stage2-sst2", "evaluation_job": "eval-sst2",
        "teacher_accuracy": 88.65, "student_accuracy": 81.42, "gap": -7.23,
        "teacher_energy_mj": 1.261, "student_energy_mj": 0.156, "energy_reduction": 87.7}],
        "jobs": {"stage2-sst2": {"command": old_command, "done": True, "wall_s": 7920.0,
                                 "invocations": 2, "s_per_step": 4.876},
                 "eval-sst2": {"command": "python recipes/evaluate.py", "done": True,
                               "wall_s": 116.2, "invocations": 1, "s_per_step": None},
                 "stage2-mr": {"command": "x", "done": False, "wall_s": 60.0,
                               "invocations": 1, "s_per_step": 5.0}}}
    result = results.collect("cpu", jobs, rows, tmp_path, previous)
    sst2 = result["rows"][0]
    assert sst2["carried"] and sst2["student_accuracy"] == 81.42
    previous["jobs"]["stage2-sst2"]["command"] += " --mixed_precision bf16"
    assert results.collect("cpu", jobs, rows, tmp_path, previous)["rows"][0]["precision"] \
        == "bf16"
    previous["jobs"]["stage2-sst2"]["command"] = old_command
    assert sorted(sst2["runs"]) == ["eval-sst2", "stage2-sst2"]  # those the JSON had
    assert sst2["precision"] == "fp32"
    assert result["jobs"]["stage2-sst2"]["carried"]
    assert result["jobs"]["stage2-mr"]["wall_s"] == 0  # unfinished: not kept
    table = results.render_table(result)
    assert "| sst2 | 88.65 | 81.42 | -7.23 | 1.261 | 0.156 | 87.7% | 132 min | 4.88 | fp32 |" \
        in table
    assert "(kept from the JSON: its run folder is gone) |" in table
    # a new run of the student (another command) has started: the row keeps its old run's
    (tmp_path / "stage2-sst2").mkdir()
    (tmp_path / "stage2-sst2" / "job.json").write_text(json.dumps({"invocations": [
        {"started_unix": 1_000_000, "wall_s": 30.0, "rc": 0}]}))
    again = results.collect("cpu", jobs, rows, tmp_path, result)
    assert again["rows"][0]["student_accuracy"] == 81.42
    assert again["rows"][0]["precision"] == "fp32"
    assert again["jobs"]["stage2-sst2"]["command"] != old_command
    table = results.render_table(again)
    assert "| 132 min | 4.88 | fp32 |" in table
    assert f"| stage2-sst2 (the run behind rows sst2) | yes | 132 min | 4.88 | `{old_command}`" \
        in table
    assert "eval-sst2 (the run behind" not in table  # not run again: listed once, above
    # ... until its evaluation has measured it again
    (tmp_path / "eval-sst2").mkdir()
    (tmp_path / "eval-sst2" / "eval.json").write_text(json.dumps({
        "accuracy": 82.0, "teacher_accuracy": 88.0, "energy_mj": 0.15,
        "teacher_energy_mj": 1.25, "energy_reduction": 88.0}))
    fresh = results.collect("cpu", jobs, rows, tmp_path, again)["rows"][0]
    assert "carried" not in fresh and fresh["student_accuracy"] == 82.0
    assert fresh["precision"] == "bf16"  # this plan's commands
    with pytest.raises(SystemExit, match="budget 'cpu', not 'smoke'"):
        results.collect("smoke", jobs, rows, tmp_path, previous)


def test_cpu_jobs_train_in_bf16_and_evaluations_run_as_they_are(tmp_path):
    jobs, rows = results.plan(results.BUDGETS["cpu"], "data", tmp_path)
    for job in jobs:
        assert (results.precision(job.command()) == "bf16") == job.resumable, job.name
    summaries = {job.name: {"command": job.command()} for job in jobs}
    assert {results.student_precision(r, summaries) for r in rows} == {"bf16"}


def test_precision_is_read_from_the_command():
    assert results.precision("python recipes/distill.py --mixed_precision bf16") == "bf16"
    assert results.precision("python recipes/distill.py --mixed_precision no") == "fp32"
    assert results.precision("python recipes/distill.py") == "fp32"


def test_a_job_run_by_a_live_process_is_not_started_twice(tmp_path):
    """Two runners on one runs folder: the second refuses the job the first holds (its
    lock names a live process) and takes over the lock of a dead one."""
    import subprocess

    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    job = results.Job("j", [str(script), str(tmp_path / "j"), "ok"], "final.json")
    (tmp_path / "j").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "j" / "job.lock").write_text(f"{holder.pid}\n")
        with pytest.raises(RuntimeError, match=f"being run by process {holder.pid}"):
            results.run_job(job, tmp_path, log=lambda _: None)
    finally:
        holder.kill()
        holder.wait()
    results.run_job(job, tmp_path, log=lambda _: None)  # the holder is gone: taken over
    assert (tmp_path / "j" / "final.json").exists()
    assert not (tmp_path / "j" / "job.lock").exists()


def test_recipes_run_with_huge_page_malloc_unless_set(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert results.job_env()["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert results.job_env()["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_a_new_run_closes_a_killed_run_at_its_logs_last_write(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("step 7")
    os.utime(log, (1_000_300, 1_000_300))
    record = {"invocations": [{"started_unix": 1_000_000, "wall_s": None, "rc": None}]}
    results.close_killed_invocation(record, log)
    assert record["invocations"][0]["wall_s"] == 300.0
    assert record["invocations"][0]["closed_from_log"]
    results.close_killed_invocation(record, log)  # a closed or finished run is left alone
    assert record["invocations"][0]["wall_s"] == 300.0
    results.close_killed_invocation({"invocations": []}, log)


def test_a_stop_signal_reaches_the_running_recipe_and_starts_no_new_job(tmp_path):
    import signal
    import threading
    import time

    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    jobs = [results.Job(name, [str(script), str(tmp_path / name), mode], "final.json")
            for name, mode in (("slow", "wait"), ("next", "ok"))]
    children = results.Children()

    def stop_when_ready():
        while not (tmp_path / "slow" / "ready").exists():
            time.sleep(0.05)
        children.forward(signal.SIGTERM)

    threading.Thread(target=stop_when_ready, daemon=True).start()
    messages = []
    failed = results.run_all(jobs, tmp_path, parallel=1, log=messages.append,
                             children=children)
    assert failed == ["slow"] and not (tmp_path / "next").exists()
    assert any("stopped by SIGTERM" in m for m in messages), messages
    record = json.loads((tmp_path / "slow" / "job.json").read_text())
    assert record["invocations"][0]["rc"] == 128 + signal.SIGTERM


def test_evaluations_then_started_jobs_go_first(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    jobs = [results.Job(name, [str(script), str(tmp_path / name), "ok"], "final.json")
            for name in ("fresh", "started", "eval")]
    jobs[2].resumable = False
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "job.json").write_text('{"invocations": []}')
    messages = []
    results.run_all(jobs, tmp_path, parallel=1, log=messages.append)
    assert [m.split("]")[0] for m in messages if m.endswith("done")] == [
        "[eval", "[started", "[fresh"]


def test_a_students_precision_names_both_stages_when_they_differ(tmp_path):
    budget = dataclasses.replace(results.BUDGETS["cpu"], stage1_precision="bf16",
                                 stage2_precision=None)
    jobs, rows = results.plan(budget, "data", tmp_path)
    summaries = {job.name: {"command": job.command()} for job in jobs}
    row = {r.label: r for r in rows}
    assert results.precision(summaries["stage1-en"]["command"]) == "bf16"
    assert results.precision(summaries["stage2-sst2"]["command"]) == "fp32"
    assert results.student_precision(row["sst2"], summaries) == "bf16 stage 1, fp32 stage 2"
    assert results.student_precision(row["sst2, no stage 1"], summaries) == "fp32"
    both = dataclasses.replace(budget, stage2_precision="bf16")
    jobs, _ = results.plan(both, "data", tmp_path)
    summaries = {job.name: {"command": job.command()} for job in jobs}
    assert results.student_precision(row["chnsenti"], summaries) == "bf16"
