"""SIP dialogs (RFC 3261 §12), the dialog sets that forking creates (§13.2.2.4), and the table
that routes in-dialog requests (§12.2.2).

Theory of operation
-------------------
A dialog is the peer-to-peer relationship between two UAs, identified by Call-ID, local tag and
remote tag (§12).  It is created by a 1xx with a To tag (*early*) or a 2xx (*confirmed*) to an
INVITE (§12.1), and holds what in-dialog requests need: the route set (Record-Route of the
request as received for the UAS, reversed from the response for the UAC, §12.1.1/§12.1.2), the
remote target (Contact), and the local/remote CSeq numbers.

* Requests we send take the next local CSeq; Request-URI and Route follow §12.2.1.1 (loose
  routing when the first route has ``lr``; the strict-routing fallback otherwise).
* Requests we receive must not go backwards in CSeq: lower than the remote sequence number is
  answered 500 (§12.2.2; raised as ``RemoteProtocolError(status_hint=500)``).  ACK and CANCEL
  reuse the INVITE's number and are exempt.
* Target refresh requests (re-INVITE, UPDATE RFC 3311, SUBSCRIBE/NOTIFY RFC 6665) replace the
  remote target: on receipt for the UAS side (§12.2.2), on their 2xx for the UAC side (§12.2.1.2).
* A 481 or 408 to an in-dialog request ends the dialog (§12.2.1.2); so does BYE (§15).

The lifecycle is an Enum state table ``(state, input) -> (action, next_state)`` like the
transactions'; a missing pair is an input that does not apply and is ignored with the state
unchanged (a terminated dialog ignores everything).

One INVITE may fork into several early dialogs, one per remote tag; :class:`DialogSet` keeps them
and ends the early ones on a non-2xx final (§13.2.2.3/§13.2.2.4).  :class:`DialogTable` looks
dialogs up for incoming requests: a request with a To tag that matches no dialog raises
``RemoteProtocolError(481)`` (§12.2.2), which the TU turns into a 481 response.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sipcore.enums import FastEnum
from sipcore.errors import LocalProtocolError, ParseError, RemoteProtocolError
from sipcore.headers import Headers
from sipcore.message import Request, Response
from sipcore.uri import URI, SipURI, parse_name_addr


class DialogState(FastEnum):
    """§12: early (after a 1xx with tag), confirmed (after a 2xx), terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogInput(FastEnum):
    """What moves a dialog."""

    PROVISIONAL = "1xx"  # a 1xx with To tag to the dialog-creating INVITE
    SUCCESS = "2xx"  # a 2xx to the dialog-creating INVITE
    FAILURE = "300-699"  # a non-2xx final to the dialog-creating INVITE
    BYE = "bye"  # BYE sent or received (§15)
    REQUEST_FAILED = "481/408"  # an in-dialog request got 481 or 408 (§12.2.1.2)


class DialogAction(FastEnum):
    """What a transition does."""

    IGNORE = "ignore"
    UPDATE = "update"  # refresh remote target (and the UAC's route set) from the message
    CONFIRM = "confirm"  # same as UPDATE, and the dialog is now confirmed
    TERMINATE = "terminate"


DS, DI, DA = DialogState, DialogInput, DialogAction
DIALOG_TABLE: dict[tuple[DialogState, DialogInput], tuple[DialogAction, DialogState]] = {
    (DS.EARLY, DI.PROVISIONAL): (DA.UPDATE, DS.EARLY),
    (DS.EARLY, DI.SUCCESS): (DA.CONFIRM, DS.CONFIRMED),
    (DS.EARLY, DI.FAILURE): (DA.TERMINATE, DS.TERMINATED),
    (DS.EARLY, DI.BYE): (DA.TERMINATE, DS.TERMINATED),
    (DS.EARLY, DI.REQUEST_FAILED): (DA.TERMINATE, DS.TERMINATED),
    (DS.CONFIRMED, DI.SUCCESS): (DA.IGNORE, DS.CONFIRMED),  # a 2xx retransmission
    (DS.CONFIRMED, DI.BYE): (DA.TERMINATE, DS.TERMINATED),
    (DS.CONFIRMED, DI.REQUEST_FAILED): (DA.TERMINATE, DS.TERMINATED),
}

