"""Enum base for the state tables of the hot paths.

``enum.Enum.__hash__`` is Python code (``hash(self._name_)``): every ``TABLE[(state, input)]``
lookup and every timer dict keyed by an input paid a Python-level call per member hashed, a
hundred per call at hundreds of calls per second. Members are singletons compared by identity,
so the identity hash of ``object`` is equivalent and runs in C.
"""

from __future__ import annotations

import enum


class FastEnum(enum.Enum):
    """An :class:`enum.Enum` hashed by identity (see the module docstring)."""

    __hash__ = object.__hash__
