"""benchmarks/load_bench.py --quick against the session's running app (`app_server`, SQLite, one
replica): the benchmark drives the real REST API without errors and writes its rows."""
import importlib.util
import json
import sys

import pytest

from core.config import PROJECT_ROOT

pytestmark = pytest.mark.slow


def load_bench_module():
    spec = importlib.util.spec_from_file_location("load_bench", PROJECT_ROOT / "benchmarks" / "load_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_load_bench_runs_without_errors(app_server, tmp_path):
    bench = load_bench_module()
    out = tmp_path / "load_bench.json"
    assert bench.main(["--quick", "--url", app_server["url"], "--config", str(app_server["config"]),
                       "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert not results["failures"]
    rows = {(r["scenario"], r["clients"]): r for r in results["runs"]}
    assert set(rows) == {("back-to-back", 1), ("back-to-back", 4), ("think-time", 20)}
    for row in rows.values():
        assert row["backend"] == "sqlite" and row["replicas"] == 1
        assert row["error_count"] == 0, row["errors"]
        assert row["turns"] > 0 and row["latency_ms"]["p95"] is not None
        assert row["client_cpu_pct"] >= 0
