"""The benchmark harness shared by ``bench/test_bench_*.py``: timing, peak memory, the
environment record, the JSON results file and the peer providers.

Runs with or without pytest-benchmark: :class:`ShimBenchmark` implements the part of its
fixture the benchmarks use (``pedantic``, ``group``, ``extra_info``) with a plain timer, so a
machine with only torch, triton, numpy and pytest writes the same JSON.

Peak memory (``peak_bytes``) is defined the same way on both devices: the most tensor memory
one call has allocated at any moment, above what was already live when it started (inputs,
parameters, optimizer state). CUDA: ``torch.cuda.max_memory_allocated()`` minus
``memory_allocated()`` before the call. CPU: the same figure from the allocation and free
events of the PyTorch profiler (``profile_memory=True``), which sees every tensor the CPU
allocator hands out, including those of compiled code and of autograd; it does not see
memory outside tensors (Python objects, the allocator's own caching), so it is not RSS.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.metadata
import inspect
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SCHEMA = 1
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


# ------------------------------------------------------------------------------ environment


def dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _git_commit() -> dict[str, Any]:
    """HEAD and whether tracked files differ from it; BENCH_GIT_COMMIT overrides (a copy of
    the tree without .git, as on a lent GPU machine)."""
    if os.environ.get("BENCH_GIT_COMMIT"):
        return {"commit": os.environ["BENCH_GIT_COMMIT"], "dirty": None}
    try:
        run = lambda *args: subprocess.run(
            ["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True, timeout=10,
            check=True).stdout.strip()
        return {"commit": run("rev-parse", "HEAD"),
                "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def environment() -> dict[str, Any]:
    """Machine, library versions and git commit, recorded once per run."""
    import spike_kernels

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": torch.version.cuda, "spike_kernels": spike_kernels.__version__}
    for dist in ("triton", "numpy", "spikingjelly", "snntorch", "transformers", "pytest",
                 "pytest-benchmark"):
        versions[dist] = dist_version(dist)
    cpu = _cpu_model()
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else None
    return {
        "device": DEVICE,
        "machine": gpu or cpu,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
        "versions": versions,
        "git": _git_commit(),
    }


def slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|nvidia|processor|cpu", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40] or "machine"


# ------------------------------------------------------------------------------ timing


def synchronize(device: str = DEVICE) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Policy:
    """How long to time one benchmark: ``warmup`` untimed calls after the first (which may
    compile), then enough rounds for ``max_time`` seconds, within [min_rounds, max_rounds]."""

    warmup: int
    min_rounds: int
    max_rounds: int
    max_time: float


POLICY = {
    "cpu": Policy(warmup=0, min_rounds=3, max_rounds=30, max_time=1.0),
    "cuda": Policy(warmup=2, min_rounds=10, max_rounds=100, max_time=0.3),
}


class ShimBenchmark:
    """The subset of pytest-benchmark's ``benchmark`` fixture the benchmarks use, for machines
    without pytest-benchmark (or with ``--benchmark-disable``): a ``perf_counter`` timer."""

    def __init__(self) -> None:
        self.group: str | None = None
        self.extra_info: dict[str, Any] = {}
        self.times: list[float] = []

    def pedantic(self, target, args=(), kwargs=None, setup=None, rounds=1, warmup_rounds=0,
                 iterations=1):
        kwargs = kwargs or {}
        result = None
        for i in range(warmup_rounds + rounds):
            if setup is not None:
                setup()
            start = time.perf_counter()
            result = target(*args, **kwargs)
            if i >= warmup_rounds:
                self.times.append(time.perf_counter() - start)
        return result


def timing_stats(benchmark: Any) -> dict[str, float] | None:
    """Seconds per call (median, min, mean, stddev) and rounds from either fixture."""
    if isinstance(benchmark, ShimBenchmark):
        times = benchmark.times
        if not times:
            return None
        return {"median": statistics.median(times), "min": min(times),
                "mean": statistics.fmean(times),
                "stddev": statistics.stdev(times) if len(times) > 1 else 0.0,
                "rounds": len(times)}
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is None:
        return None
    return {"median": stats.median, "min": stats.min, "mean": stats.mean,
            "stddev": stats.stddev, "rounds": stats.rounds}


def time_call(benchmark: Any, fn: Callable[[], Any], setup: Callable[[], Any] | None = None,
              *, device: str = DEVICE, policy: Policy | None = None) -> dict[str, float]:
    """Time ``fn`` (``setup`` before every call, untimed) under ``benchmark.pedantic``.

    The first call (which compiles, autotunes, fills caches) is timed on its own as
    ``first_call``; a second call sizes the number of rounds. On CUDA every timed call ends
    with a synchronize.
    """
    policy = policy or POLICY[device]

    def prepare():
        if setup is not None:
            setup()
        synchronize(device)

    def target():
        fn()
        synchronize(device)

    prepare()
    start = time.perf_counter()
    target()
    first = time.perf_counter() - start
    prepare()
    start = time.perf_counter()
    target()
    probe = time.perf_counter() - start
    rounds = min(policy.max_rounds, max(policy.min_rounds, math.ceil(policy.max_time / probe)))
    benchmark.pedantic(target, setup=prepare, rounds=rounds, warmup_rounds=policy.warmup)
    stats = timing_stats(benchmark)
    if stats is None:  # pytest-benchmark present but disabled: time with the shim instead
        shim = ShimBenchmark()
        shim.pedantic(target, setup=prepare, rounds=rounds, warmup_rounds=policy.warmup)
        stats = timing_stats(shim)
    assert stats is not None
    stats["first_call"] = first
    return stats


# ------------------------------------------------------------------------------ peak memory


def _cpu_peak(fn: Callable[[], Any]) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and str(event.extra_fields.device) == "cpu":
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def peak_memory(fn: Callable[[], Any], setup: Callable[[], Any] | None = None,
                device: str = DEVICE) -> tuple[int | None, str]:
    """``(peak_bytes, method)`` of one call of ``fn`` (see the module docstring)."""
    if setup is not None:
        setup()
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, "cuda.max_memory_allocated"
    try:
        return _cpu_peak(fn), "torch.profiler allocation events"
    except Exception as err:  # a private profiler API that moved: say so, don't guess
        return None, f"unavailable ({type(err).__name__}: {err})"


def release_memory() -> None:
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def copy_bandwidth(device: str = DEVICE) -> float:
    """GB/s of a device-to-device tensor copy (bytes read + bytes written per second), the
    best of several: the bandwidth a memory-bound kernel can hope for on this machine."""
    numel = (1 << 28) if device == "cuda" else (1 << 26)  # 1 GiB / 256 MiB of fp32
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(20 if device == "cuda" else 5):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best / 1e9


def lif_floor_bytes(dtype: torch.dtype, mode: str) -> int:
    """docs/DESIGN.md §6 lower bound on bytes per neuron and time step, for inputs of ``dtype``:
    forward reads x and writes int8 spikes (e + 1); forward+backward at its cheapest
    recomputes H in backward: + read x, read grad_s, write grad_x (4e + 1; 9 B in bf16)."""
    e = torch.empty((), dtype=dtype).element_size()
    return e + 1 if mode == "fwd" else 4 * e + 1


# ------------------------------------------------------------------------------ results file


def _result_key(r: dict[str, Any]) -> str:
    params = ",".join(f"{k}={v}" for k, v in r["params"].items())
    return f"{r['group']}|{r['mode']}|{params}|{r['dtype']}"


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Per case, each provider against the case's baseline (ours): ``speedup_of_ours`` =
    provider time / ours (how many times faster ours is), ``memory_ratio`` = provider peak /
    ours (how many times less memory ours needs)."""
    base: dict[str, dict[str, Any]] = {}
    for r in results:
        r["key"] = _result_key(r)
        if r["provider"] == r["baseline"]:
            base[r["key"]] = r
    for r in results:
        b = base.get(r["key"])
        r["speedup_of_ours"] = r["memory_ratio"] = None
        if b is None:
            continue
        r["speedup_of_ours"] = r["time_s"]["median"] / b["time_s"]["median"]
        if r.get("peak_bytes") and b.get("peak_bytes"):
            r["memory_ratio"] = r["peak_bytes"] / b["peak_bytes"]


