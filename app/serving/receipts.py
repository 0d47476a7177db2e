"""Signed receipts: each answer carries what `POST /feedback` needs, signed, so any worker or replica can verify it.

A receipt is `<payload>.<tag>`: the payload is the request id and the inference fields a feedback
event copies (base64url JSON), the tag an HMAC-SHA256 of it under `VQA_RECEIPT_KEY`. Verifying needs
the key only: no shared memory, no Elasticsearch lookup, no wait for the inference event to arrive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from typing import Any

from app.events import schema as events

log = logging.getLogger(__name__)

# What a feedback event copies from the inference it labels, in the payload's order.
RECEIPT_FIELDS = (
    events.REQUEST_ID, events.QUESTION, events.ANSWER, events.MODEL_VERSION, events.ADAPTER_VERSION,
    events.IMAGE_PATH,
)
TAG_BYTES = 16  # 128 bits of HMAC-SHA256: forging one is out of reach, and the receipt stays short


class ReceiptError(ValueError):
    """A receipt that this service did not issue, or that was altered."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Receipts:
    """Issues and verifies receipts under one key."""

    def __init__(self, key: str):
        if not key:
            # Only this process can verify its receipts; gunicorn gives its workers a shared key,
            # and several replicas need VQA_RECEIPT_KEY set to the same value.
            log.warning("VQA_RECEIPT_KEY is empty: receipts verify only in this process")
            key = secrets.token_hex(32)
        self._key = key.encode()

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:TAG_BYTES]

    def issue(self, doc: dict[str, Any]) -> str:
        """The receipt of an inference event `doc`."""
        payload = json.dumps([doc.get(name) for name in RECEIPT_FIELDS], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._tag(payload))}"

    def verify(self, receipt: Any) -> dict[str, Any]:
        """The inference fields a genuine receipt carries; ReceiptError for anything else."""
        if not isinstance(receipt, str) or receipt.count(".") != 1:
            raise ReceiptError("`receipt` is not a receipt from /predict (expected `<payload>.<signature>`)")
        payload_text, tag_text = receipt.split(".")
        try:
            payload, tag = _unb64(payload_text), _unb64(tag_text)
        except (binascii.Error, ValueError) as exc:
            raise ReceiptError("`receipt` is not valid base64url") from exc
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise ReceiptError("`receipt` was not issued by this service or was altered")
        values = json.loads(payload)
        return {name: value for name, value in zip(RECEIPT_FIELDS, values, strict=True) if value is not None}
