"""Stub of the compiled jitter buffer: the same API as its source, media/_jitter_py.py."""

from media._jitter_py import COUNTERS as COUNTERS
from media._jitter_py import MAX_DROPOUT as MAX_DROPOUT
from media._jitter_py import JitterBuffer as JitterBuffer
from media._jitter_py import JitterOutput as JitterOutput
from media._jitter_py import JitterStatistics as JitterStatistics
