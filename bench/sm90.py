"""Compile, for an H100/H200 (sm_90), every Triton kernel a call of the public ops would
launch, on a machine without a GPU, and read the machine code's statistics.

How: Triton's active driver is replaced by a stand-in whose target is
``GPUTarget("cuda", 90, 32)``, and ``JITFunction.run`` is wrapped to compile with
``warmup=True`` instead of launching. The public ops (``spike_kernels.lif``,
``spike_kernels.spiking_attention``, forward and ``.backward()``) then run on ordinary CPU
tensors: their launchers allocate, view and pass arguments exactly as on a GPU, so the
pointer alignment (divisibility by 16), integer specialisation and constexprs of every
kernel are those of a real launch. The only other change is the ops' device check
(``resolve_backend``), told to pick ``"triton"`` for CPU tensors; nothing is ever launched,
so the outputs are left uninitialised.

For each compiled kernel Triton's bundled ``ptxas -v --gpu-name=sm_90a`` (the flags Triton
itself uses) gives registers, spill stores/loads and stack; Triton's metadata gives the
shared memory; the PTX gives the width of every global load and store (128-bit accesses
are ``ld.global.v4.b32`` and the like), and ``cuobjdump -sass`` the SASS instruction count.

Runs in a process where ``TRITON_INTERPRET`` is unset when Triton is first imported (the
interpreter replaces the JIT functions). Command line::

    python bench/sm90.py [--matrix test|all] [--json OUT.json] [--filter SUBSTRING]

Works with Triton 3.6 to 3.9 (``GPUTarget``, ``driver.set_active``, ``JITFunction.run``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
STANDIN_DEVICE = "sm90-standin"  # the JIT cache key of our target; never a real device index

# H200 SXM (one SM of Hopper): the numbers the occupancy and bandwidth model use.
H200 = dict(hbm_bytes_per_s=4.8e12, sms=132, regs_per_sm=65536, smem_per_sm=228 * 1024,
            smem_per_block_max=227 * 1024, smem_reserved_per_block=1024, max_warps_per_sm=64,
            max_blocks_per_sm=32, reg_alloc_unit=8)


# --------------------------------------------------------------------------- availability


def unavailable_reason() -> str | None:
    """Why sm_90 kernels cannot be compiled here (no Triton, no CUDA backend, no ptxas), or
    None when they can."""
    try:
        import triton  # noqa: F401
        from triton.backends import backends
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except ImportError as err:
        return f"Triton is not installed or too old: {err}"
    if "nvidia" not in backends:
        return "this Triton build has no CUDA (nvidia) backend"
    ptxas = ptxas_path()
    if ptxas is None or not os.access(ptxas, os.X_OK):
        return f"Triton's bundled ptxas is missing or not executable ({ptxas})"
    return None


def _nvidia_bin(tool: str) -> str | None:
    try:
        from triton import knobs

        return getattr(knobs.nvidia, tool).path
    except Exception:  # older knobs or a tool it does not know: the bundled folder
        import triton

        path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool
        return str(path) if path.exists() else None


def ptxas_path() -> str | None:
    """The ptxas Triton itself runs for sm_90 (Triton 3.9: the CUDA 13 "ptxas-blackwell")."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            return get_ptxas(90).path
        except TypeError:  # releases whose get_ptxas takes no architecture
            return get_ptxas().path
    except Exception:
        return _nvidia_bin("ptxas")


@functools.cache
def _ptxas_major(ptxas: str) -> int:
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"release (\d+)\.", out)
    return int(found.group(1)) if found else 0


# --------------------------------------------------------------------------- the stand-in


