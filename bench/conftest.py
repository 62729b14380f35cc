"""pytest setup of the benchmarks: ``pytest bench/ --benchmark``.

Without ``--benchmark`` every benchmark is skipped, so a plain ``pytest`` stays fast. With
it they run under pytest-benchmark when it is installed (grouped tables at the end) or under
a plain timer otherwise; either way every result goes to ``bench/results/<run>.json`` and
``latest-<cpu|gpu>.json`` (``BENCH_RESULTS_DIR`` overrides the folder), and a Markdown
summary with the ratios against ours is printed at the end.

Options: ``--benchmark-full`` (the full matrix instead of the default reduced one),
``--benchmark-deadline SECONDS`` (benchmarks that would start later are skipped, so a
time-boxed run still ends cleanly with its JSON).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # benchlib and render, also under --import-mode=importlib
    sys.path.insert(0, str(BENCH_DIR))

import benchlib  # noqa: E402

_START = time.monotonic()
_RECORDER = pytest.StashKey[benchlib.Recorder]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spike-kernels benchmarks (bench/)")
    group.addoption("--benchmark", action="store_true", default=False,
                    help="run the benchmarks under bench/ (skipped without this flag)")
    group.addoption("--benchmark-full", action="store_true", default=False,
                    help="run the full benchmark matrix instead of the default reduced one")
    group.addoption("--benchmark-deadline", type=float, default=None, metavar="SECONDS",
                    help="skip benchmarks that would start more than SECONDS after the "
                         "session began")


_CONFIG: dict[str, pytest.Config] = {}


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG["config"] = config
    # snnTorch's modules still use torch.jit.script_method
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    args = " ".join(map(str, config.invocation_params.args))
    if config.getoption("benchmark") and hasattr(config.option, "benchmark_columns") and (
            "--benchmark-columns" not in args):
        config.option.benchmark_columns = ["min", "median", "mean", "stddev", "rounds"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmarks run only with `pytest bench/ --benchmark`")
    for item in items:
        if "bench" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


def _recorder(config: pytest.Config) -> benchlib.Recorder:
    if _RECORDER not in config.stash:
        mode = "full" if config.getoption("benchmark_full") else "default"
        config.stash[_RECORDER] = benchlib.Recorder(mode)
    return config.stash[_RECORDER]


@pytest.fixture
def bench(request: pytest.FixtureRequest) -> Iterator[benchlib.Bench]:
    """Runs one benchmark: pytest-benchmark's ``benchmark`` fixture where installed, asked for
    only when the benchmark runs (so a test that skips first leaves it unused, unwarned)."""
    deadline = request.config.getoption("benchmark_deadline")
    if deadline is not None and time.monotonic() - _START > deadline:
        pytest.skip(f"--benchmark-deadline of {deadline:.0f} s reached")

    def timer_fixture():
        try:
            fixture = request.getfixturevalue("benchmark")
        except pytest.FixtureLookupError:
            return benchlib.ShimBenchmark()
        return benchlib.ShimBenchmark() if getattr(fixture, "disabled", False) else fixture

    yield benchlib.Bench(timer_fixture, _recorder(request.config), request.node.nodeid)
    benchlib.release_memory()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Benchmarks skipped during a --benchmark run are listed in the JSON with their reason."""
    config = _CONFIG.get("config")
    if config is None or not config.getoption("benchmark") or not report.skipped:
        return
    if not Path(report.nodeid.split("::")[0]).name.startswith("test_bench_"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _recorder(config).skip(report.nodeid, reason.removeprefix("Skipped: "))


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if _RECORDER in config.stash:
        rec = config.stash[_RECORDER]
        if rec.results or rec.skipped:
            rec.write()


def _render_module():
    spec = importlib.util.spec_from_file_location("spike_bench_render", BENCH_DIR / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if _RECORDER not in config.stash or not config.stash[_RECORDER].results:
        return
    rec = config.stash[_RECORDER]
    terminalreporter.section("spike_kernels benchmarks: ratios against ours")
    terminalreporter.write_line(_render_module().render(rec.document()))
    terminalreporter.write_line(f"results: {rec.path} (and latest-*.json beside it); "
                                f"render with: python bench/render.py {rec.path}")