class Recorder:
    """Collects results and (re)writes ``<dir>/<run id>.json`` and ``<dir>/latest-<cpu|gpu>
    .json`` after every one, so a run cut short by a timeout still leaves its JSON. Runs that
    share ``BENCH_RUN_ID`` (gpu_check.sh's stages) merge into one file."""

    def __init__(self, mode: str, directory: Path | None = None, run_id: str | None = None):
        self.env = environment()
        self.directory = Path(directory or os.environ.get("BENCH_RESULTS_DIR") or RESULTS_DIR)
        now = datetime.now(timezone.utc)
        self.created = now.isoformat(timespec="seconds")
        self.run_id = run_id or os.environ.get("BENCH_RUN_ID") or (
            f"{now:%Y%m%dT%H%M%SZ}-{self.env['device']}-{slug(self.env['machine'])}")
        self.mode = mode
        self.results: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.copy_gbs: float | None = None
        self.written: Path | None = None
        path = self.path
        if path.exists():  # an earlier stage of the same run
            old = json.loads(path.read_text())
            self.results, self.skipped = old.get("results", []), old.get("skipped", [])
            self.created = old.get("created", self.created)
            self.copy_gbs = old.get("copy_gbs")

    @property
    def path(self) -> Path:
        return self.directory / f"{self.run_id}.json"

    def copy_bandwidth(self) -> float:
        if self.copy_gbs is None:
            self.copy_gbs = copy_bandwidth()
        return self.copy_gbs

    def add(self, result: dict[str, Any]) -> None:
        git = self.env["git"]
        result.setdefault("machine", self.env["machine"])
        result.setdefault("commit", git["commit"] + ("+dirty" if git["dirty"] else ""))
        key = _result_key(result), result["provider"]
        self.results = [r for r in self.results if (_result_key(r), r["provider"]) != key]
        self.results.append(result)
        self.write()

    def skip(self, nodeid: str, reason: str) -> None:
        self.skipped = [s for s in self.skipped if s["test"] != nodeid]
        self.skipped.append({"test": nodeid, "reason": reason})

    def document(self) -> dict[str, Any]:
        add_ratios(self.results)
        return {"schema": SCHEMA, "run_id": self.run_id, "created": self.created,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "matrix": self.mode, "copy_gbs": self.copy_gbs, "env": self.env,
                "peak_memory_method": PEAK_DOC, "results": self.results,
                "skipped": self.skipped}

    def write(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.document(), indent=1, sort_keys=False) + "\n"
        self.path.write_text(text)
        kind = "gpu" if self.env["device"] == "cuda" else "cpu"
        (self.directory / f"latest-{kind}.json").write_text(text)
        self.written = self.path
        return self.path


