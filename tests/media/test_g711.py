"""G.711: the table-driven Cython kernel equals the readable reference on every input, both laws.

Also checked against CPython's ``audioop`` (deprecated, present on 3.11) when importable.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import media.g711 as ref

ALL_SAMPLES = np.arange(65536, dtype=np.uint16).view(np.int16)
ALL_CODES = bytes(range(256))
LAWS = ("ulaw", "alaw")


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


def _ext() -> ModuleType:
    return importlib.import_module("media._g711")


def _enc(mod: ModuleType, law: str, pcm: np.ndarray) -> bytes:
    out = bytearray(len(pcm))
    getattr(mod, f"lin2{law}_into")(np.ascontiguousarray(pcm), out)
    return bytes(out)


def _dec(mod: ModuleType, law: str, payload: bytes) -> np.ndarray:
    out = np.empty(len(payload), dtype=np.int16)
    getattr(mod, f"{law}2lin_into")(payload, out)
    return out


@pytest.mark.parametrize("law", LAWS)
def test_kernel_equals_reference_on_all_65536_samples(law: str) -> None:
    assert _enc(_ext(), law, ALL_SAMPLES) == _enc(ref, law, ALL_SAMPLES)


@pytest.mark.parametrize("law", LAWS)
def test_kernel_equals_reference_on_all_256_codes(law: str) -> None:
    np.testing.assert_array_equal(_dec(_ext(), law, ALL_CODES), _dec(ref, law, ALL_CODES))


@pytest.mark.parametrize("law", LAWS)
def test_reference_equals_audioop(law: str) -> None:
    audioop = _audioop()
    if audioop is None:
        pytest.skip("audioop not importable on this Python")
    raw = ALL_SAMPLES.tobytes()
    assert _enc(ref, law, ALL_SAMPLES) == getattr(audioop, f"lin2{law}")(raw, 2)
    expected = np.frombuffer(getattr(audioop, f"{law}2lin")(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(_dec(ref, law, ALL_CODES), expected)


@pytest.mark.parametrize("law", LAWS)
def test_decode_then_encode_is_identity_on_codes(law: str) -> None:
    """Every code decodes to a value that encodes back to itself, except µ-law's negative zero."""
    decoded = _dec(_ext(), law, ALL_CODES)
    again = _enc(_ext(), law, decoded)
    diffs = [c for c in range(256) if again[c] != c]
    # µ-law 0x7F decodes to 0 which encodes as 0xFF (positive zero); no other code changes.
    assert diffs == ([0x7F] if law == "ulaw" else [])


@pytest.mark.parametrize("law", LAWS)
def test_encoding_is_monotonic(law: str) -> None:
    """Decoding the encoded ramp never decreases: the companding curve is monotonic."""
    ramp = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)
    back = _dec(_ext(), law, _enc(_ext(), law, ramp)).astype(np.int32)
    assert np.all(np.diff(back) >= 0)
    # and the quantisation error stays within G.711's segment step (max 1024 for µ-law top)
    assert np.max(np.abs(back - ramp.astype(np.int32))) <= 1024 + 8


def test_silence_codes() -> None:
    zero = np.zeros(160, dtype=np.int16)
    assert ref.ulaw_encode(zero) == bytes([ref.ULAW_SILENCE]) * 160
    assert ref.alaw_encode(zero) == bytes([ref.ALAW_SILENCE]) * 160


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_public_api_roundtrip_matches_reference(samples: list[int]) -> None:
    pcm = np.array(samples, dtype=np.int16)
    assert ref.ulaw_encode(pcm) == _enc(ref, "ulaw", pcm)
    assert ref.alaw_encode(pcm) == _enc(ref, "alaw", pcm)
    payload = ref.ulaw_encode(pcm)
    np.testing.assert_array_equal(ref.ulaw_decode(payload), _dec(ref, "ulaw", payload))
    payload = ref.alaw_encode(pcm)
    np.testing.assert_array_equal(ref.alaw_decode(payload), _dec(ref, "alaw", payload))


def test_into_variants_write_in_place_and_check_lengths() -> None:
    pcm = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    out = np.zeros(5, dtype=np.uint8)
    ref.ulaw_encode_into(pcm, out)
    assert out.tobytes() == ref.ulaw_encode(pcm)
    back = np.zeros(5, dtype=np.int16)
    ref.alaw_decode_into(ref.alaw_encode(pcm), back)
    np.testing.assert_array_equal(back, ref.alaw_decode(ref.alaw_encode(pcm)))
    for mod in (ref, _ext()):
        with pytest.raises(ValueError):
            mod.lin2ulaw_into(pcm, bytearray(4))
        with pytest.raises(ValueError):
            mod.alaw2lin_into(b"\x00" * 3, np.zeros(2, dtype=np.int16))


def test_rejects_non_int16() -> None:
    with pytest.raises(TypeError):
        ref.ulaw_encode(np.zeros(4, dtype=np.float64))


def test_tables_match_scalar_reference() -> None:
    table = ref.decode_table("alaw")
    assert [int(v) for v in table[:4]] == [ref.alaw_to_linear(c) for c in range(4)]
    enc = ref.encode_table("ulaw")
    assert int(enc[1000]) == ref.linear_to_ulaw(1000)
    with pytest.raises(ValueError):
        ref.decode_table("opus")
