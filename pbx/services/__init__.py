"""Services: the one way each kind of change is made (DESIGN.md principle 9).

Feature codes, the CLI, the REST API and the portal all change state through these; each service
validates, stores, updates the cache and emits one event on the :class:`~.events.EventBus`.
"""

from pbx.services.events import Event, EventBus
from pbx.services.settings import SettingsService

__all__ = ["Event", "EventBus", "SettingsService"]
