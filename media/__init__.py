"""media — the RTP/RTCP and audio core of asyncpbx (sans-IO kernels, one asyncio adapter)."""
