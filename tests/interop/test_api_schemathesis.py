"""schemathesis against the live server's OpenAPI document: every operation (but the
WebSocket and token revocation) with generated valid and invalid input, as a tenant admin — no 5xx, every response
has a documented status and content type and matches its schema."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import running_pbx
from tests.interop.test_calls_sipp import USERS

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    tool = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    tokens: dict[str, str] = {}

    def setup(store: Any) -> None:
        tenant = store.tenant("default")
        tokens["admin"] = store.create_api_token(role="tenant_admin", tenant_id=tenant.id,
                                                 now=time.time())[0]
        store.add_number("+49 30 5550100", user="100")

    with running_pbx(tmp_path, transports=("udp",), users=USERS, store_setup=setup) as pbx:
        host, port = pbx.addr("http")
        run = subprocess.run(
            [tool, "run", f"http://{host}:{port}/api/v1/openapi.json",
             "-H", f"Authorization: Bearer {tokens['admin']}",
             "--checks", "not_a_server_error,response_schema_conformance,"
                         "status_code_conformance,content_type_conformance",
             # the WebSocket is not HTTP request/response; revoking could hit our own token
             "--exclude-operation-id", "events", "--exclude-operation-id", "revoke_token",
             "--max-examples", "10",
             "--phases", "coverage,fuzzing", "-w", "1", "--seed", "1"],
            capture_output=True, text=True, timeout=600, check=False,
            cwd=tmp_path)  # its cache stays out of the work tree
    summary = run.stdout[-4000:]
    assert run.returncode == 0, summary + run.stderr[-2000:]
    cases = re.search(r"Test cases:\s*\n\s*(\d+) generated, (\d+) passed\s*$", summary, re.M)
    assert cases is not None and cases.group(1) == cases.group(2), summary
    assert int(cases.group(1)) > 500, summary
