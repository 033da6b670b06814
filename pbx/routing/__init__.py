"""Routing in one place: the dial plan (:mod:`.dialplan`), the directory-backed
:class:`~.router.Router` (users, DIDs, trunks, permissions) and :class:`~.calls.CallRouter`,
which routes a call's dialled string on behalf of a user or a trunk's caller."""
