"""Webhooks (issue 13 §4): a tenant's endpoints get the events they subscribed to, signed per
Standard Webhooks, delivered at least once from a durable outbox.

Modules, one job each: :mod:`~pbx.webhooks.signing` (the headers), :mod:`~pbx.webhooks.policy`
(back-off, the disable rule), :mod:`~pbx.webhooks.guard` (the SSRF guard) and
:mod:`~pbx.webhooks.service` (events in, deliveries out). The tables are
:mod:`pbx.store.webhooks`; the REST resource is :mod:`pbx.api.resources.webhooks`.
"""

from pbx.webhooks.guard import TargetRefused, check_url
from pbx.webhooks.service import TEST_KIND, WebhookService

__all__ = ["TEST_KIND", "TargetRefused", "WebhookService", "check_url"]
