"""The pure rules of services: URLs, what a health answer means, secrets, captured bodies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apphub.domain.services import (
    MASK,
    RESPONSE_TEXT_LIMIT,
    HealthReading,
    MissingSecretError,
    UnsendableHeaderError,
    captured_response,
    check_base_url,
    classify_health,
    masked_headers,
    refusal,
    resolve_headers,
    service_url,
)
from apphub.domain.workflows import SecretHeader


def secret(key: str, prefix: str | None = None) -> SecretHeader:
    return SecretHeader.model_validate({"secret": {"source": "env", "key": key}, "prefix": prefix})


@pytest.mark.parametrize(
    ("url", "expected"),
    [("http://svc:8080/", "http://svc:8080"), ("https://api.example/v1", "https://api.example/v1")],
)
def test_base_urls_are_kept_without_a_trailing_slash(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://files.example", "http"),
        ("file:///etc/passwd", "http"),
        ("//api.example", "http"),
        ("http://", "host"),
        ("https://u:p@api.example", "credentials"),
        ("https://api.example?x=1", "query"),
        ("https://api.example#top", "query"),
        ("https://api.example?", "query"),
        ("https://api.example/#", "query"),
        ("http://api.example:99999", "valid"),
    ],
)
def test_bad_base_urls_say_why(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_base_url(url)


def test_paths_stay_on_the_service() -> None:
    assert service_url("http://svc/v1", "/items") == "http://svc/v1/items"
    assert service_url("http://svc/v1/", "items?x=1") == "http://svc/v1/items?x=1"
    for escape in ("http://evil.example/x", "//evil.example/x"):
        with pytest.raises(ValueError, match="not a URL"):
            service_url("http://svc", escape)
    with pytest.raises(ValueError, match="control characters"):
        service_url("http://svc", "/a\x01b")


@pytest.mark.parametrize(
    ("reading", "status"),
    [
        (HealthReading(200, '{"status": "ok"}'), "healthy"),
        (HealthReading(204, ""), "healthy"),
        (HealthReading(200, "plain text"), "healthy"),
        (HealthReading(200, '{"status": "Degraded"}'), "degraded"),
        (HealthReading(200, '{"status": "warn"}'), "degraded"),
        (HealthReading(200, '{"status": "down"}'), "unhealthy"),
        (HealthReading(200, '["degraded"]'), "healthy"),
        (HealthReading(503, '{"status": "ok"}'), "unhealthy"),
        (HealthReading(301, ""), "unhealthy"),
        (HealthReading(None, error="connection refused"), "unhealthy"),
    ],
)
def test_health_answers(reading: HealthReading, status: str) -> None:
    assert classify_health(reading)[0] == status


def test_unhealthy_readings_say_why() -> None:
    assert classify_health(HealthReading(503))[1] == "health check answered 503"
    assert classify_health(HealthReading(None, error="timed out"))[1] == "timed out"
    assert classify_health(HealthReading(200, "{}"))[1] is None


@pytest.mark.parametrize(
    ("status", "require", "degraded_ok", "refused"),
    [
        ("healthy", True, False, False),
        ("degraded", True, False, True),
        ("degraded", True, True, False),
        ("unhealthy", True, True, True),
        ("unknown", True, False, True),
        ("unhealthy", False, False, False),
    ],
)
def test_health_gate(status: str, require: bool, degraded_ok: bool, refused: bool) -> None:
    assert (refusal(status, require, degraded_ok) is not None) is refused  # type: ignore[arg-type]


def test_secrets_are_read_at_call_time_and_never_shown() -> None:
    headers = {"Authorization": secret("TOKEN", "Bearer "), "X-Key": secret("KEY"), "A": "b"}
    env = {"TOKEN": "t0k", "KEY": "k3y"}
    assert resolve_headers(headers, env) == {
        "Authorization": "Bearer t0k",
        "X-Key": "k3y",
        "A": "b",
    }
    assert masked_headers(headers) == {"Authorization": MASK, "X-Key": MASK, "A": "b"}
    with pytest.raises(MissingSecretError) as missing:
        resolve_headers(headers, {"TOKEN": "t0k"})
    assert missing.value.key == "KEY"
    assert "k3y" not in str(missing.value)


@pytest.mark.parametrize("value", ["abc\r\nX-Injected: 1", "caf\u00e9", "nul\x00"])
def test_a_value_no_header_can_carry_is_refused_naming_the_key_not_the_value(value: str) -> None:
    with pytest.raises(UnsendableHeaderError) as refused:
        resolve_headers({"Authorization": secret("TOKEN", "Bearer ")}, {"TOKEN": value})
    assert "TOKEN" in str(refused.value)
    assert value not in str(refused.value)
    with pytest.raises(UnsendableHeaderError, match="X-Plain"):
        resolve_headers({"X-Plain": value}, {})
    assert resolve_headers({"X-Tab": "a\tb"}, {}) == {"X-Tab": "a\tb"}


def test_json_bodies_are_parsed_and_text_is_cut() -> None:
    json_headers = {"content-type": "application/json; charset=utf-8"}
    parsed = captured_response(200, json_headers, b'{"ok": true}', truncated=False)
    assert parsed == {"statusCode": 200, "headers": json_headers, "body": {"ok": True}}
    sniffed = captured_response(200, {}, b"[1, 2]", truncated=False)
    assert sniffed["body"] == [1, 2]
    text = captured_response(500, {"content-type": "text/plain"}, b"x" * 9000, truncated=False)
    assert text["body"] == "x" * RESPONSE_TEXT_LIMIT
    broken = captured_response(200, json_headers, b'{"ok": tru', truncated=False)
    assert broken["body"] == '{"ok": tru'
    cut = captured_response(200, json_headers, b'{"a": "' + b"y" * 10_000, truncated=True)
    assert isinstance(cut["body"], str)
    assert len(cut["body"]) == RESPONSE_TEXT_LIMIT


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_any_json_body_round_trips(value: object) -> None:
    content = json.dumps(value).encode()
    captured = captured_response(200, {"content-type": "application/json"}, content, False)
    assert captured["body"] == value
