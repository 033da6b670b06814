"""Voicemail ("Sprachbox", issue 15): deposit, crash-safe storage with start-up recovery, the
phone menu (``*86``, ``*62``).

* :mod:`pbx.voicemail.storage` — where a box keeps its files, deleting a message, recovery;
* :mod:`pbx.voicemail.prompts` — the IVR's building blocks (play and collect digits);
* :mod:`pbx.voicemail.deposit` — greeting, beep, recording a caller;
* :mod:`pbx.voicemail.menu` — the DTMF menu and the voice portal's mailbox + PIN;
* :mod:`pbx.voicemail.service` — what the voicemail feature calls (the composition root
  builds it).

Every change of a box is published on the event bus as ``voicemail.changed`` (the message
waiting indication and the API follow it).
"""

from __future__ import annotations

from pbx.voicemail.service import CHANGED, VoicemailService, publish_counts
from pbx.voicemail.storage import Boxes, recover_boxes

__all__ = ["CHANGED", "Boxes", "VoicemailService", "publish_counts", "recover_boxes"]
