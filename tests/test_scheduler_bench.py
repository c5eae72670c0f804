"""bench/scheduler.py --quick runs and prints its figures (a few seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_its_figures():
    out = subprocess.run([sys.executable, "bench/scheduler.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "v2 GPU-class index" in out and "brute force (baseline)" in out
    assert "same plan on the baseline's tasks: True" in out
    assert "FIFO first-fit (baseline)" in out and "v2 mean JCT =" in out
