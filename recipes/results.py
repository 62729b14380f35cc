"""Rerun the README's results table: teachers, stage 1, stage 2, ablations, evaluation.

    python recipes/results.py --budget cpu --data_dir ../shared/data --runs_dir outputs/table \\
        --output_json outputs/table/results-cpu.json --parallel 2
    python recipes/results.py --budget cpu --runs_dir outputs/table --table_only \\
        --output_json results/cpu.json --write_readme README.md   # collect only, run nothing

The plan is a list of jobs, each one recipe command (the JSON and the README show them
verbatim). A job whose final file exists is done and skipped; a training job that was
stopped resumes from its newest complete checkpoint (``--resume_from_checkpoint latest``),
so the same command picks up where a finished session left off. Each job's wall time is
summed over its invocations in ``<job>/job.json``; its seconds per step are the median of
the trainer's logged ``s_per_step``. ``--only sst2 "sst2, no stage 1"`` runs just those
rows (and the jobs they need). A failed job stops its dependants and makes the command
exit non-zero. A SIGTERM (or SIGUSR1) to the runner starts no new job and is passed on to the
running recipes, which checkpoint their current step and exit; the runner then exits with
128 + signal, and the same command resumes everything. The JSON written before is read
back: rows and jobs it recorded whose run folders are gone are kept, marked carried.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from spikebert.checkpoint import atomic_write_text
from spikebert.trainer import read_csv_metrics, stop_signals

ROOT = Path(__file__).resolve().parents[1]
ENGLISH = ("sst2", "mr", "subj", "sst5")
CHINESE = ("waimai", "chnsenti")
TABLE_BEGIN, TABLE_END = "<!-- results-table:begin -->", "<!-- results-table:end -->"


@dataclass(frozen=True)
class Budget:
    """Models and steps of every job. ``cpu`` is what this project's 2-core machine runs (one
    job per core, across sessions); ``smoke`` checks that every command runs on the real data;
    ``paper`` is the paper's setting for GPUs (Hub teachers and corpora, the 12 x 768
    student, stage 2 for 30 epochs of 20 augmented copies): its commands are checked to
    parse, but it has not been run (no GPU here)."""

    teacher_epochs: dict[str, float]
    stage1_steps: int     # English
    stage1_steps_zh: int  # Chinese
    n_iter: int           # augmented copies of each training example in stage 2
    eval_steps: int       # stage 2: dev accuracy every N steps; the best is kept
    stage2_steps: int | None = None  # None: --stage2_epochs
    stage2_epochs: float = 30.0
    mlm_steps: int = 0    # pre-training of the home-made Chinese teacher (zh_teacher None)
    preset: str = "mini"
    en_teacher: str = "minilm"     # stage-1 teacher and the encoder fine-tuned per task
    zh_teacher: str | None = None  # None: built here by recipes/pretrain_teacher.py
    en_corpus: str = "corpus_en"
    zh_corpus: str = "corpus_zh"
    en_length: int = 64   # tokens per example and per stage-1 block (English)
    teacher_lr: tuple[str, str] = ("1e-4", "2e-4")  # English, Chinese
    stage1_batch: int = 32
    teacher_eval_steps: dict[str, int] = field(default_factory=dict)  # default: per epoch
    # autocast of the teachers' jobs (MLM pre-training, fine-tuning), of stage 1 and of stage
    # 2; None: what the launcher sets. On a CPU with AVX512-BF16, bf16 makes a step 1.6-2.4x
    # faster and the teachers come out as in fp32 (within 1.2 dev points). A bf16 stage 1
    # once plateaued at held-out loss 2.28 against fp32's 1.95, while its alignment maps and
    # losses ran in bf16 too; with them in fp32 (spikebert.distill.full_precision) its
    # held-out loss follows the fp32 run's within 0.004, and a bf16 stage 2 on SST-2 from it
    # kept level with an fp32 one on dev at 2x the speed (README, "Precision")
    teacher_precision: str | None = None
    stage1_precision: str | None = None
    stage2_precision: str | None = None


BUDGETS = {
    "cpu": Budget(teacher_epochs={"sst2": 3, "mr": 3, "subj": 2, "sst5": 3, "waimai": 3,
                                  "chnsenti": 3},
                  mlm_steps=1500, stage1_steps=3000, stage1_steps_zh=1500, stage2_steps=1500,
                  n_iter=8, eval_steps=150,
                  # the English teachers' dev evaluations per epoch, as they were run
                  teacher_eval_steps={"sst2": 109, "mr": 134, "subj": 125, "sst5": 134},
                  teacher_precision="bf16", stage1_precision="bf16",
                  stage2_precision="bf16"),
    "smoke": Budget(teacher_epochs={t: 0.01 for t in ENGLISH + CHINESE}, mlm_steps=2,
                    stage1_steps=2, stage1_steps_zh=2, stage2_steps=2, n_iter=1, eval_steps=2,
                    teacher_eval_steps={t: 1 for t in ENGLISH}, teacher_precision="bf16",
                    stage1_precision="bf16", stage2_precision="bf16"),
    "paper": Budget(teacher_epochs={t: 3 for t in ENGLISH + CHINESE}, stage1_steps=50_000,
                    stage1_steps_zh=20_000, n_iter=20, eval_steps=2000, stage2_epochs=30,
                    preset="paper", en_teacher="bert-base-cased",
                    zh_teacher="hfl/chinese-bert-wwm", en_corpus="wikipedia_en+bookcorpus",
                    zh_corpus="wikipedia_zh", en_length=128, teacher_lr=("2e-5", "2e-5"),
                    stage1_batch=128),
}
# the home-made Chinese teacher has the English teacher's (all-MiniLM-L6-v2) size, 6 x 384
# with 12 heads: a teacher no bigger than the student would leave little energy to save
# long jobs keep their two newest checkpoints (a resumed run needs the newest complete one)
KEEP = ["--save_total_limit", "2"]
ZH_TEACHER_SIZE = ["--num_layers", "6", "--hidden_size", "384", "--num_heads", "12",
                   "--intermediate_size", "1536"]


@dataclass
class Job:
    """One recipe run: ``argv`` after the interpreter, done when ``out/final`` exists."""

    name: str
    argv: list[str]
    final: str
    needs: list[str] = field(default_factory=list)
    resumable: bool = True
    launcher: tuple[str, ...] = ("python",)  # e.g. ("accelerate", "launch") for GPUs/nodes

    def out(self, runs_dir: Path) -> Path:
        return runs_dir / self.name

    def command(self) -> str:
        return shlex.join([*self.launcher, *self.argv])

    def process_argv(self) -> list[str]:
        """The command as run: this interpreter for ``python``, the recipe by its path."""
        launcher = [sys.executable] if self.launcher == ("python",) else list(self.launcher)
        return [*launcher, str(ROOT / self.argv[0]), *self.argv[1:]]


@dataclass(frozen=True)
class Row:
    """One line of the table: a task's teacher, its student and the evaluation of both."""

    label: str
    task: str
    teacher: str  # job names
    student: str
    evaluation: str
    stage1: str | None = None  # the student's stage-1 job; None: stage 2 from scratch


