"""The API's fixtures (a real store, two tenants, tokens of every role) for the portal's
view tests."""

from tests.pbx.api.conftest import pbx_api

__all__ = ["pbx_api"]