class _StandinDriver:
    """Just enough of a Triton driver for ``JITFunction.run(..., warmup=True)``: a device
    key of its own (so no kernel cache of a real device is touched), a null stream and the
    sm_90 target."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return STANDIN_DEVICE

    def set_current_device(self, device):
        pass

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("cpu")

    @staticmethod
    def is_active():
        return False


@dataclasses.dataclass
class Launch:
    """One kernel launch the ops asked for, compiled instead of run."""

    kernel: str
    phase: str
    grid: tuple[int, ...]
    constexprs: dict
    tensors: dict  # pointer argument name -> (dtype, numel, element size, data_ptr)
    arg_names: list[str]
    compiled: object = dataclasses.field(repr=False)


def _sm90_target():
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", 90, 32)


@dataclasses.dataclass
class Recorder:
    """The launches so far; ``phase`` labels the ones that follow ("forward", "backward")."""

    launches: list[Launch] = dataclasses.field(default_factory=list)
    phase: str = "forward"
    ptxas_logs: dict[str, str] = dataclasses.field(default_factory=dict)  # by kernel hash


@contextlib.contextmanager
def _ptxas_log_printed() -> Iterator[None]:
    """Triton 3.9 prints its own ``ptxas -v`` log when asked (saves a second ptxas run);
    where it cannot, nothing is printed and :func:`ptxas_stats` runs ptxas itself."""
    from triton import knobs

    if "dump_ptxas_log" not in type(knobs.nvidia).__dict__ or not hasattr(knobs.nvidia,
                                                                            "scope"):
        yield
        return
    with knobs.nvidia.scope():
        knobs.nvidia.dump_ptxas_log = True
        yield


@contextlib.contextmanager
def sm90_launches() -> Iterator[Recorder]:
    """Within the block, every Triton kernel launch compiles for sm_90 and is recorded;
    the ops pick their Triton path for CPU tensors."""
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    # load every op module, so that each one's device check is redirected below
    import spike_kernels.ops.attention_triton
    import spike_kernels.ops.lif_triton

    if not isinstance(spike_kernels.ops.lif_triton._lif_forward_kernel, JITFunction):
        raise RuntimeError("the Triton kernels are interpreted functions here: unset "
                           "TRITON_INTERPRET before triton is first imported")
    rec = Recorder()
    original_run = JITFunction.run

    def compile_only(self, *args, **kwargs):
        kwargs["warmup"] = True  # compile, do not launch
        grid = kwargs.get("grid", ())
        log = io.StringIO()
        with contextlib.redirect_stdout(log), _ptxas_log_printed():
            compiled = original_run(self, *args, **kwargs)
        if "Used" in log.getvalue() and hasattr(compiled, "hash"):
            rec.ptxas_logs[compiled.hash] = log.getvalue()
        bound = dict(zip(self.arg_names, args, strict=False))
        bound.update({k: v for k, v in kwargs.items() if k in self.arg_names})
        constexprs = {p.name: bound.get(p.name) for p in self.params if p.is_constexpr}
        constexprs.update({k: v for k, v in kwargs.items()
                           if k not in self.arg_names and k not in ("grid", "warmup")})
        tensors = {name: (str(v.dtype).replace("torch.", ""), v.numel(), v.element_size(),
                          v.data_ptr())
                   for name, v in bound.items() if isinstance(v, torch.Tensor)}
        grid = () if callable(grid) else tuple(grid)
        rec.launches.append(Launch(self.fn.__name__, rec.phase, grid, constexprs,
                                   tensors, list(self.arg_names), compiled))
        return compiled

    from spike_kernels import backend as backend_mod

    original_resolve = backend_mod.resolve_backend

    def resolve_triton(backend, device):
        original_resolve(backend, torch.device("cuda"))  # keeps the argument validation
        return "triton"

    patched = [(m, "resolve_backend") for m in list(sys.modules.values())
               if getattr(m, "__name__", "").startswith("spike_kernels")
               and getattr(m, "resolve_backend", None) is original_resolve]
    driver.set_active(_StandinDriver(_sm90_target()))
    JITFunction.run = compile_only
    for module, name in patched:
        setattr(module, name, resolve_triton)
    try:
        yield rec
    finally:
        JITFunction.run = original_run
        for module, name in patched:
            setattr(module, name, original_resolve)
        driver.reset_active() if driver._default is not None else driver.set_active(None)


# --------------------------------------------------------------------------- the cases

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# SpikeBERT (T=4, B=32, L=128, hidden 768 = 12 heads x 64) and its mini config (4 heads, L=64)
SPIKEBERT = dict(T=4, B=32, H=12, L=128, Dh=64)
MINI = dict(T=4, B=32, H=4, L=64, Dh=64)


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of a public op (and its backward when ``mode`` is train/recompute).

    op: "lif" or "attention". mode: "infer" (no grad), "train" (saves H), "recompute".
    lif: ``shape`` is x's shape, ``kwargs`` extra lif arguments. attention: ``shape`` is
    ``(T, B, H, L, Dh)``; q, k, v are the strided ``[T, B, L, H, Dh] -> [T, B, H, L, Dh]``
    views SpikeBERT passes, with its key mask and ``out_layout="blhd"``."""

    op: str
    dtype: str
    mode: str
    shape: tuple[int, ...]
    order: str = ""
    kwargs: tuple = ()
    label: str = ""

    @property
    def id(self) -> str:
        dims = "x".join(map(str, self.shape))
        extra = "-".join(f"{k}={v}" for k, v in self.kwargs)
        parts = [self.op, self.label, self.dtype, self.mode, self.order, dims, extra]
        return "-".join(p for p in parts if p)

    @property
    def spikebert_shape(self) -> bool:
        return self.label in ("spikebert", "mini")


