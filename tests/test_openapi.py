"""Schemathesis against a live gunicorn: generated requests to every endpoint never get a 5xx, and
every response matches /openapi.json (status codes, content types, bodies)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
TOKEN = "schemathesis-token"


@pytest.mark.slow
def test_generated_requests_get_no_5xx_and_match_the_schema(settings, gunicorn):
    """Hundreds of generated cases (valid and invalid bodies, every endpoint, with the tokens the protected
    ones need): none answers 5xx, every answer matches the description."""
    base = gunicorn({**settings.to_env(), "VQA_ADMIN_TOKEN": TOKEN, "VQA_FEEDBACK_TOKEN": TOKEN})
    done = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", f"{base}/openapi.json", "--checks", CHECKS,
         "--max-examples", "40", "--seed", "1", "--request-timeout", "30", "--no-color",
         "-H", f"Authorization: Bearer {TOKEN}"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", done.stdout).groups())
    assert generated >= 200 and passed == generated, done.stdout[-3000:]
    assert "Authentication failed" not in done.stdout, done.stdout[-3000:]
