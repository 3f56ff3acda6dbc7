"""Unit tests of the small pure pieces: link expiry, single-flight refresh, parsing, redaction."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from dcs_backup import BackupLink, BackupLinks, LinkExpiredError
from dcs_backup._links import LinkSource, link_expires_at
from dcs_backup._obs import normalize_etag, parse_content_range, parse_obs_error
from dcs_backup._redact import redact


def links_expiring(at: float, names: tuple[str, ...] = ("a.rdb", "b.rdb")) -> BackupLinks:
    return BackupLinks(
        "p/",
        "bkt",
        tuple(
            BackupLink(n, f"https://b.obs/p/{n}?AWSAccessKeyId=K&Expires={int(at)}&Signature=S%2B")
            for n in names
        ),
    )


def test_link_expiry_v2_and_v4() -> None:
    assert link_expires_at("https://x/o?AWSAccessKeyId=a&Expires=1566308915&Signature=s") == (
        1566308915
    )
    v4 = "https://x/o?X-Amz-Date=20190820T120000Z&X-Amz-Expires=600&X-Amz-Signature=s"
    assert link_expires_at(v4) == 1566302400 + 600
    assert link_expires_at("https://x/o?foo=bar") is None
    assert link_expires_at("https://x/o?X-Amz-Date=garbage&X-Amz-Expires=600") is None


async def test_many_refreshes_at_once_make_one_call() -> None:
    calls = 0

    async def refresh() -> BackupLinks:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return links_expiring(time.time() + 3600)

    source = LinkSource(links_expiring(time.time() - 1), refresh)
    _, generation = source.current("a.rdb")
    await asyncio.gather(*(source.refresh(generation, reason="test") for _ in range(20)))
    assert calls == 1
    # A task that saw the old link after the refresh finished gets the new one for free.
    await source.refresh(generation, reason="late")
    assert calls == 1 and source.refresh_count == 1
    _, newer = source.current("b.rdb")
    await source.refresh(newer, reason="really expired again")
    assert calls == 2


async def test_short_lived_links_do_not_refresh_before_every_request() -> None:
    calls = 0

    async def refresh() -> BackupLinks:
        nonlocal calls
        calls += 1
        return links_expiring(time.time() + 10)

    # Links that live 10 s with a 60 s margin: a fresh one is used, not refreshed at once.
    source = LinkSource(links_expiring(time.time() + 10), refresh, margin=60)
    for _ in range(5):
        await source.fresh("a.rdb")
    assert calls == 0
    # A link fetched 100 s ago with 10 s left is in its last quarter: refreshed before use.
    source = LinkSource(links_expiring(time.time() + 10), refresh, margin=60)
    entry = source._entries["a.rdb"]
    source._entries["a.rdb"] = dataclasses.replace(entry, fetched_at=entry.fetched_at - 100)
    await source.fresh("a.rdb")
    assert calls == 1


async def test_expired_link_without_refresh_is_a_clear_error() -> None:
    source = LinkSource(links_expiring(time.time() - 5), None)
    with pytest.raises(LinkExpiredError, match=r"a\.rdb has expired.*credentials"):
        await source.fresh("a.rdb")


def test_expiry_is_judged_by_the_server_clock() -> None:
    source = LinkSource(links_expiring(time.time() + 100), None)
    assert not source.is_expired("a.rdb")
    source.observe_server_date(time.time() + 3600)  # the server is an hour ahead
    assert source.is_expired("a.rdb")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 100-199/200", (100, 199, 200)),
        ("bytes 0-0/5", (0, 0, 5)),
        ("bytes 5-4/10", None),
        ("bytes 5-10/10", None),
        ("bytes */10", None),
        ("items 1-2/3", None),
        ("", None),
        (None, None),
        ("bytes 1-2/*", (1, 2, None)),
    ],
)
def test_content_range(header: str | None, expected: tuple[int, int, int | None] | None) -> None:
    span = parse_content_range(header)
    assert (None if span is None else (span.start, span.end, span.total)) == expected


def test_obs_error_and_etag() -> None:
    body = (
        "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
        "<RequestId>1</RequestId></Error>"
    )
    assert parse_obs_error(body).is_expired
    assert not parse_obs_error("<Error><Code>AccessDenied</Code></Error>").is_expired
    assert parse_obs_error("<html>").code == ""
    assert normalize_etag('"abc"') == "abc" and normalize_etag('W/"x"') == "x"
    assert normalize_etag(None) is None


def test_redaction() -> None:
    url = "https://b.obs.example.com:443/p/f.rdb?AWSAccessKeyId=AKIDX&Expires=99&Signature=abc%2Bd"
    assert redact(url) == (
        "https://b.obs.example.com:443/p/f.rdb?AWSAccessKeyId=REDACTED&Expires=99"
        "&Signature=REDACTED"
    )
    v4 = "https://h/o?X-Amz-Credential=AK%2F2019&X-Amz-Signature=ff00&x=1"
    assert "AK%2F2019" not in redact(v4) and "ff00" not in redact(v4) and "x=1" in redact(v4)
    auth = (
        "Authorization: SDK-HMAC-SHA256 Access=MYAK, SignedHeaders=host;x-sdk-date, Signature=0a1b"
    )
    assert "MYAK" not in redact(auth) and "0a1b" not in redact(auth)
    assert "tok123" not in redact("{'X-Security-Token': 'tok123'}")
