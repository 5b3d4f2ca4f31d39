"""The relay's token: when one is needed, how it is compared, the URL printed, the log."""

from __future__ import annotations

import hmac
import logging

import pytest

from scope_relay.local.access import token as token_module
from scope_relay.local.access.token import RedactToken, TokenPolicy, page_url, token_needed


def test_a_token_is_needed_beyond_loopback_or_when_required():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        assert not token_needed(host, require_locally=False), host
        assert token_needed(host, require_locally=True), host
    for host in ("0.0.0.0", "::", "", "192.168.1.20", "127.0.0.2"):
        assert token_needed(host, require_locally=False), host


def test_every_comparison_is_constant_time_over_equal_lengths(monkeypatch):
    """Wrong tokens of any length or prefix reach one ``hmac.compare_digest`` of two
    32-byte digests: nothing about them changes what is compared, so by construction
    the timing says nothing."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(token_module.hmac, "compare_digest", recording)
    policy = TokenPolicy("s3cret-token")
    candidates = ["", "s", "s3cret-toke", "s3cret-tokeX", "s3cret-token-and-more", "é" * 50]
    assert [policy.matches(c) for c in candidates] == [False] * len(candidates)
    assert policy.matches("s3cret-token")
    assert not policy.cookie_matches("s3cret-token")  # the cookie is not the token
    assert policy.cookie_matches(policy.cookie_value())
    assert calls and set(calls) == {(32, 32)}, calls
    assert len(calls) == len(candidates) + 3


def test_an_empty_token_is_refused():
    with pytest.raises(ValueError, match="empty"):
        TokenPolicy("")


def test_the_url_names_the_lan_host_and_quotes_the_token():
    assert page_url("0.0.0.0", ["192.168.1.20"], 8000, "a/b+c") == \
        "http://192.168.1.20:8000/?token=a%2Fb%2Bc"
    assert page_url("10.0.0.5", [], 8000, "t") == "http://10.0.0.5:8000/?token=t"
    assert page_url("0.0.0.0", [], 8000, "t") == "http://127.0.0.1:8000/?token=t"
    assert page_url("::", ["fe80::1"], 80, "t") == "http://[fe80::1]:80/?token=t"


def test_the_access_log_never_shows_the_token():
    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1,
                               '%s "GET /?token=%s HTTP/1.1" 303', ("127.0.0.3", "a/b"), None)
    assert RedactToken("a/b").filter(record)
    assert record.getMessage() == '127.0.0.3 "GET /?token=<token> HTTP/1.1" 303'
    quoted = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1,
                               "GET /?token=a%2Fb", None, None)
    RedactToken("a/b").filter(quoted)
    assert quoted.getMessage() == "GET /?token=<token>"
