"""pbx — the asyncpbx application: config, store, registrar service, CLI, wiring."""

__version__ = "0.1.0"