PEAK_DOC = ("peak_bytes: the most tensor memory one call allocated at any moment above what "
            "was live before it (inputs, parameters, optimizer state); CUDA: "
            "max_memory_allocated - memory_allocated before; CPU: running sum of the PyTorch "
            "profiler's allocation/free events (profile_memory=True). peak_total_bytes (training "
            "step) adds parameters and optimizer state.")


# ------------------------------------------------------------------------------ providers


def skip(reason: str):
    import pytest

    pytest.skip(reason)


def fresh_compile(fn: Callable, tag: str, **kwargs) -> Callable:
    """``torch.compile`` of a copy of ``fn`` with its own code object, so every case gets its
    own TorchDynamo cache instead of exhausting ``fn``'s recompile limit (after which Dynamo
    silently runs eagerly)."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{slug(tag).replace('-', '_')}")
    copy = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                              fn.__closure__)
    return torch.compile(copy, **kwargs)


def import_or_skip(module: str, peer: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        skip(f"{peer} is not installed ({err}); pip install {peer}")


# SpikingJelly: provider names -> its CUDA implementations. SpikingJelly 2.x picks one per
# process from SJ_LIF_CUDA_IMPLEMENTATION (auto = cuda, triton, torch; "cuda" is a native
# extension the PyPI wheel does not build); older releases take LIFNode(backend=...).
SJ_IMPLEMENTATIONS = {"spikingjelly-cuda": "cuda", "spikingjelly-triton": "triton",
                      "spikingjelly-torch": "torch", "spikingjelly": None}
SJ_OLD_BACKENDS = {"cuda": "cupy", "triton": "triton", "torch": "torch", None: "torch"}


def spikingjelly_providers(device: str = DEVICE) -> list[str]:
    if device == "cuda":
        return ["spikingjelly-triton", "spikingjelly-cuda", "spikingjelly-torch"]
    return ["spikingjelly"]


def _sj_selection():
    try:
        from spikingjelly._ops import lif as sj_lif_ops
    except ImportError:
        return None
    sel = getattr(sj_lif_ops, "_selection", None)
    needed = ("_requested", "_selections", "_compiled_selections", "_select")
    return sel if sel is not None and all(hasattr(sel, a) for a in needed) else None


def _sj_node(provider: str, *, tau: float, v_threshold: float, v_reset: float | None,
             detach_reset: bool, surrogate: str, alpha: float,
             decay_input: bool = True) -> torch.nn.Module:
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate

    names = {"sigmoid": "Sigmoid", "atan": "ATan"}
    kwargs: dict[str, Any] = dict(
        tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
        detach_reset=detach_reset, step_mode="m",
        surrogate_function=getattr(sj_surrogate, names[surrogate])(alpha=alpha))
    if "backend" in inspect.signature(neuron.LIFNode).parameters:
        kwargs["backend"] = SJ_OLD_BACKENDS[SJ_IMPLEMENTATIONS.get(provider)]
    return neuron.LIFNode(**kwargs)


@contextlib.contextmanager
def spikingjelly_neuron(provider: str, *, dtype: torch.dtype = torch.float32,
                        device: str = DEVICE,
                        **neuron: Any) -> Iterator[tuple[torch.nn.Module, str]]:
    """SpikingJelly's multi-step ``LIFNode`` with our neuron's parameters (``neuron``), run by
    the CUDA implementation ``provider`` names while the context is open, and a description
    of the path it takes. Skips the test, with the reason, where that path does not exist.

    LIFNode keeps its state in the input's dtype, and SpikingJelly 2.x runs half-precision
    state through its PyTorch reference whatever implementation is chosen (and raises when
    one is forced) unless the node is prepared for "neuron precision", which needs its Triton
    implementation: so in bf16/fp16 ``spikingjelly-triton`` gets that preparation (half
    storage, fp32 arithmetic: its best half-precision path), ``spikingjelly-torch`` runs the
    reference, and ``spikingjelly-cuda`` is skipped (it would be the reference again).
    """
    import_or_skip("spikingjelly.activation_based.neuron", "spikingjelly")
    head = f"spikingjelly {dist_version('spikingjelly')} LIFNode(step_mode='m')"
    wanted = SJ_IMPLEMENTATIONS[provider]
    node = _sj_node(provider, **neuron).to(device)
    sel = _sj_selection()
    if device != "cuda":
        yield node, f"{head}, CPU path"
        return
    if sel is None:  # an older release: LIFNode(backend=...)
        yield node, f"{head}, backend={SJ_OLD_BACKENDS[wanted]!r}"
        return
    half = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype)
    if half and wanted != "triton":
        if wanted == "cuda":
            skip(f"SpikingJelly runs {half} LIFNode state through its PyTorch reference "
                 f"whatever the implementation (that is spikingjelly-torch)")
        yield node, f"{head}, {half} state: its PyTorch reference"
        return
    saved = sel._requested
    sel._requested = wanted or "auto"
    sel._selections.clear()
    sel._compiled_selections.clear()
    try:
        try:
            chosen = sel._select(torch.cuda.current_device()).name
        except Exception as err:
            skip(f"SpikingJelly's {wanted} LIF implementation is unavailable here: {err}")
        if wanted is not None and chosen != wanted:
            skip(f"SpikingJelly chose {chosen!r} instead of {wanted!r}")
        detail = f"{head}, CUDA implementation {chosen}"
        if half:
            try:
                from spikingjelly.activation_based.precision import (
                    PrecisionConfig,
                    prepare_model_for_precision,
                )

                prepare_model_for_precision(
                    node, device, PrecisionConfig(mode=half, neuron_storage=half))
            except Exception as err:
                skip(f"SpikingJelly's Triton LIF cannot run {half} state here "
                     f"({type(err).__name__}: {err})")
            detail += f", neuron precision storage={half} compute=fp32"
        yield node, detail
    finally:
        sel._requested = saved
        sel._selections.clear()
        sel._compiled_selections.clear()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): a shared machine's timings
    are only comparable within one run, and this says how busy it was."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def thread_cpu_time(fn: Callable[[], Any], calls: int = 3) -> float:
    """The least CPU time of the calling thread over ``calls`` calls of ``fn`` (seconds):
    on a shared, oversubscribed CPU the wall time mostly measures waiting for a core, the
    thread's CPU time measures the work (one thread: ``torch.set_num_threads(1)``)."""
    best = math.inf
    for _ in range(calls):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def snntorch_leaky(*, tau: float, v_threshold: float, alpha: float) -> torch.nn.Module:
    """snnTorch's ``Leaky`` closest to the LIF benchmarked: beta = 1 - 1/tau, reset to zero,
    sigmoid surrogate of the same slope (snnTorch's charge does not divide the input by tau,
    and it resets one step late; the work per step is the same)."""
    snn = import_or_skip("snntorch", "snntorch")
    from snntorch import surrogate as snn_surrogate

    return snn.Leaky(beta=1.0 - 1.0 / tau, threshold=v_threshold, reset_mechanism="zero",
                     spike_grad=snn_surrogate.sigmoid(slope=alpha))


