"""bench.webrtc: the stream bookkeeping, and a two-call run end to end (both processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import webrtc


def test_stream_counts_within_the_window_and_finds_gaps() -> None:
    s = webrtc._Stream()
    for t in (0.5, 1.0, 1.02, 1.04, 1.2, 1.22, 2.5):  # 0.5: warm-up; 2.5: after the end
        s.arrive(t, 1.0, 2.0)
    assert s.count == 5
    assert s.gaps == 1 and s.max_gap == pytest.approx(0.16)


@pytest.mark.timeout(120)
def test_a_short_run_passes_and_reports_cpu_per_leg() -> None:
    # a process of its own: the bench pins itself to a CPU and installs uvloop
    proc = subprocess.run([sys.executable, "-m", "bench.webrtc", "--json", "--calls", "2",
                           "--duration", "1"], capture_output=True, text=True, timeout=100,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "webrtc"
    modes = {r["mode"]: r for r in figures["runs"]}
    assert set(modes) == {"relay", "webrtc"}
    web = modes["webrtc"]
    assert web["loss_to_phone"] < 0.05 and web["loss_to_browser"] < 0.05, web
    assert web["cpu_ms_per_leg_second"] > 0 and modes["relay"]["cpu_ms_per_leg_second"] > 0