def plan(budget: Budget, data_dir: str, runs: Path,
         launcher: tuple[str, ...] = ("python",)) -> tuple[list[Job], list[Row]]:
    """Every job of the table, dependencies first, and the table's rows. Training jobs run
    under ``launcher``; evaluations under ``python`` (one process writes their JSON)."""
    d = ["--data_dir", data_dir]
    jobs = []
    built = budget.zh_teacher is None  # the Chinese teacher is pre-trained here
    zh_base = str(runs / "teacher-zh-mlm") if built else budget.zh_teacher
    zh_needs = ["teacher-zh-mlm"] if built else []
    if built:
        jobs.append(Job("teacher-zh-mlm", [
            "recipes/pretrain_teacher.py", "--corpus", budget.zh_corpus, "--tasks", *CHINESE,
            *d, "--output_dir", str(runs / "teacher-zh-mlm"), "--max_steps",
            str(budget.mlm_steps), "--batch_size", "32", "--lr", "5e-4", "--eval_steps", "250",
            "--logging_steps", "10", "--checkpointing_steps", "100", *KEEP, *ZH_TEACHER_SIZE],
            "pretrain_teacher.json"))
    for task in ENGLISH + CHINESE:
        zh = task in CHINESE
        per_epoch = ([] if task not in budget.teacher_eval_steps
                     else ["--eval_steps", str(budget.teacher_eval_steps[task])])
        jobs.append(Job(f"teacher-{task}", [
            "recipes/finetune_teacher.py", "--task", task,
            "--model", zh_base if zh else budget.en_teacher, *d,
            "--output_dir", str(runs / f"teacher-{task}"),
            "--epochs", str(budget.teacher_epochs[task]), *per_epoch,
            "--lr", budget.teacher_lr[zh], "--max_length", "128" if zh else str(budget.en_length),
            "--batch_size", "32"], "metrics.json", zh_needs if zh else []))
    english_blocks = ([] if budget.preset == "mini"  # the mini preset's 64 positions
                      else ["--seq_length", str(budget.en_length)])
    jobs.append(Job("stage1-en", [
        "recipes/pretrain.py", "--teacher", budget.en_teacher, "--corpus", budget.en_corpus, *d,
        "--preset", budget.preset, *english_blocks, "--max_steps", str(budget.stage1_steps),
        "--batch_size", str(budget.stage1_batch), "--lr", "5e-4",
        "--output_dir", str(runs / "stage1-en"), "--checkpointing_steps", "100", *KEEP,
        "--eval_steps", "250", "--logging_steps", "10"], "stage1.json"))
    # Chinese reviews at full length (128 characters). The mini preset has 64 positions:
    # 128 are added, and 16 blocks of 128 keep 32 x 64 tokens per step
    chinese_blocks = (["--override", "max_position_embeddings=128", "--seq_length", "128",
                       "--max_steps", str(budget.stage1_steps_zh), "--batch_size", "16"]
                      if budget.preset == "mini" else
                      ["--seq_length", "128", "--max_steps", str(budget.stage1_steps_zh),
                       "--batch_size", str(budget.stage1_batch)])
    jobs.append(Job("stage1-zh", [
        "recipes/pretrain.py", "--teacher", zh_base, "--corpus", budget.zh_corpus,
        *d, "--preset", budget.preset, *chinese_blocks,
        "--lr", "5e-4", "--output_dir", str(runs / "stage1-zh"), "--checkpointing_steps", "100",
        *KEEP, "--eval_steps", "250", "--logging_steps", "10"], "stage1.json", zh_needs))
    schedule = (["--max_steps", str(budget.stage2_steps)] if budget.stage2_steps
                else ["--epochs", str(budget.stage2_epochs)])

    rows = []

    def distill(label: str, task: str, name: str, extra: list[str], stage1: str | None) -> None:
        student = (["--student", str(runs / stage1)] if stage1
                   else ["--preset", budget.preset] if budget.preset != "mini" else [])
        # Chinese reviews vary most in length (ChnSenti: median 84 characters, a third at 128
        # or more): batches of similar length average 85 tokens instead of 128
        length = ["--max_length", "128", "--group_by_length"] if task in CHINESE else []
        jobs.append(Job(name, [
            "recipes/distill.py", "--task", task, "--teacher", str(runs / f"teacher-{task}"),
            *student, *d, "--output_dir", str(runs / name), *length,
            "--n_iter", str(budget.n_iter), *schedule,
            "--eval_steps", str(budget.eval_steps), "--checkpointing_steps",
            str(budget.eval_steps), *KEEP, "--logging_steps", "10", "--batch_size", "32", *extra],
            "metrics.json", [f"teacher-{task}", *([stage1] if stage1 else [])]))
        evaluation = f"eval-{name.removeprefix('stage2-')}"
        jobs.append(Job(evaluation, [
            "recipes/evaluate.py", "--model", str(runs / name), "--task", task,
            "--split", "dev", *d, "--teacher", str(runs / f"teacher-{task}"),
            "--output_json", str(runs / evaluation / "eval.json")], "eval.json",
            [name, f"teacher-{task}"], resumable=False))
        rows.append(Row(label, task, f"teacher-{task}", name, evaluation, stage1))

    for task in ENGLISH + CHINESE:
        distill(task, task, f"stage2-{task}", [], "stage1-zh" if task in CHINESE else "stage1-en")
    distill("sst2, no stage 1", "sst2", "stage2-sst2-no-stage1", [], None)
    distill("sst2, no augmentation", "sst2", "stage2-sst2-no-augment", ["--no_augment"],
            "stage1-en")
    distill("sst2, no feature loss", "sst2", "stage2-sst2-no-feature-loss", ["--w_feat", "0"],
            "stage1-en")
    for job in jobs:
        if job.resumable:  # the training jobs
            job.launcher = tuple(launcher)
            teaches = job.argv[0] in ("recipes/pretrain_teacher.py", "recipes/finetune_teacher.py")
            autocast = (budget.teacher_precision if teaches
                        else budget.stage1_precision if job.argv[0] == "recipes/pretrain.py"
                        else budget.stage2_precision)
            if autocast:
                job.argv += ["--mixed_precision", autocast]
    return jobs, rows


