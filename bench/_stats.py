"""What several benches compute alike: a nearest-rank percentile, a "median | p95" table cell,
the machine line printed above a table, and the raw results saved beside it.

The percentile is the sample at rank round(q * (n - 1)) of the sorted samples: no
interpolation, so a reported p99 is a time that really occurred. Benches whose tables were
published with another rank rule (bench_metrics, bench_proxy, bench_supervisorctl) keep
their own so that their figures stay comparable with docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RESULTS_ENV = "LUNA_BENCH_RESULTS"
"""Where save_results writes instead of bench/results (the smoke test's private dir)."""


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 <= q <= 1) of a non-empty sample."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median_p95_ms(seconds: Sequence[float]) -> str:
    """`median | p95` in milliseconds, two decimals: two cells of a Markdown table row."""
    return f"{statistics.median(seconds) * 1000:.2f} | {percentile(seconds, 0.95) * 1000:.2f}"


def machine() -> str:
    """CPU count (nproc), the lscpu model name, the Python version, and the load average
    (1, 5, 15 min) when called: docs/BENCHMARKS.md names the load beside every figure."""
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                      if line.startswith("Model name")), model)
    except (OSError, subprocess.CalledProcessError):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs (nproc), {model}, Python {platform.python_version()}, "
            f"load average {load}")


def save_results(name: str, **data: Any) -> Path:
    """Write `data` and the machine line to bench/results/<name>.json (not committed), or
    under $LUNA_BENCH_RESULTS when set."""
    where = Path(os.environ.get(RESULTS_ENV) or RESULTS)
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path