#: Requests that replace the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665 §4.1.3).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})

DialogId = tuple[str, str, str]


def dialog_transition(state: DialogState, event: DialogInput) -> tuple[DialogAction, DialogState]:
    """The table entry, or ``(IGNORE, state)`` for a pair that is not in the table."""
    return DIALOG_TABLE.get((state, event), (DialogAction.IGNORE, state))


def _first_contact(message: Request | Response) -> URI | None:
    try:
        contacts = message.contacts
    except ParseError:
        return None
    return contacts[0].uri if contacts else None


@dataclass(eq=False)
class Dialog:
    """One dialog (§12).  Build it with :meth:`from_uac` or :meth:`from_uas`."""

    call_id: str
    local_tag: str
    remote_tag: str
    #: Our party with our tag (the From of our requests) and theirs (the To), as header values.
    local_party: str
    remote_party: str
    remote_target: URI
    #: Route header values in the order our requests carry them.
    route_set: list[str]
    local_seq: int | None
    remote_seq: int | None
    is_uac: bool
    state: DialogState = DialogState.EARLY
    #: The Contact we put into our target refresh requests (None: leave it to the caller).
    local_contact: str | None = None
    #: §12.1.1: sips Request-URI over TLS.
    secure: bool = False
    #: CSeq number of the INVITE that created the dialog (ACK/CANCEL reuse it).
    invite_seq: int = 0

    @property
    def id(self) -> DialogId:
        """(Call-ID, local tag, remote tag)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    # ---------------------------------------------------------------------------- creation
    @classmethod
    def from_uac(
        cls, request: Request, response: Response, *, local_contact: str | None = None
    ) -> Dialog:
        """The UAC side, from our INVITE and a 1xx-with-tag or 2xx to it (§12.1.2)."""
        remote_tag = response.to_tag
        local_tag = request.from_tag
        if remote_tag is None or local_tag is None or not 101 <= response.status < 300:
            raise LocalProtocolError("only a 101-299 response with a To tag creates a dialog")
        dialog = cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=request.headers.get("From") or "",
            remote_party=response.headers.get("To") or "",
            remote_target=_first_contact(response) or request.uri,
            route_set=response.headers.get_all("Record-Route")[::-1],
            local_seq=request.cseq.seq,
            remote_seq=None,
            is_uac=True,
            state=DialogState.EARLY,
            local_contact=local_contact or request.headers.get("Contact"),
            secure=isinstance(request.uri, SipURI) and request.uri.scheme == "sips",
            invite_seq=request.cseq.seq,
        )
        if response.status >= 200:
            dialog.state = DialogState.CONFIRMED
        return dialog

    @classmethod
    def from_uas(
        cls, request: Request, response: Response, *, local_contact: str | None = None
    ) -> Dialog:
        """The UAS side, from the INVITE we received and our 1xx/2xx with a To tag (§12.1.1)."""
        local_tag = response.to_tag
        remote_tag = request.from_tag
        if local_tag is None or not 101 <= response.status < 300:
            raise LocalProtocolError("only a 101-299 response with a To tag creates a dialog")
        if remote_tag is None:
            # RFC 2543 peers may omit the From tag; the dialog then has an empty remote tag.
            remote_tag = ""
        dialog = cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=response.headers.get("To") or "",
            remote_party=request.headers.get("From") or "",
            remote_target=_first_contact(request) or request.uri,
            route_set=request.headers.get_all("Record-Route"),
            local_seq=None,
            remote_seq=request.cseq.seq,
            is_uac=False,
            state=DialogState.EARLY,
            local_contact=local_contact or response.headers.get("Contact"),
            secure=isinstance(request.uri, SipURI) and request.uri.scheme == "sips",
            invite_seq=request.cseq.seq,
        )
        if response.status >= 200:
            dialog.state = DialogState.CONFIRMED
        return dialog

    # ---------------------------------------------------------------------------- the table
    def _apply(self, event: DialogInput, message: Request | Response | None) -> DialogAction:
        action, self.state = dialog_transition(self.state, event)
        if action in (DialogAction.UPDATE, DialogAction.CONFIRM) and message is not None:
            target = _first_contact(message)
            if target is not None:
                self.remote_target = target
            if self.is_uac and isinstance(message, Response) and action is DialogAction.CONFIRM:
                # §13.2.2.4: the route set comes from the 2xx that confirms the dialog.
                self.route_set = message.headers.get_all("Record-Route")[::-1]
        return action

    def terminate(self) -> None:
        """End the dialog locally (e.g. after the TU gave up on it)."""
        self.state = DialogState.TERMINATED

    # ---------------------------------------------------------------------------- UAS side
    def send_response(self, response: Response) -> DialogAction:
        """We answer the dialog-creating INVITE (UAS): 2xx confirms, >= 300 ends the dialog."""
        if response.cseq.method != "INVITE" or response.cseq.seq != self.invite_seq:
            return DialogAction.IGNORE
        if response.status < 200:
            return self._apply(DialogInput.PROVISIONAL, None)
        if response.status < 300:
            return self._apply(DialogInput.SUCCESS, None)
        return self._apply(DialogInput.FAILURE, None)

    def receive_request(self, request: Request) -> DialogAction:
        """An in-dialog request arrived (§12.2.2).

        Raises ``RemoteProtocolError(500)`` when its CSeq is lower than the remote sequence
        number; updates the remote target for target refresh requests; BYE ends the dialog.
        """
        method = request.method
        seq = request.cseq.seq
        if method in ("ACK", "CANCEL"):
            return DialogAction.IGNORE
        if self.remote_seq is not None and seq < self.remote_seq:
            raise RemoteProtocolError("CSeq out of order", 500)
        self.remote_seq = seq
        if method == "BYE":
            return self._apply(DialogInput.BYE, None)
        if method in TARGET_REFRESH and self.state is not DialogState.TERMINATED:
            target = _first_contact(request)
            if target is not None:
                self.remote_target = target
            return DialogAction.UPDATE
        return DialogAction.IGNORE

    # ---------------------------------------------------------------------------- UAC side
    def receive_response(self, response: Response) -> DialogAction:
        """A response to a request of this dialog (the creating INVITE or a later request)."""
        cseq = response.cseq
        status = response.status
        if cseq.method == "INVITE" and cseq.seq == self.invite_seq and self.is_uac:
            if status < 200:
                return self._apply(DialogInput.PROVISIONAL, response) if status > 100 else \
                    DialogAction.IGNORE
            if status < 300:
                return self._apply(DialogInput.SUCCESS, response)
            return self._apply(DialogInput.FAILURE, response)
        if status in (481, 408):
            return self._apply(DialogInput.REQUEST_FAILED, response)
        if 200 <= status < 300 and cseq.method in TARGET_REFRESH:
            target = _first_contact(response)
            if target is not None and self.state is not DialogState.TERMINATED:
                self.remote_target = target
                return DialogAction.UPDATE
        return DialogAction.IGNORE

    # ----------------------------------------------------------------------- building requests
    def _route(self) -> tuple[URI, list[str]]:
        """§12.2.1.1: Request-URI and Route header values for the next request."""
        routes = self.route_set
        if not routes:
            return self.remote_target, []
        first = parse_name_addr(routes[0]).uri
        if isinstance(first, SipURI) and not first.lr:
            # Strict router: it goes in the Request-URI, the remote target goes last in Route.
            uri = first.copy()
            uri.params.pop("method", None)
            uri.headers.clear()
            return uri, [*routes[1:], f"<{self.remote_target}>"]
        return self.remote_target, list(routes)

    def _headers(self, method: str, seq: int, routes: list[str]) -> Headers:
        return Headers([
            *(("Route", route) for route in routes),
            ("Max-Forwards", "70"),
            ("From", self.local_party),
            ("To", self.remote_party),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
        ])

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Request:
        """A new in-dialog request (§12.2.1.1) with the next local CSeq.  The endpoint adds
        Via when sending it.  BYE ends the dialog (§15).  Use :meth:`create_ack` for ACK;
        CANCEL is :meth:`sipcore.endpoint.Endpoint.cancel`'s business."""
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{method} is not built by create_request")
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError("the dialog is terminated")
        self.local_seq = (self.local_seq or 0) + 1
        uri, routes = self._route()
        headers = self._headers(method, self.local_seq, routes)
        if self.local_contact and method in TARGET_REFRESH:
            headers.add("Contact", self.local_contact)
        for name, value in extra or ():
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        if method == "BYE":
            self._apply(DialogInput.BYE, None)
        return Request(method, uri, headers, body)

    def create_ack(self, seq: int | None = None, *, body: bytes = b"",
                   content_type: str | None = None) -> Request:  # fmt: skip
        """The ACK for a 2xx to the INVITE with CSeq ``seq`` (default: the creating one),
        §13.2.2.4: same CSeq number, method ACK, the dialog's route."""
        uri, routes = self._route()
        headers = self._headers("ACK", self.invite_seq if seq is None else seq, routes)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request("ACK", uri, headers, body)