def needed(jobs: list[Job], names: list[str]) -> set[str]:
    """``names`` and every job they need, transitively."""
    by_name = {j.name: j for j in jobs}
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(by_name[name].needs)
    return wanted


def select(jobs: list[Job], rows: list[Row], only: list[str] | None) -> list[Job]:
    """The jobs the chosen rows need (all rows when ``only`` is empty), in plan order."""
    if not only:
        return jobs
    known = {r.label for r in rows}
    unknown = sorted(set(only) - known)
    if unknown:
        raise SystemExit(f"--only: unknown rows {unknown}; rows are {sorted(known)}")
    wanted = needed(jobs, [r.evaluation for r in rows if r.label in only])
    return [j for j in jobs if j.name in wanted]


def job_env() -> dict[str, str]:
    """The recipes' environment: unbuffered logs, and glibc's malloc asked to back its large
    blocks with transparent huge pages (``glibc.malloc.hugetlb=1``, glibc >= 2.35; ignored
    elsewhere). Every fresh activation tensor of a CPU training step is a new mapping whose
    4 KiB page faults cost more than the copy itself: a `mini` step took 3.43 s without it,
    3.12 s with it (bench/test_bench_train_step.py, one thread). A value already set wins."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    env.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def take_lock(out: Path) -> Path:
    """``out/job.lock`` holding this process's id; RuntimeError if a live process (another
    runner, or a recipe a killed runner left behind) holds it. A dead holder's lock is taken
    over. Two processes training into one folder would interleave their checkpoints."""
    lock = out / "job.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holders = [int(p) for p in lock.read_text().split() if p.isdigit()]
            live = [p for p in holders if _alive(p)]
            if live:
                raise RuntimeError(f"{out.name} is being run by process {live[0]} "
                                   f"({lock}); wait for it or stop it") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return lock
    raise RuntimeError(f"could not take {lock}")


class Children:
    """The recipes this runner has running. A stop signal to the runner is passed on to them
    (each checkpoints its step and exits) and no new one starts afterwards."""

    def __init__(self) -> None:
        self.live: set[subprocess.Popen] = set()
        self.stopping: list[int] = []  # the signals received

    def forward(self, signum: int) -> None:
        self.stopping.append(signum)
        for child in list(self.live):
            if child.poll() is None:
                child.send_signal(signum)

    def started(self, child: subprocess.Popen) -> None:
        self.live.add(child)
        if self.stopping:  # the signal came between the job's start and its process's
            child.send_signal(self.stopping[0])


def run_job(job: Job, runs: Path, log, children: Children | None = None) -> None:
    """Run (or resume) one job in a subprocess, adding its wall time to ``job.json``."""
    out = job.out(runs)
    out.mkdir(parents=True, exist_ok=True)
    lock = take_lock(out)
    try:
        _run_locked(job, out, log, lock, children or Children())
    finally:
        lock.unlink(missing_ok=True)


def close_killed_invocation(record: dict, log: Path) -> None:
    """Give the last invocation, if its runner was killed (``wall_s`` None), the time until
    the log's last write. Done before a new invocation appends to the log, which would
    otherwise move that write, and the killed run's wall time with it, to the new run."""
    if not record["invocations"] or record["invocations"][-1]["wall_s"] is not None:
        return
    last = record["invocations"][-1]
    start = last.get("started_unix")
    last["wall_s"] = (round(max(0.0, log.stat().st_mtime - start), 1)
                      if start and log.exists() else 0.0)
    last["closed_from_log"] = True