def _attn_shape(d: dict, head_dim: int | None = None) -> tuple[int, ...]:
    return (d["T"], d["B"], d["H"], d["L"], head_dim or d["Dh"])


def cases(matrix: str = "test") -> list[Case]:
    """The calls whose kernels must compile. ``test``: what the test suite checks;
    ``all`` adds every surrogate and reset flag of the LIF."""
    out: list[Case] = []
    modes = ("infer", "train", "recompute")
    for dtype in DTYPES:
        for mode in modes:
            # SpikeBERT's LIF inputs: [T, B, L, hidden] and [T, B, L, 4 hidden]
            out.append(Case("lif", dtype, mode, (4, 32, 128, 768), label="spikebert"))
            out.append(Case("lif", dtype, mode, (4, 32, 64, 256), label="mini"))
            out.append(Case("lif", dtype, mode, (3, 5, 7), label="odd"))  # unaligned N
    for dtype in DTYPES:
        for order in ("qk_v", "q_kv"):
            for mode in modes:
                out.append(Case("attention", dtype, mode, _attn_shape(SPIKEBERT), order,
                                label="spikebert"))
                out.append(Case("attention", dtype, mode, _attn_shape(MINI), order,
                                label="mini"))
                for dh in (32, 128):
                    out.append(Case("attention", dtype, mode, _attn_shape(SPIKEBERT, dh),
                                    order, label=f"dh{dh}"))
    # SpikingJelly's defaults and the other flags the LIF kernels take
    out.append(Case("lif", "fp32", "train", (4, 2, 96), kwargs=(
        ("surrogate", "sigmoid"), ("detach_reset", False), ("v_init", True),
        ("return_v_seq", True)), label="flags"))
    out.append(Case("lif", "bf16", "train", (4, 2, 96), kwargs=(
        ("v_reset", None), ("decay_input", False)), label="flags"))
    if matrix == "all":
        from spike_kernels.surrogate import SURROGATE_NAMES

        for name in SURROGATE_NAMES:
            out.append(Case("lif", "fp32", "recompute", (4, 2, 96),
                            kwargs=(("surrogate", name),), label="surrogate"))
    return out


