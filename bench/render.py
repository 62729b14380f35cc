"""Render a benchmark results JSON (``bench/results/*.json``) as Markdown tables.

    python bench/render.py                                  # newest bench/results/latest-*.json
    python bench/render.py bench/results/latest-gpu.json    # a given file
    python bench/render.py latest-cpu.json -o table.md      # names resolve in bench/results/

Time tables: median milliseconds per call; a peer's cell also shows how many times faster
ours is (``3.1x`` = the peer takes 3.1 times as long as ours). Memory tables: peak MiB one
call allocates above its inputs (see ``peak_memory_method`` in the JSON); the ratio is the
peer's peak over ours. Standard library only, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

GROUPS = {
    "lif": "LIF neuron (`spike_kernels.lif`)",
    "attention": "Spiking attention (`spike_kernels.spiking_attention`) vs unfused",
    "train_step": "SpikeBERT training step (forward, backward, AdamW)",
}
MODES = ["fwd+bwd", "fwd", "train"]
PROVIDER_ORDER = [
    "ours", "ours-fused", "ours-unfused", "ours-unfused-kv-first", "torch-ref", "torch-compile",
    "spikingjelly", "spikingjelly-triton", "spikingjelly-cuda", "spikingjelly-torch",
    "spikingjelly-unfused", "snntorch",
]
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _pow2(n: Any) -> str:
    if isinstance(n, int) and n >= 1024 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    return str(n)


def _num(x: float, digits: int = 3) -> str:
    if x >= 10 ** digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _providers(rows: list[dict[str, Any]]) -> list[str]:
    names = {r["provider"] for r in rows}
    rank = {p: i for i, p in enumerate(PROVIDER_ORDER)}
    return sorted(names, key=lambda p: (rank.get(p, len(rank)), p))


def _cases(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """Distinct ``(mode, params, dtype)`` in a stable, readable order."""
    seen: dict[str, tuple[str, dict[str, Any], str]] = {}
    for r in rows:
        seen.setdefault(r["key"], (r["mode"], r["params"], r["dtype"]))
    mode_rank = {m: i for i, m in enumerate(MODES)}
    return sorted(seen.values(), key=lambda c: (
        mode_rank.get(c[0], 99), c[2] != "float32", c[2],
        [str(v).zfill(12) for v in c[1].values()]))


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def _time_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    ms = _num(r["time_s"]["median"] * 1e3)
    if r["provider"] == r["baseline"] or r.get("speedup_of_ours") is None:
        return ms
    return f"{ms} ({r['speedup_of_ours']:.2g}x)"


def _memory_cell(r: dict[str, Any] | None) -> str:
    if r is None or r.get("peak_bytes") is None:
        return "-"
    mib = _num(r["peak_bytes"] / 2**20)
    if r["provider"] == r["baseline"] or r.get("memory_ratio") is None:
        return mib
    return f"{mib} ({r['memory_ratio']:.2g}x)"


def _extra_columns(group: str, device: str) -> list[tuple[str, Any]]:
    """Columns about ours only: (header, function of our result -> str)."""
    if group == "lif" and device == "cuda":  # a CPU at 2 threads is not bandwidth-bound
        return [("ours GB/s", lambda r: _num(r["gbs"]) if r.get("gbs") else "-"),
                ("ours x floor", lambda r: f"{r['x_floor']:.2f}" if r.get("x_floor") else "-")]
    if group == "train_step":
        return [("ours samples/s", lambda r: _num(r["samples_per_s"])
                 if r.get("samples_per_s") else "-")]
    return []


def render_group(group: str, rows: list[dict[str, Any]], device: str) -> list[str]:
    providers = _providers(rows)
    by = {(r["key"], r["provider"]): r for r in rows}
    cases = _cases(rows)
    params = list(cases[0][1]) if cases else []
    extras = _extra_columns(group, device)
    out = [f"### {GROUPS.get(group, group)}", ""]
    header = ["mode", *params, "dtype", *[f"{p} ms" for p in providers], *[h for h, _ in extras]]
    body = []
    for mode, case_params, dtype in cases:
        key = next(r["key"] for r in rows if (r["mode"], r["params"], r["dtype"]) ==
                   (mode, case_params, dtype))
        cells = [mode, *[_pow2(case_params.get(k)) for k in params], SHORT_DTYPE.get(dtype, dtype)]
        cells += [_time_cell(by.get((key, p))) for p in providers]
        base = next((r for r in rows if r["key"] == key and r["provider"] == r["baseline"]), None)
        cells += [fn(base) if base else "-" for _, fn in extras]
        body.append(cells)
    out += _table(header, body)
    out += ["", "Peak memory, MiB above the inputs (peer / ours):", ""]
    mem_body = []
    for mode, case_params, dtype in cases:
        key = next(r["key"] for r in rows if (r["mode"], r["params"], r["dtype"]) ==
                   (mode, case_params, dtype))
        cells = [mode, *[_pow2(case_params.get(k)) for k in params], SHORT_DTYPE.get(dtype, dtype)]
        mem_body.append(cells + [_memory_cell(by.get((key, p))) for p in providers])
    out += _table(["mode", *params, "dtype", *[f"{p} MiB" for p in providers]], mem_body)
    return [*out, ""]


def render(doc: dict[str, Any]) -> str:
    """The whole results document as Markdown."""
    env = doc.get("env", {})
    versions = env.get("versions", {})
    git = env.get("git", {})
    commit = (git.get("commit") or "unknown")[:12] + ("+dirty" if git.get("dirty") else "")
    libs = ", ".join(f"{k} {v}" for k, v in versions.items()
                     if v and k in ("torch", "triton", "spikingjelly", "snntorch"))
    device = env.get("device", "cpu")
    where = env.get("machine", "?")
    if device == "cpu":
        where += f", {env.get('torch_threads', '?')} threads"
    lines = [f"Machine: {where}; {libs}; commit {commit}; {doc.get('created', '?')}"
             + (f"; D2D copy {doc['copy_gbs']:.0f} GB/s" if doc.get("copy_gbs") else "")
             + f"; matrix: {doc.get('matrix', '?')}.", "",
             "Median ms per call; in a peer's cell, (Nx) = how many times faster ours is.", ""]
    results = doc.get("results", [])
    groups = list(dict.fromkeys([*GROUPS, *(r["group"] for r in results)]))
    for group in groups:
        rows = [r for r in results if r["group"] == group]
        if rows:
            lines += render_group(group, rows, device)
    if doc.get("skipped"):
        reasons: dict[str, int] = {}
        for s in doc["skipped"]:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        lines += ["Skipped: " + "; ".join(f"{r} ({n}x)" for r, n in reasons.items()), ""]
    return "\n".join(lines).rstrip() + "\n"


def latest(directory: Path = RESULTS_DIR) -> Path:
    files = sorted(directory.glob("latest-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SystemExit(f"no latest-*.json in {directory}; run `pytest bench/ --benchmark` first")
    return files[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="?", help="results file (default: newest latest-*.json)")
    parser.add_argument("-o", "--output", help="write the Markdown here instead of stdout")
    args = parser.parse_args(argv)
    path = Path(args.json) if args.json else latest()
    if not path.exists() and (RESULTS_DIR / path).exists():
        path = RESULTS_DIR / path
    text = render(json.loads(path.read_text()))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
