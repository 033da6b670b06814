"""Run a SIPVicious tool with its ``-b/--bindingip`` honoured.

``python -m tests.security.sipvicious_run svwar|svcrack ARGS…`` runs ``sipvicious_svwar`` /
``sipvicious_svcrack`` (PyPI ``sipvicious``) unchanged, except that the address given with
``-b`` reaches the scanner's socket: sipvicious 0.3.8 parses the option but never passes it to
the scanner class, which then binds 0.0.0.0 and — towards a server on 127.0.0.1 — sends from
127.0.0.1, the address the test harness trusts. The security suite plays attackers on
127.0.0.2 … (SECURITY.md), so it must bind them there.
"""

from __future__ import annotations

import sys
from typing import Any


def _binding_ip(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg in ("-b", "--bindingip") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--bindingip="):
            return arg.split("=", 1)[1]
    return ""


def main() -> None:
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "svwar":
        from sipvicious import svwar as module
        cls: Any = module.TakeASip
    elif tool == "svcrack":
        from sipvicious import svcrack as module  # type: ignore[no-redef]
        cls = module.ASipOfRedWine
    else:
        raise SystemExit(f"unknown tool {tool!r} (svwar or svcrack)")
    bind = _binding_ip(args)
    original = cls.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        kw.setdefault("bindingip", bind)
        original(self, *a, **kw)

    cls.__init__ = init
    sys.argv = [f"sipvicious_{tool}", *args]
    module.main()


if __name__ == "__main__":
    main()