def run_case(case: Case, rec: Recorder) -> None:
    """Call the public op (and backward) on CPU tensors inside :func:`sm90_launches`."""
    import spike_kernels

    dtype = DTYPES[case.dtype]
    grad = case.mode != "infer"
    kw = dict(case.kwargs)
    rec.phase = "forward"
    if case.op == "lif":
        x = torch.empty(case.shape, dtype=dtype, requires_grad=grad)
        if kw.pop("v_init", False):
            kw["v_init"] = torch.empty(case.shape[1:], dtype=dtype, requires_grad=grad)
        out = spike_kernels.lif(x, backend="triton", recompute=case.mode == "recompute", **kw)
        outs = out if isinstance(out, tuple) else (out,)
        leaves = [x] + ([kw["v_init"]] if "v_init" in kw else [])
    elif case.op == "attention":
        T, B, H, L, D = case.shape
        base = [torch.empty((T, B, L, H * D), dtype=dtype, requires_grad=grad)
                for _ in range(3)]
        q, k, v = (b.view(T, B, L, H, D).transpose(2, 3) for b in base)
        mask = torch.ones((B, L), dtype=torch.long)
        outs = (spike_kernels.spiking_attention(
            q, k, v, attention_mask=mask, out_layout="blhd", order=case.order,
            recompute=case.mode == "recompute", backend="triton", **kw),)
        leaves = base
    else:
        raise ValueError(f"unknown op {case.op!r}; expected 'lif' or 'attention'")
    if grad:
        rec.phase = "backward"
        torch.autograd.grad(outs, leaves, [torch.empty_like(o) for o in outs],
                            allow_unused=True)


# --------------------------------------------------------------------------- statistics

_PTXAS_FN = re.compile(r"Compiling entry function '(\w+)'")
_PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_GLOBAL = re.compile(r"\b(ld|st)\.global((?:\.\w+)*?)(?:\.v(\d))?\.([bfsu])(\d+)\b")
_PARAM = re.compile(r"ld\.param\.\w+\s+%\w+, \[\w+_param_(\d+)\]")


def ptxas_stats(ptx: str, fp_fusion: bool = True, log: str | None = None) -> dict:
    """``ptxas -v`` on the PTX with Triton's own flags: registers, spill bytes, stack.
    ``log``: the output of Triton's own ``ptxas -v`` run on this PTX, when it was captured."""
    if log is not None:
        return _parse_ptxas(log)
    ptxas = ptxas_path()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        # Triton 3.9 adds --regAllocOptLevel=2 for CUDA 13's ptxas (a ptxas 13 bug)
        extra = ["--regAllocOptLevel=2"] if _ptxas_major(ptxas) >= 13 else []
        cmd = [ptxas, "-lineinfo", *([] if fp_fusion else ["--fmad=false"]), "-v", *extra,
               "--gpu-name=sm_90a", str(src), "-o", str(Path(tmp) / "k.cubin")]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ptxas failed ({done.returncode}): {done.stderr[-2000:]}")
    return _parse_ptxas(done.stderr + done.stdout)


def _parse_ptxas(log: str) -> dict:
    spill = _PTXAS_SPILL.search(log)
    regs = _PTXAS_REGS.search(log)
    if spill is None or regs is None:
        raise RuntimeError(f"cannot parse ptxas -v output:\n{log}")
    return dict(registers=int(regs.group(1)), stack=int(spill.group(1)),
                spill_stores=int(spill.group(2)), spill_loads=int(spill.group(3)))


def global_accesses(ptx: str) -> dict:
    """Counts of global loads/stores by width in bits, e.g. ``{"ld": {128: 4}, "st": ...}``."""
    out: dict[str, Counter] = {"ld": Counter(), "st": Counter()}
    for op, _mods, vec, _kind, bits in _GLOBAL.findall(ptx):
        out[op][int(vec or 1) * int(bits)] += 1
    return {op: dict(sorted(c.items())) for op, c in out.items()}


