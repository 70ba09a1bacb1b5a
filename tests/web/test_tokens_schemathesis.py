"""Schemathesis on the token operations alone (the whole-API run in test_schemathesis covers
them too, with fewer examples each): real Hypercorn over TLS, a logged-in session for the
token management routes; the exchange and JWKS need none. 0 server errors, 0 answers that
break the document."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from web import WebListener, serve_web

from ..conftest import Pki
from .conftest import WebRig
from .test_schemathesis import SEED, answered, logged_in

pytestmark = pytest.mark.timeout(180)

OPERATIONS = (
    "get_tokens",
    "post_tokens",
    "delete_tokens_token_id",
    "post_auth_token",
    "get_auth_jwks_json",
)
EXAMPLES = int(os.environ.get("PM_SCHEMATHESIS_EXAMPLES", "60"))


async def test_token_operations_have_no_server_errors_and_keep_their_schema(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki, tmp_path: Path
) -> None:
    stop = trio.Event()
    listener = WebListener("127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path)
    urls = await nursery.start(partial(serve_web, web_rig.app, listener, stop.wait))
    base = urls[0]
    cookie, csrf = await logged_in(base, web_rig, pki)
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base}/api/v1/openapi.json",
        "--checks=not_a_server_error,response_schema_conformance",
        f"--seed={SEED}",
        f"--max-examples={EXAMPLES}",
        "--generation-database=none",
        "--no-shrink",
        "--workers=1",
        "--phases=examples,coverage,fuzzing",
        f"--tls-verify={pki.ca.root_cert_path}",
        f"--header=Cookie: pm_session={cookie}",
        f"--header=X-CSRF-Token: {csrf}",
        # The document's bearer scheme makes schemathesis invent an Authorization: Bearer
        # header, which outranks the cookie (and tokens never reach these routes): another
        # scheme, as a reverse proxy may add, is not ours and leaves the session in charge.
        "--header=Authorization: Basic cHJveHk6cHJveHk=",
        "--request-timeout=10",
        "--no-color",
        "--report=har",
        f"--report-dir={tmp_path}",
        *[f"--include-operation-id={name}" for name in OPERATIONS],
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    with trio.fail_after(150):
        result = await trio.run_process(
            command, capture_stdout=True, stderr=subprocess.STDOUT, check=False, env=env,
            cwd=tmp_path,
        )  # fmt: skip
    stop.set()
    output = result.stdout.decode()
    assert result.returncode == 0, output[-6000:]
    assert "Server error" not in output
    assert f"Selected: {len(OPERATIONS)}/" in output, output[-3000:]
    assert f"Tested: {len(OPERATIONS)}" in output, output[-3000:]
    statuses = answered(tmp_path)  # the session opened the operations: none was a 401
    for operation, success in [("POST /tokens", 201), ("GET /tokens", 200),
                               ("DELETE /tokens/{id}", 204)]:  # fmt: skip
        assert statuses[operation][success] > 0, (operation, dict(statuses[operation]))
        assert statuses[operation][401] == 0, (operation, dict(statuses[operation]))