def _run_locked(job: Job, out: Path, log, lock: Path, children: Children) -> None:
    record_path = out / "job.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record.setdefault("invocations", [])
    record["command"] = job.command()
    argv = job.process_argv()
    if job.resumable:
        argv += ["--resume_from_checkpoint", "latest"]
    log(f"[{job.name}] {job.command()}")
    close_killed_invocation(record, out / "job.log")
    # recorded before the start, so a runner that is killed still leaves the invocation
    # (closed by the next runner, or read from the log's last write, see job_summary)
    start = time.time()
    record["invocations"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                           time.localtime(start)),
                                  "started_unix": round(start), "wall_s": None, "rc": None})
    atomic_write_text(record_path, json.dumps(record, indent=2))
    with open(out / "job.log", "a") as stream:
        child = subprocess.Popen(argv, stdout=stream, stderr=subprocess.STDOUT, env=job_env())
        with open(lock, "a") as handle:  # the recipe outlives a runner killed alone
            handle.write(f"{child.pid}\n")
        children.started(child)
        rc = child.wait()
        children.live.discard(child)
    record["invocations"][-1] |= {"wall_s": round(time.time() - start, 1), "rc": rc}
    atomic_write_text(record_path, json.dumps(record, indent=2))
    if rc != 0 and rc - 128 in children.stopping:
        raise RuntimeError(f"job {job.name} stopped by {signal.Signals(rc - 128).name} after "
                           f"checkpointing; the same command resumes it")
    if rc != 0:
        raise RuntimeError(f"job {job.name} exited with {rc}; its log: {out / 'job.log'}")
    if not (out / job.final).exists():
        raise RuntimeError(f"job {job.name} exited 0 but wrote no {out / job.final}")


