"""pbx/overload.py: the lag detector (states, hysteresis, recovery, queue depth, the probe's
tick) and the admission decision; the ``[overload]`` config keys and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.config import ConfigError, load_config
from pbx.overload import Admission, LoadState, OverloadDetector, OverloadPolicy, admit

#: The state machine alone: the admitted share starts at 1 and is never steered down
#: (target_lag far above any sample), so recovery depends on the lag and the clock only.
POLICY = OverloadPolicy(lag_threshold=0.1, recover_below=0.5, recover_after=2.0, smoothing=1.0,
                        start_fraction=1.0, target_lag=10.0)


def test_normal_until_the_smoothed_lag_reaches_the_threshold() -> None:
    d = OverloadDetector(OverloadPolicy(lag_threshold=0.1, smoothing=0.3))
    # one sample counts at most 2 x the threshold: a 1 s stall alone moves the mean to 0.06
    assert d.sample(1.0, 0.0) is LoadState.NORMAL
    assert d.lag == pytest.approx(0.06)
    assert d.sample(0.0, 0.05) is LoadState.NORMAL  # 0.042
    assert d.sample(0.3, 0.1) is LoadState.NORMAL  # 0.0894
    assert d.sample(0.3, 0.15) is LoadState.OVERLOADED  # 0.1226 >= 0.1
    assert d.lag == pytest.approx(0.0894 + 0.3 * (0.2 - 0.0894))
    assert d.stats["overloads"] == 1 and d.since == 0.15


def test_single_blip_does_not_flip_a_heavily_smoothed_detector() -> None:
    d = OverloadDetector(OverloadPolicy(lag_threshold=0.1, smoothing=0.1))
    assert d.sample(0.5, 0.0) is LoadState.NORMAL  # smoothed 0.05
    for i in range(1, 20):
        d.sample(0.001, i * 0.05)
    assert d.state is LoadState.NORMAL and d.stats["overloads"] == 0


def test_recovers_only_after_staying_calm_for_recover_after() -> None:
    d = OverloadDetector(POLICY)
    assert d.sample(0.2, 0.0) is LoadState.OVERLOADED
    # below the threshold but above half of it: not calm, stays overloaded
    assert d.sample(0.08, 1.0) is LoadState.OVERLOADED
    assert d.sample(0.04, 2.0) is LoadState.OVERLOADED  # calm from 2.0 ...
    assert d.sample(0.04, 3.9) is LoadState.OVERLOADED
    assert d.sample(0.2, 3.95) is LoadState.OVERLOADED  # ... interrupted: the clock restarts
    assert d.sample(0.01, 4.0) is LoadState.OVERLOADED
    assert d.sample(0.01, 5.99) is LoadState.OVERLOADED
    assert d.sample(0.01, 6.0) is LoadState.NORMAL
    assert d.stats == {"overloads": 1, "recoveries": 1, "rejected": 0} and d.since == 6.0


def test_queue_depth_counts_when_configured() -> None:
    d = OverloadDetector(OverloadPolicy(queue_threshold=100, smoothing=1.0, recover_after=0.0,
                                        start_fraction=1.0))
    assert d.sample(0.0, 0.0, queue_depth=99) is LoadState.NORMAL
    assert d.sample(0.0, 0.1, queue_depth=100) is LoadState.OVERLOADED
    assert d.sample(0.0, 0.2, queue_depth=60) is LoadState.OVERLOADED  # above half
    assert d.sample(0.0, 0.3, queue_depth=10) is LoadState.NORMAL
    off = OverloadDetector(OverloadPolicy(smoothing=1.0, queue_threshold=0))  # 0: ignored
    assert off.sample(0.0, 0.0, queue_depth=10**6) is LoadState.NORMAL


def test_tick_measures_how_late_the_probe_woke() -> None:
    d = OverloadDetector(OverloadPolicy(interval=0.05, lag_threshold=0.1, smoothing=1.0))
    assert d.tick(10.0) == 0.05  # the first tick only schedules
    assert d.last_lag == 0.0
    d.tick(10.06)  # due at 10.05: 10 ms late
    assert d.last_lag == pytest.approx(0.01)
    assert d.state is LoadState.NORMAL
    d.tick(10.30)  # due at 10.11: 190 ms late — the loop was busy
    assert d.last_lag == pytest.approx(0.19) and d.state is LoadState.OVERLOADED
    d.tick(10.34)  # early wake-ups count as no lag
    assert d.last_lag == pytest.approx(0.0)


def test_force_is_always_overloaded_and_disabled_never() -> None:
    forced = OverloadDetector(OverloadPolicy(force=True, smoothing=1.0, recover_after=0.0))
    assert forced.overloaded
    assert forced.sample(0.0, 100.0) is LoadState.OVERLOADED
    off = OverloadDetector(OverloadPolicy(enabled=False, smoothing=1.0))
    assert off.sample(10.0, 0.0) is LoadState.NORMAL
    assert off.decide("INVITE", False, False) is Admission.ACCEPT


@pytest.mark.parametrize(("method", "to_tag", "trusted", "expected"), [
    ("INVITE", False, False, Admission.REJECT),   # a new call from a stranger
    ("REGISTER", False, False, Admission.REJECT),
    ("REGISTER", True, False, Admission.REJECT),  # a REGISTER is never in a dialog
    ("INVITE", True, False, Admission.ACCEPT),    # a re-INVITE of a call in progress
    ("BYE", True, False, Admission.ACCEPT),
    ("ACK", False, False, Admission.ACCEPT),      # the ACK of a rejected INVITE
    ("ACK", True, False, Admission.ACCEPT),
    ("CANCEL", False, False, Admission.ACCEPT),
    ("UPDATE", True, False, Admission.ACCEPT),
    ("INFO", True, False, Admission.ACCEPT),
    ("OPTIONS", False, False, Admission.ACCEPT),
    ("INVITE", False, True, Admission.ACCEPT),    # a trunk / trusted peer
    ("REGISTER", False, True, Admission.ACCEPT),
])
def test_admission_while_overloaded(method: str, to_tag: bool, trusted: bool,
                                    expected: Admission) -> None:
    assert admit(method, to_tag, trusted, LoadState.OVERLOADED) is expected
    assert admit(method, to_tag, trusted, LoadState.NORMAL) is Admission.ACCEPT


def test_decide_counts_rejections() -> None:
    d = OverloadDetector(OverloadPolicy(force=True))
    assert d.decide("INVITE", False, False) is Admission.REJECT
    assert d.decide("BYE", True, False) is Admission.ACCEPT
    assert d.stats["rejected"] == 1


def _config(tmp_path: Path, text: str) -> object:
    path = tmp_path / "asyncpbx.toml"
    path.write_text('[sip]\nlisten = ["udp:127.0.0.1:0"]\ndomain = "pbx.test"\n' + text)
    return load_config(path, data_dir=str(tmp_path / "data"), environ={})


def test_config_keys_and_defaults(tmp_path: Path) -> None:
    config = _config(tmp_path, "[overload]\nlag_threshold = 0.25\nretry_after = 10\n")
    o = config.overload  # type: ignore[attr-defined]
    assert (o.lag_threshold, o.retry_after, o.enabled, o.force) == (0.25, 10, True, False)


@pytest.mark.parametrize(("text", "key"), [
    ("lag_threshold = 0", "overload.lag_threshold"),
    ("interval = 0", "overload.interval"),
    ("recover_below = 1.5", "overload.recover_below"),
    ("smoothing = 0", "overload.smoothing"),
    ("retry_after = 0", "overload.retry_after"),
    ("queue_threshold = -1", "overload.queue_threshold"),
    ("recover_after = -1", "overload.recover_after"),
    ("lag_treshold = 0.2", "overload.lag_treshold"),
    ("enabled = 3", "overload.enabled"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, f"[overload]\n{text}\n")
    assert key in str(info.value)


def test_the_admitted_share_is_steered_to_the_target_lag() -> None:
    # AIMD: starts at start_fraction, × decrease per control interval while the lag is above
    # target_lag, + increase while below half of it, unchanged in between
    p = OverloadPolicy(lag_threshold=0.1, smoothing=1.0, target_lag=0.02, control_interval=0.2,
                       start_fraction=0.5, decrease=0.8, increase=0.05, min_fraction=0.1,
                       recover_after=1.0)
    d = OverloadDetector(p)
    assert d.fraction == 1.0
    d.sample(0.2, 0.0)
    assert d.overloaded and d.fraction == 0.5
    d.sample(0.05, 0.1)  # within the control interval: unchanged
    assert d.fraction == 0.5
    d.sample(0.05, 0.2)
    assert d.fraction == pytest.approx(0.4)
    for i in range(20):  # lag stays high: down to the floor, never below
        d.sample(0.05, 0.4 + 0.2 * i)
    assert d.fraction == pytest.approx(0.1)
    d.sample(0.015, 4.4)  # between target/2 and target: held
    assert d.fraction == pytest.approx(0.1)
    t = 4.6
    while d.fraction < 1.0:  # calm: back up in steps of 0.05 ...
        assert d.overloaded
        d.sample(0.001, t)
        t += 0.2
    assert d.fraction == 1.0 and d.overloaded  # ... then calm for recover_after
    while d.overloaded:
        d.sample(0.001, t)
        t += 0.2
    assert d.stats["recoveries"] == 1 and d.state is LoadState.NORMAL and d.fraction == 1.0


def test_only_the_admitted_share_of_new_work_goes_on() -> None:
    p = OverloadPolicy(lag_threshold=0.1, smoothing=1.0, start_fraction=0.25)
    d = OverloadDetector(p)
    d.sample(0.3, 0.0)
    assert d.overloaded
    decisions = [d.decide("INVITE", False, False) for _ in range(100)]
    assert decisions.count(Admission.ACCEPT) == 25  # evenly: every fourth
    assert decisions[:4] == [Admission.REJECT] * 3 + [Admission.ACCEPT]
    assert d.stats["rejected"] == 75
    # an INVITE with credentials was admitted on its first try: never turned away now
    assert all(d.decide("INVITE", False, False, credentials=True) is Admission.ACCEPT
               for _ in range(10))
    # in-dialog requests and trusted peers are not new work
    assert d.decide("INVITE", True, False) is Admission.ACCEPT
    assert d.decide("REGISTER", False, True) is Admission.ACCEPT
    forced = OverloadDetector(OverloadPolicy(force=True))
    assert forced.decide("INVITE", False, False, credentials=True) is Admission.REJECT


@pytest.mark.parametrize(("key", "value"), [
    ("target_lag", "0"), ("control_interval", "-1"), ("start_fraction", "1.5"),
    ("decrease", "1.0"), ("increase", "0"), ("min_fraction", "0")])
def test_bad_control_keys_are_config_errors_naming_the_key(tmp_path: Path, key: str,
                                                            value: str) -> None:
    cfg = tmp_path / "asyncpbx.toml"
    cfg.write_text(f"[overload]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, data_dir=str(tmp_path / "data"), environ={})
    named = "start_fraction" if key == "min_fraction" else key
    assert f"overload.{named}" in str(err.value)


def test_a_burst_in_the_receive_buffers_is_no_overload_but_a_lasting_queue_is() -> None:
    # the queue depth is smoothed and capped like the lag (default smoothing 0.3): one sample
    # at any size moves the mean to 0.6 x the threshold; a queue that stays flips it
    d = OverloadDetector(OverloadPolicy(queue_threshold=100_000, lag_threshold=1.0))
    assert d.sample(0.0, 0.0, queue_depth=4_000_000) is LoadState.NORMAL
    assert d.queue == pytest.approx(60_000)
    assert d.sample(0.0, 0.05, queue_depth=0) is LoadState.NORMAL
    for i in range(2, 6):
        d.sample(0.0, i * 0.05, queue_depth=150_000)
    assert d.state is LoadState.OVERLOADED


def test_a_draining_backlog_asks_for_no_further_cut_a_growing_one_does() -> None:
    policy = OverloadPolicy(queue_threshold=100, smoothing=1.0, control_interval=0.5,
                            start_fraction=0.5, decrease=0.5, target_lag=1.0)
    d = OverloadDetector(policy)
    d.sample(0.0, 0.0, queue_depth=400)  # overloaded; the share starts at 0.5
    assert d.overloaded and d.fraction == 0.5
    d.sample(0.0, 1.0, queue_depth=500)  # high and growing: cut
    assert d.fraction == 0.25
    d.sample(0.0, 2.0, queue_depth=300)  # still high but draining (a stall's backlog): hold
    assert d.fraction == 0.25
    d.sample(0.0, 3.0, queue_depth=350)  # growing again: cut
    assert d.fraction == 0.125


def test_the_share_is_steered_on_the_backlog_delay_not_its_size() -> None:
    # target_sojourn set: the shortest delay over a control interval steers; a
    # queue of any size that drains now and then (minimum near zero) is no reason to cut
    policy = OverloadPolicy(queue_threshold=100, smoothing=1.0, control_interval=1.0,
                            start_fraction=0.5, decrease=0.5, increase=0.1, target_lag=0.1,
                            target_sojourn=0.02, recover_after=10.0)
    d = OverloadDetector(policy)
    d.sample(0.0, 0.0, queue_depth=400)
    assert d.overloaded and d.fraction == 0.5
    d.sample(0.0, 0.5, 400, sojourn=0.08)
    d.sample(0.0, 1.0, 500, sojourn=0.05)  # the interval's shortest: 50 ms > 20 ms: cut
    assert d.sojourn == pytest.approx(0.05) and d.fraction == 0.25
    d.sample(0.0, 1.5, 5000, sojourn=0.09)
    d.sample(0.0, 2.0, 5000, sojourn=0.004)  # drained once in the interval: raise, big or not
    assert d.sojourn == pytest.approx(0.004) and d.fraction == pytest.approx(0.35)
    d.sample(0.0, 3.0, 0, sojourn=0.015)  # between half the target and the target: held
    assert d.fraction == pytest.approx(0.35)
    d.sample(0.0, 4.0, 0)  # nothing handed on at all: no backlog, raise
    assert d.sojourn is None and d.fraction == pytest.approx(0.45)
    d.sample(0.5, 5.0, 0, sojourn=0.0)  # the loop itself lags: cut whatever the backlog
    assert d.fraction == pytest.approx(0.225)


def test_target_sojourn_is_a_config_key(tmp_path: Path) -> None:
    cfg = tmp_path / "asyncpbx.toml"
    cfg.write_text("[overload]\ntarget_sojourn = 0.03\n")
    assert load_config(cfg, data_dir=str(tmp_path / "data"), environ={}).overload.target_sojourn \
        == pytest.approx(0.03)
    cfg.write_text("[overload]\ntarget_sojourn = -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, data_dir=str(tmp_path / "data"), environ={})
    assert "overload.target_sojourn" in str(err.value)
