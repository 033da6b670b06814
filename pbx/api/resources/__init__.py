"""The API's resources, one module each; each has ``register(router)``."""
