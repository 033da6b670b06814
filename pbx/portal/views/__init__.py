"""The portal's views, one module per area; each has ``register(portal)``."""
