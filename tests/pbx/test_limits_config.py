"""pbx/chat/ratelimit.py: a token bucket per chat sender; the config keys of it and of the portal sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.chat.ratelimit import SenderLimit
from pbx.config import ConfigError, load_config


def test_burst_then_rate_per_sender() -> None:
    limit = SenderLimit(rate=2.0, burst=3)
    assert [limit.take(1, 0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.take(2, 0.0)  # another sender has a bucket of their own
    assert limit.retry_after(1) == 1
    assert not limit.take(1, 0.4) and limit.take(1, 0.6)  # 2 per second come back
    assert not limit.take(1, 0.6)


def test_one_log_per_episode() -> None:
    limit = SenderLimit(rate=1.0, burst=1)
    assert limit.take(7, 0.0) and not limit.take(7, 0.1)
    assert limit.newly_limited(7) and not limit.newly_limited(7)
    assert limit.take(7, 2.0) and not limit.take(7, 2.1)
    assert limit.newly_limited(7)  # a new episode after a message went through


def test_the_table_stays_bounded() -> None:
    limit = SenderLimit(rate=1.0, burst=1)
    for sender in range(10_000):
        limit.take(sender, float(sender) * 2)  # each sender's bucket is full again later
    assert len(limit._buckets) <= 4097


@pytest.mark.parametrize(("text", "key"), [("rate = 0", "chat.rate"), ("rate = -1", "chat.rate"),
                                           ("burst = 0", "chat.burst")])
def test_bad_limits_are_config_errors_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "asyncpbx.toml"
    path.write_text(f"[chat]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key


@pytest.mark.parametrize(("text", "key"), [
    ("session_idle = 10", "http.session_idle"),
    ("session_idle = 7200\nsession_lifetime = 3600", "http.session_idle"),
    ("session_lifetime = 99999999", "http.session_lifetime"),
])
def test_bad_session_lifetimes_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "asyncpbx.toml"
    path.write_text(f"[http]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
