"""scripts/bench runs flowmap and DuckDB on the same data and prints the ratios.

It runs on the suite's debug build (FLOWMAP_BIN): a release build of the job takes longer than
the rest of the Python tests, and this test checks what the script prints, not the figures."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_script_prints_ratios():
    out = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--flows", "20000", "--ips", "500", "--exporters", "10"],
        check=True, capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "FLOWMAP_BIN": str(ROOT / "target" / "debug" / "flowmap")},
    ).stdout
    assert "ratio flowmap/DuckDB (count)" in out, out
    assert "ratio flowmap/DuckDB (fetch)" in out, out
    assert "same answer" in out and "DIFFERENT" not in out, out