def used_params(ptx: str) -> set[int]:
    """Indices of the kernel parameters the PTX reads (unused ones are never loaded)."""
    return {int(i) for i in _PARAM.findall(ptx)}


def sass_instructions(cubin: bytes) -> int | None:
    """Number of SASS instructions (cuobjdump -sass), or None without cuobjdump."""
    tool = _nvidia_bin("cuobjdump")
    if tool is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True)
    if done.returncode:
        return None
    return sum(1 for line in done.stdout.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", line))


def occupancy(registers: int, num_warps: int, shared: int) -> dict:
    """Resident blocks and warps per H200 SM, and what limits them."""
    h = H200
    unit = h["reg_alloc_unit"]
    regs_per_warp = -(-max(registers, 1) // unit) * unit * 32
    limits = {
        "registers": (h["regs_per_sm"] // regs_per_warp) // num_warps,
        "warps": h["max_warps_per_sm"] // num_warps,
        "blocks": h["max_blocks_per_sm"],
    }
    if shared:
        limits["shared"] = h["smem_per_sm"] // (shared + h["smem_reserved_per_block"])
    blocks = min(limits.values())
    return dict(blocks_per_sm=blocks, warps_per_sm=blocks * num_warps,
                occupancy=blocks * num_warps / h["max_warps_per_sm"],
                limited_by=min(limits, key=limits.get))


class Stats:
    """Statistics of compiled kernels, computed once per compiled binary (by its hash)."""

    def __init__(self, ptxas_logs: dict[str, str] | None = None, sass: bool = True) -> None:
        self._cache: dict[str, dict] = {}
        self._logs = {} if ptxas_logs is None else ptxas_logs
        self._sass = sass

    def of(self, launch: Launch) -> dict:
        k = launch.compiled
        key = k.hash if hasattr(k, "hash") else str(id(k))
        if key not in self._cache:
            md = k.metadata
            ptx = k.asm["ptx"]
            st = ptxas_stats(ptx, getattr(md, "enable_fp_fusion", True), self._logs.get(key))
            st.update(shared=getattr(md, "shared", 0), num_warps=md.num_warps,
                      num_stages=getattr(md, "num_stages", None),
                      global_bits=global_accesses(ptx), used_params=sorted(used_params(ptx)),
                      sass_instructions=sass_instructions(k.asm["cubin"]) if self._sass
                      else None,
                      hash=key[:12])
            st.update(occupancy(st["registers"], md.num_warps, st["shared"]))
            self._cache[key] = st
        return self._cache[key]


def launch_record(launch: Launch, stats: Stats) -> dict:
    """JSON-ready: the launch (kernel, phase, grid, constexprs) and its kernel's statistics,
    plus the bytes of the tensors its PTX touches (each counted once)."""
    st = stats.of(launch)
    touched, seen = 0, set()
    for name, (_, numel, size, ptr) in launch.tensors.items():
        if launch.arg_names.index(name) not in st["used_params"]:
            continue
        if (ptr, numel * size) in seen:
            continue
        seen.add((ptr, numel * size))
        touched += numel * size
    simple = lambda v: v if isinstance(v, (bool, int, float, str, type(None))) else str(v)
    return dict(kernel=launch.kernel, phase=launch.phase, grid=list(launch.grid),
                constexprs={k: simple(v) for k, v in launch.constexprs.items()},
                tensors={k: list(v[:3]) for k, v in launch.tensors.items()},
                bytes_touched=touched, **{k: v for k, v in st.items() if k != "used_params"})


def compile_cases(selected: list[Case], progress: bool = False,
                  sass: bool = True) -> dict[str, dict]:
    """{case id: {"error": None or text, "launches": [launch records]}} for every case."""
    results: dict[str, dict] = {}
    with sm90_launches() as rec:
        stats = Stats(rec.ptxas_logs, sass)
        for case in selected:
            start, first = time.monotonic(), len(rec.launches)
            error = None
            try:
                run_case(case, rec)
            except Exception as err:  # a compile error is a result, reported per case
                error = f"{type(err).__name__}: {err}"[:4000]
            records = [launch_record(x, stats) for x in rec.launches[first:]]
            results[case.id] = dict(case=dataclasses.asdict(case), error=error,
                                    launches=records, seconds=time.monotonic() - start)
            if progress:
                status = "ERROR " + error.splitlines()[0][:150] if error else "ok"
                print(f"[{time.monotonic() - start:5.1f}s] {case.id}: {len(records)} launches, "
                      f"{status}", file=sys.stderr, flush=True)
    return results


def shards(selected: list[Case], n: int) -> list[list[Case]]:
    """Split into ``n`` parts of similar compile time, keeping each (op, dtype, order) group
    (which share most kernels) in one part."""
    groups: dict[tuple, list[Case]] = {}
    for c in selected:
        groups.setdefault((c.op, c.dtype, c.order), []).append(c)
    weight = lambda g: len(g) * (4 if g[0].op == "attention" else 1)
    parts: list[list[Case]] = [[] for _ in range(n)]
    load = [0] * n
    for g in sorted(groups.values(), key=weight, reverse=True):
        i = load.index(min(load))
        parts[i] += g
        load[i] += weight(g)
    return [p for p in parts if p]


def compile_parallel(selected: list[Case], jobs: int, progress: bool = False,
                     sass: bool = True, matrix: str = "test") -> dict[str, dict]:
    """:func:`compile_cases` in ``jobs`` fresh interpreters (TRITON_INTERPRET unset)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, part in enumerate(shards(selected, jobs)):
            ids = Path(tmp) / f"ids{i}.txt"
            ids.write_text("\n".join(c.id for c in part))
            cmd = [sys.executable, str(Path(__file__).resolve()), "--matrix", matrix,
                   "--ids", str(ids), "--json", str(Path(tmp) / f"part{i}.json")]
            cmd += [] if progress else ["-q"]
            cmd += [] if sass else ["--no-sass"]
            procs.append((subprocess.Popen(cmd, env=env), Path(tmp) / f"part{i}.json"))
        results: dict[str, dict] = {}
        for proc, out in procs:
            if proc.wait():
                raise RuntimeError(f"a compile worker failed (exit {proc.returncode})")
            results.update(json.loads(out.read_text())["cases"])
    return {c.id: results[c.id] for c in selected}


def environment() -> dict:
    import triton

    return dict(triton=triton.__version__, torch=torch.__version__, target="cuda:90 (sm_90a)",
                ptxas=subprocess.run([ptxas_path(), "--version"], capture_output=True,
                                     text=True).stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matrix", choices=("test", "all"), default="test")
    ap.add_argument("--filter", default="", help="only cases whose id contains this")
    ap.add_argument("--ids", type=Path, help="only the case ids listed in this file")
    ap.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    ap.add_argument("--no-sass", action="store_true", help="skip the SASS instruction count")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"SKIP {reason}")
        if args.json:
            args.json.write_text(json.dumps(dict(skip=reason)))
        return 0
    selected = [c for c in cases(args.matrix) if args.filter in c.id]
    if args.ids:
        wanted = set(args.ids.read_text().split())
        selected = [c for c in selected if c.id in wanted]
    start = time.monotonic()
    if args.jobs > 1:
        results = compile_parallel(selected, args.jobs, not args.quiet, not args.no_sass,
                                   args.matrix)
    else:
        results = compile_cases(selected, not args.quiet, not args.no_sass)
    doc = dict(environment=environment(), seconds=time.monotonic() - start, cases=results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
    errors = sum(1 for r in results.values() if r["error"])
    print(f"compiled {len(results)} cases in {doc['seconds']:.0f}s, {errors} with errors")
    return 0


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)
    sys.exit(main())
