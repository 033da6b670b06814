"""How a call presents its caller on the legs it sends out (RFC 3323 privacy, RFC 3325
P-Asserted-Identity): :class:`Presentation`, kept on :attr:`Call.presentation`.

The caller's INVITE sets it first (withheld when it names nobody or asks for ``Privacy: id``);
originating features change it (CLIR withholds it, the displayed number picks the number
shown); the legs read it when they build From,
P-Asserted-Identity and Privacy, and ``CallContext.caller_anonymous`` reads it for the
terminating chain (anonymous rejection). The real identity never leaves call control: the call
record and the logs keep it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Presentation"]


@dataclass(frozen=True, slots=True)
class Presentation:
    """The caller as the far ends of the outgoing legs see them.

    ``number``: the number presented toward trunks instead of the default — the calling
    user's chosen displayed number (From user part, P-Asserted-Identity toward a trusted trunk);
    None: the default (the first DID of the user the call goes out for; users inside the PBX
    see the extension or the outside caller's number, as the call record names the caller). ``name``: the
    display name (None: the default, the user's name). ``private``: True withholds the identity
    (CLIR: ``"Anonymous" <sip:anonymous@anonymous.invalid>`` and ``Privacy: id``; only a trusted
    trunk gets the real number, in P-Asserted-Identity, asked to withhold it), False shows it —
    a choice made for this call (``*65``) that later features keep —, None: nobody chose yet
    (shown).
    """

    number: str | None = None
    name: str | None = None
    private: bool | None = None

    @property
    def withheld(self) -> bool:
        """The caller's identity is not to be shown."""
        return self.private is True
