"""Message waiting indication (RFC 3842 over RFC 6665): the lamp on the phones of a user with
new voicemail. :class:`MwiService` answers ``message-summary`` SUBSCRIBEs, keeps the
subscriptions and NOTIFYs on every change of the box; see its module for the rules."""

from pbx.mwi.service import MWI_FEATURE, Counts4, MwiService

__all__ = ["MWI_FEATURE", "Counts4", "MwiService"]
