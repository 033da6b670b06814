"""sipcore — a sans-IO SIP stack (RFC 3261 and friends).

Everything outside :mod:`sipcore.aio` is free of asyncio, sockets, clocks and logging: inputs are
bytes/events plus ``now``, outputs are events, messages to send and the next timer deadline.
"""
