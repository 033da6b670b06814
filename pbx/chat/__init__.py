"""Chat: SIP MESSAGE (RFC 3428) between the users of a tenant, stored per conversation and
delivered to every device of the recipient, later when they are offline
(:mod:`pbx.chat.service`); what a message may carry and the MESSAGE we send
(:mod:`pbx.chat.content`)."""

from __future__ import annotations

from pbx.chat.content import ACCEPTED_TYPES, MESSAGE_ID_HEADER, Incoming, Refusal, check
from pbx.chat.ratelimit import SenderLimit
from pbx.chat.service import DEFAULT_MAX_SIZE, RETRY_DELAYS, ChatRateLimited, ChatService

__all__ = ["ACCEPTED_TYPES", "DEFAULT_MAX_SIZE", "MESSAGE_ID_HEADER", "RETRY_DELAYS",
           "ChatRateLimited", "ChatService", "Incoming", "Refusal", "SenderLimit", "check"]