def say(message: str) -> None:
    """One whole line per message, also when jobs finish at the same moment in two threads."""
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def run_all(jobs: list[Job], runs: Path, parallel: int, log=say,
            children: Children | None = None) -> list[str]:
    """Run the jobs that are not done, ``parallel`` at a time, each after the jobs it needs,
    evaluations first, then those already started (a ``job.json``); returns the names of
    those that failed or could not start because a need failed. After a stop signal
    (``children.forward``) no job starts; the running ones are waited for."""
    children = children or Children()
    done = {j.name for j in jobs if (j.out(runs) / j.final).exists()}
    failed: list[str] = []
    # evaluations (minutes) first, so a finished student's row fills at once; then started
    # jobs, whose checkpoints are work already paid for; then new ones, in plan order
    pending = sorted((j for j in jobs if j.name not in done),
                     key=lambda j: (j.resumable, not (j.out(runs) / "job.json").exists()))
    running: dict[Future, Job] = {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while pending or running:
            # after a stop signal nothing new starts; ``select`` put every need in ``jobs``
            for job in [] if children.stopping else list(pending):
                if any(n in failed for n in job.needs):
                    failed.append(job.name)
                    pending.remove(job)
                elif all(n in done for n in job.needs) and len(running) < parallel:
                    running[pool.submit(run_job, job, runs, log, children)] = job
                    pending.remove(job)
            if not running:  # stopped, or what is left waits for a job outside ``jobs``
                if not children.stopping:
                    failed += [j.name for j in pending]
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                try:
                    future.result()
                    done.add(job.name)
                    log(f"[{job.name}] done")
                except Exception as err:  # the message names the job and its log
                    failed.append(job.name)
                    log(f"[{job.name}] FAILED: {err}")
    return failed


def job_summary(job: Job, runs: Path) -> dict:
    """Command, state, wall time over all invocations and median logged s/step of a job."""
    out = job.out(runs)
    record = json.loads((out / "job.json").read_text()) if (out / "job.json").exists() else {}
    rates = [rate for csv in out.glob("logs/*/metrics.csv")
             for rate in read_csv_metrics(csv, "s_per_step").values()]
    log = out / "job.log"
    last_write = log.stat().st_mtime if log.exists() else None

    def wall(invocation: dict, next_start: float | None) -> float:
        if invocation["wall_s"] is not None:
            return invocation["wall_s"]
        # still running, or its runner was killed: until the log's last write, and never
        # past the start of the invocation after it
        start = invocation.get("started_unix")
        ends = [t for t in (last_write, next_start) if t is not None]
        return max(0.0, min(ends) - start) if start and ends else 0.0

    invocations = record.get("invocations", [])
    next_starts = [i.get("started_unix") for i in invocations[1:]] + [None]
    total = sum(wall(i, s) for i, s in zip(invocations, next_starts, strict=False))
    return {"command": job.command(), "done": (out / job.final).exists(),
            "wall_s": round(total, 1),
            "invocations": len(invocations),
            "s_per_step": round(statistics.median(rates), 3) if rates
            else record.get("s_per_step"),
            **({"note": record["note"]} if "note" in record else {})}


def teacher_dev_accuracy(folder: Path) -> float | None:
    """A fine-tuned teacher's best dev accuracy (percent) from its metrics.json, shown until
    the evaluation job has measured it beside its student."""
    path = folder / "metrics.json"
    if not path.exists():
        return None
    accuracy = json.loads(path.read_text()).get("dev", {}).get("accuracy")
    return None if accuracy is None else 100 * accuracy


def precision(command: str) -> str:
    """The autocast a training command ran under: its ``--mixed_precision`` or fp32."""
    args = shlex.split(command)
    if "--mixed_precision" in args[:-1]:
        value = args[args.index("--mixed_precision") + 1]
        return "fp32" if value == "no" else value
    return "fp32"


def student_precision(row: Row, runs: dict[str, dict]) -> str:
    """The autocast ``row``'s student trained under, read from the commands in ``runs`` (job
    name -> summary): one name when stage 1 and stage 2 agree or there was no stage 1, else
    both, e.g. ``bf16 stage 1, fp32 stage 2``."""
    stage2 = precision(runs[row.student]["command"])
    if row.stage1 is None or row.stage1 not in runs:
        return stage2
    stage1 = precision(runs[row.stage1]["command"])
    return stage2 if stage1 == stage2 else f"{stage1} stage 1, {stage2} stage 2"


def collect(budget_name: str, jobs: list[Job], rows: list[Row], runs: Path,
            previous: dict | None = None) -> dict:
    """The table as JSON: per row the teacher's and student's dev accuracy and energy (from
    the evaluation job; None until it has run) and per job its summary.

    ``previous`` (the JSON an earlier collect wrote, same budget) keeps what the runs folder
    no longer holds: a finished job whose folder is gone (a lost machine, a cleaned disk)
    keeps its recorded command and times, and a measured row whose evaluation folder is
    gone keeps its numbers, both marked ``carried``. A job or row run again here replaces
    its carried record."""
    previous = previous or {}
    if previous and previous.get("budget") != budget_name:
        raise SystemExit(f"the previous JSON is for budget {previous.get('budget')!r}, "
                         f"not {budget_name!r}: write this budget's table to another file")
    old_jobs = previous.get("jobs", {})
    old_rows = {r["row"]: r for r in previous.get("rows", [])}
    summaries = {}
    for job in jobs:
        old = old_jobs.get(job.name, {})
        if not job.out(runs).exists() and old.get("done"):
            summaries[job.name] = {**old, "carried": True}
        else:
            summaries[job.name] = job_summary(job, runs)
    table = []
    for row in rows:
        path = runs / row.evaluation / "eval.json"
        old = old_rows.get(row.label, {})
        if not path.exists() and old.get("student_accuracy") is not None:
            # measured before, not (yet) again here: the old numbers with the runs that made
            # them (teacher, stage 1, student, evaluation), which new runs must not overwrite
            made_by = old.get("runs") or {name: old_jobs[name]
                                          for name in needed(jobs, [row.evaluation])
                                          if name in old_jobs}
            table.append({**old, "carried": True, "runs": made_by,
                          "precision": student_precision(row, made_by)})
            continue
        ev = json.loads(path.read_text()) if path.exists() else {}
        student = ev.get("accuracy")
        teacher = ev.get("teacher_accuracy", teacher_dev_accuracy(runs / row.teacher))
        table.append({
            "row": row.label, "task": row.task, "teacher_job": row.teacher,
            "student_job": row.student, "evaluation_job": row.evaluation,
            "precision": student_precision(row, summaries),
            "teacher_accuracy": teacher, "student_accuracy": student,
            "gap": None if teacher is None or student is None else student - teacher,
            "teacher_energy_mj": ev.get("teacher_energy_mj"),
            "student_energy_mj": ev.get("energy_mj"),
            "energy_reduction": ev.get("energy_reduction")})
    return {"budget": budget_name, "runs_dir": str(runs), "rows": table, "jobs": summaries}


def _num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "pending" if value is None or not math.isfinite(value) else \
        f"{value:.{digits}f}{suffix}"


def render_table(result: dict) -> str:
    """Markdown: the accuracy/energy table, then every job with its command and timing."""
    lines = ["| row (dev) | teacher acc. | SpikeBERT acc. | gap | teacher mJ | SpikeBERT mJ | "
             "energy reduction | stage-2 wall | stage-2 s/step | precision |", "|---" * 10 + "|"]
    for r in result["rows"]:
        job = r.get("runs", result["jobs"]).get(r["student_job"], {})
        wall = job.get("wall_s")
        # a job still running (or stopped mid-way) shows its time so far, marked as such
        wall_text = _num(wall / 60 if wall else None, 0,
                         " min" if job.get("done") else " min so far")
        lines.append(
            f"| {r['row']} | {_num(r['teacher_accuracy'])} | {_num(r['student_accuracy'])} | "
            f"{_num(r['gap'], suffix='')} | {_num(r['teacher_energy_mj'], 3)} | "
            f"{_num(r['student_energy_mj'], 3)} | {_num(r['energy_reduction'], 1, '%')} | "
            f"{wall_text} | {_num(job.get('s_per_step'))} | {r['precision']} |")
    lines += ["", "| job | done | wall | s/step | command |", "|---|---|---|---|---|"]
    lines += [_job_line(name, job, job.get("carried", False))
              for name, job in result["jobs"].items()]
    earlier: dict[tuple[str, str], list[str]] = {}  # carried rows' runs that were redone
    for r in result["rows"]:
        for name, run in r.get("runs", {}).items():
            now = result["jobs"][name]
            if (now["command"], now["wall_s"]) != (run["command"], run["wall_s"]):
                earlier.setdefault((name, run["command"]), []).append(r["row"])
    for (name, _), labels in earlier.items():
        run = next(r["runs"][name] for r in result["rows"] if r["row"] == labels[0])
        lines.append(_job_line(f"{name} (the run behind rows {'; '.join(labels)})", run, True))
    return "\n".join(lines)


def _job_line(label: str, job: dict, kept: bool) -> str:
    """One line of the job table; ``kept``: the record comes from the JSON alone."""
    wall = f"{job['wall_s'] / 60:.0f} min" if job["wall_s"] else "-"
    notes = [job["note"]] if job.get("note") else []
    if kept:
        notes.append("kept from the JSON: its run folder is gone")
    note = f" ({'; '.join(notes)})" if notes else ""
    # a finished job with no training steps (an evaluation) has no rate to wait for
    rate = "-" if job["done"] and job["s_per_step"] is None else _num(job["s_per_step"])
    return (f"| {label} | {'yes' if job['done'] else 'no'} | {wall} | {rate} | "
            f"`{job['command']}`{note} |")


def write_readme(readme: Path, table: str) -> None:
    """Replace the text between the README's results-table markers with ``table``."""
    text = readme.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise SystemExit(f"{readme} has no {TABLE_BEGIN} ... {TABLE_END} block to replace")
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    atomic_write_text(readme, f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--data_dir", default=os.environ.get("SPIKEBERT_DATA", "../shared/data"))
    parser.add_argument("--runs_dir", default="outputs/table")
    parser.add_argument("--output_json", required=True)
    parser.add_argument("--only", nargs="*", help="rows (or tasks) to run; default all")
    parser.add_argument("--parallel", type=int, default=1, help="jobs at a time")
    parser.add_argument("--launcher", default="python", help="how training recipes start, "
                        "e.g. 'accelerate launch' (multi-GPU, FSDP: your accelerate config)")
    parser.add_argument("--table_only", action="store_true",
                        help="run nothing: collect what the runs folder holds")
    parser.add_argument("--write_readme", help="README whose results-table block to replace")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error(f"--parallel must be >= 1, got {args.parallel}")
    runs = Path(args.runs_dir)  # as given: the commands in the table show it
    jobs, rows = plan(BUDGETS[args.budget], args.data_dir, runs, tuple(shlex.split(args.launcher)))
    children = Children()
    with stop_signals(on_signal=children.forward):
        failed = [] if args.table_only else run_all(select(jobs, rows, args.only), runs,
                                                    args.parallel, children=children)
    out = Path(args.output_json)
    previous = json.loads(out.read_text()) if out.exists() else None
    result = collect(args.budget, jobs, rows, runs, previous)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))
    table = render_table(result)
    if args.write_readme:
        write_readme(Path(args.write_readme), table)
    print(table)
    if children.stopping:
        say(f"stopped by {signal.Signals(children.stopping[0]).name}: the running jobs saved "
            f"a checkpoint; the same command resumes them")
        raise SystemExit(128 + children.stopping[0])
    if failed:
        raise SystemExit(f"failed or blocked: {failed}")
    return result


if __name__ == "__main__":
    main()
