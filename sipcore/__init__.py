"""sipcore — a sans-IO SIP stack (RFC 3261 and friends).

Everything outside :mod:`sipcore.aio` is free of asyncio, sockets, clocks and logging: inputs are
bytes/events plus ``now``, outputs are events, messages to send and the next timer deadline.
"""

# ASYNCPBX_NO_EXTENSIONS=1: the mypyc-compiled modules load from their sources (see _compiled).
from sipcore import _compiled as _compiled