class DialogTable:
    """All dialogs of a UA, by (Call-ID, local tag, remote tag) (§12.2.2)."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        """Register a dialog (replacing one with the same id)."""
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        """Forget a dialog (no error when it is not there)."""
        if self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]

    def get(self, dialog_id: DialogId) -> Dialog | None:
        """The dialog with that id, or None."""
        return self._dialogs.get(dialog_id)

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def match_request(self, request: Request) -> Dialog | None:
        """The dialog an incoming request belongs to.

        None when the request has no To tag (it is not in a dialog).  A request with a To tag
        that matches no live dialog raises ``RemoteProtocolError(481)`` (§12.2.2), except ACK,
        which is never answered and gives None.
        """
        local_tag = request.to_tag
        if local_tag is None:
            return None
        dialog = self._dialogs.get((request.call_id, local_tag, request.from_tag or ""))
        if dialog is None or dialog.state is DialogState.TERMINATED:
            if request.method == "ACK":
                return None
            raise RemoteProtocolError("Call/Transaction Does Not Exist", 481)
        return dialog

    def match_response(self, response: Response) -> Dialog | None:
        """The dialog a response belongs to (our From tag is the local tag), or None."""
        remote_tag = response.to_tag
        local_tag = response.from_tag
        if remote_tag is None or local_tag is None:
            return None
        return self._dialogs.get((response.call_id, local_tag, remote_tag))

    def dispatch_request(self, request: Request) -> Dialog | None:
        """:meth:`match_request` then :meth:`Dialog.receive_request`; a dialog ended by the
        request (BYE) is removed from the table."""
        dialog = self.match_request(request)
        if dialog is not None:
            dialog.receive_request(request)
            if dialog.state is DialogState.TERMINATED:
                self.remove(dialog)
        return dialog


class DialogSet:
    """The dialogs one INVITE of ours creates: several early ones when it forks, each keyed by
    its remote tag (§12.1.2, §13.2.2.4).  Registered in ``table`` when one is given."""

    def __init__(
        self,
        request: Request,
        table: DialogTable | None = None,
        *,
        local_contact: str | None = None,
    ) -> None:
        self.request = request
        self.table = table
        self.local_contact = local_contact
        self.dialogs: dict[str, Dialog] = {}
        #: Set once a non-2xx final response ended the INVITE.
        self.failed = False

    def receive_response(self, response: Response) -> Dialog | None:
        """Feed a response to the INVITE; returns the dialog it concerns (None for 100,
        for a 1xx without To tag and for a non-2xx final, which ends all early dialogs)."""
        status = response.status
        if status >= 300:
            self.failed = True
            for dialog in self.dialogs.values():
                dialog.receive_response(response)
                if dialog.state is DialogState.TERMINATED and self.table is not None:
                    self.table.remove(dialog)
            return None
        tag = response.to_tag
        if tag is None or status == 100:
            if status >= 200:
                raise RemoteProtocolError("2xx without To tag", 400)
            return None
        existing = self.dialogs.get(tag)
        if existing is not None:
            existing.receive_response(response)
            return existing
        dialog = Dialog.from_uac(self.request, response, local_contact=self.local_contact)
        self.dialogs[tag] = dialog
        if self.table is not None:
            self.table.add(dialog)
        return dialog

    @property
    def early(self) -> list[Dialog]:
        """The early dialogs (one per answering branch that has not answered yet)."""
        return [d for d in self.dialogs.values() if d.state is DialogState.EARLY]

    @property
    def confirmed(self) -> list[Dialog]:
        """The confirmed dialogs (more than one when several branches answered 2xx)."""
        return [d for d in self.dialogs.values() if d.state is DialogState.CONFIRMED]