def snntorch_time_loop(leaky: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Multi-step snnTorch: its single-step neuron in a Python loop over ``x``'s time dim."""
    mem = torch.zeros_like(x[0])
    spikes = []
    for t in range(x.shape[0]):
        s, mem = leaky(x[t], mem)
        spikes.append(s)
    return torch.stack(spikes)


def pow2(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)


# ------------------------------------------------------------------------------ one benchmark


class Bench:
    """What a benchmark test gets from the ``bench`` fixture: :meth:`run` times a call, measures
    its peak memory, fills pytest-benchmark's ``group``/``extra_info`` and records the result."""

    def __init__(self, timer_fixture: Callable[[], Any], recorder: Recorder, nodeid: str):
        self._timer_fixture = timer_fixture
        self._fixture: Any = None
        self.recorder = recorder
        self.nodeid = nodeid
        self.device = DEVICE

    @property
    def fixture(self) -> Any:
        """pytest-benchmark's fixture (or the shim), created on first use."""
        if self._fixture is None:
            self._fixture = self._timer_fixture()
        return self._fixture

    def copy_gbs(self) -> float:
        return self.recorder.copy_bandwidth()

    def run(
        self,
        fn: Callable[[], Any],
        *,
        group: str,
        mode: str,
        params: dict[str, Any],
        dtype: str,
        provider: str,
        baseline: str,
        detail: str,
        shape: list[int] | None = None,
        setup: Callable[[], Any] | None = None,
        metrics: Callable[[dict[str, float]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Time ``fn`` and record it; ``metrics(time_stats)`` adds derived numbers (GB/s, ...)."""
        shown = " ".join(f"{k}={pow2(v) if k == 'N' else v}" for k, v in params.items())
        self.fixture.group = f"{group} {mode} {shown} {dtype}"
        stats = time_call(self.fixture, fn, setup, device=self.device)
        peak, method = peak_memory(fn, setup, self.device)
        result: dict[str, Any] = {
            "group": group, "mode": mode, "params": params, "shape": shape, "dtype": dtype,
            "provider": provider, "baseline": baseline, "detail": detail, "device": self.device,
            "time_s": stats, "peak_bytes": peak, "peak_method": method,
            "versions": {k: self.recorder.env["versions"].get(k) for k in (
                "torch", "triton", "spike_kernels", "spikingjelly", "snntorch")},
            "test": self.nodeid,
        }
        if metrics is not None:
            result.update(metrics(stats))
        self.fixture.extra_info.update(
            {k: v for k, v in result.items() if k not in ("time_s", "versions", "test")})
        self.recorder.add(result)
        return result
