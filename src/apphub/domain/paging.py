"""Opaque keyset cursors: a client can pass them back but should not build them."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


class InvalidCursorError(ValueError):
    pass


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps({"v": 1, **position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursorError("cursor is not one this server issued") from None
    if not isinstance(position, dict) or position.get("v") != 1:
        raise InvalidCursorError("cursor is not one this server issued")
    return position
