"""``asyncpbx bench api`` end to end with small numbers: a PBX with held calls, the API climbs,
the SIP prober, the baseline — the JSON has every figure (not a performance test: nothing
here is timed)."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import api
from bench._sipprobe import options, percentile

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="needs SIPp")


def test_percentile_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([], 0.99) == 0.0


def test_probe_is_an_out_of_dialog_options_with_its_number_as_cseq() -> None:
    text = options(("127.0.0.1", 5060), ("127.0.0.1", 4000), 7).decode()
    assert text.startswith("OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n")
    assert "\r\nCSeq: 7 OPTIONS\r\n" in text and text.endswith("\r\n\r\n")


def test_bench_api_reports_rates_cpu_and_the_sip_answer_time(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert api.main(["--seconds", "0.5", "--rates", "20", "--max-rate", "20", "--calls", "4",
                     "--conns", "2", "--probe-rate", "50", "--quiet-seconds", "0.5",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bench"] == "api" and result["probe"] == "call"
    assert result["calls_up"] == 4 and result["calls_up_after"] == 4
    assert result["sip_quiet_probes"] > 0 and result["sip_p99_quiet_ms"] > 0
    for kind in ("read", "write"):
        (row,) = result["pbx_steps"][kind]
        assert row["rate"] == 20 and row["successful"] + row["failed"] == 10
        assert row["statuses"] == {"200": 10}, row  # every read and If-Match write answered
        assert row["sip_probes"] > 0 and row["sip_p99_ms"] > 0
        assert row["sip_p99_ratio"] is not None and row["server_cpu_ms_per_request"] > 0
        # whether a step held depends on the machine's load: the keys are there, not values
        assert result[f"pbx_{kind}s_per_s"] in (0, 20)
        assert result[f"baseline_{kind}s_per_s"] in (0, 20)
        for key in (f"server_cpu_ms_per_{kind}", f"ratio_{kind}_to_baseline",
                    f"sip_p99_ratio_at_best_{kind}", f"baseline_server_cpu_ms_per_{kind}"):
            assert key in result
        assert result[f"{kind}_rate_within_target"] in (0, 20)
        (base,) = result["baseline_steps"][kind]
        assert base["statuses"] == {"200": 10}


def test_bench_api_with_the_options_probe(capsys: pytest.CaptureFixture[str]) -> None:
    assert api.main(["--seconds", "0.5", "--rates", "20", "--max-rate", "20", "--calls", "2",
                     "--conns", "2", "--probe", "options", "--probe-rate", "50",
                     "--quiet-seconds", "0.5", "--kinds", "read", "--no-baseline",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["probe"] == "options" and result["probe_rate"] == 50
    (row,) = result["pbx_steps"]["read"]
    assert row["sip_probes"] > 0 and row["sip_p99_ms"] > 0
    assert result["calls_up_after"] == 2
