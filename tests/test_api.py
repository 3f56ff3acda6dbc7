"""Unit tests of the DCS API client against canned answers (aioresponses)."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import ClientResponse
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

from dcs_backup import (
    ApiError,
    AuthError,
    Client,
    ConfigError,
    Credentials,
    DcsBackupError,
    MalformedResponseError,
    NotFoundError,
    RetryPolicy,
    UnsafeNameError,
)

BASE = "https://dcs.test-1.myhuaweicloud.com/v2/pid/instances/i1"
BACKUPS = re.compile(
    r"^https://dcs\.test-1\.myhuaweicloud\.com/v2/pid/instances/i1/backups(\?.*)?$"
)
LINKS = re.compile(
    r"^https://dcs\.test-1\.myhuaweicloud\.com/v2/pid/instances/i1/backups/b1/links$"
)
FAST = RetryPolicy(attempts=3, timeout=10, wait_initial=0, wait_max=0)


def record(n: int, status: str = "succeed") -> dict[str, Any]:
    return {
        "backup_id": f"b{n}",
        "instance_id": "i1",
        "status": status,
        "size": 100 + n,
        "created_at": f"2026-11-{n % 28 + 1:02d}T00:00:{n % 60:02d}.000Z",
        "backup_format": "rdb",
    }


def link(name: str) -> dict[str, str]:
    return {
        "file_name": name,
        "link": f"https://bucket.obs.example.com/p/{name}?Expires=1&Signature=x",
    }


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    creds = Credentials(ak="ak-test-value", sk="sk-test-value", project_id="pid")
    async with Client(credentials=creds, region="test-1", retry=FAST) as c:
        yield c


class _CompatResponse(ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument
    (pnuckowski/aioresponses#289); supply a stand-in so canned answers can be built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture(autouse=True)
def _aioresponses_compat(monkeypatch: pytest.MonkeyPatch) -> None:
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)


@pytest.fixture
def mock() -> Any:
    with aioresponses() as m:
        yield m


def calls(mock: Any) -> list[tuple[str, str]]:
    return [(method, str(url)) for (method, url), reqs in mock.requests.items() for _ in reqs]


async def test_list_backups_reads_every_page(client: Client, mock: Any) -> None:
    records = [record(n) for n in range(25)]
    for offset in (0, 10, 20):
        mock.get(
            BACKUPS,
            payload={"total_num": 25, "backup_record_response": records[offset : offset + 10]},
        )
    backups = await client.list_backups("i1", page_size=10)
    assert len(backups) == 25
    offsets = sorted(re.search(r"offset=(\d+)", url).group(1) for _, url in calls(mock))  # type: ignore[union-attr]
    assert offsets == ["0", "10", "20"]
    assert [b.created_at for b in backups] == sorted((b.created_at for b in backups), reverse=True)
    request = next(iter(mock.requests.values()))[0]
    headers = request.kwargs["headers"]
    assert headers["Authorization"].startswith("SDK-HMAC-SHA256 Access=ak-test-value, ")
    assert headers["X-Project-Id"] == "pid"


async def test_no_backups_is_204(client: Client, mock: Any) -> None:
    mock.get(BACKUPS, status=204)
    assert await client.list_backups("i1") == []


async def test_latest_backup_is_newest_succeeded(client: Client, mock: Any) -> None:
    mock.get(
        BACKUPS,
        payload={
            "total_num": 3,
            "backup_record_response": [record(1), record(5, status="backuping"), record(3)],
        },
    )
    assert (await client.latest_backup("i1")).backup_id == "b3"


async def test_retries_429_and_5xx_then_succeeds(client: Client, mock: Any) -> None:
    mock.get(
        BACKUPS,
        status=429,
        headers={"Retry-After": "0"},
        payload={"error_code": "APIGW.0308", "error_msg": "throttled"},
    )
    mock.get(BACKUPS, status=503, body="<html>bad gateway</html>")
    mock.get(BACKUPS, payload={"total_num": 1, "backup_record_response": [record(1)]})
    assert [b.backup_id for b in await client.list_backups("i1")] == ["b1"]
    assert len(calls(mock)) == 3


async def test_connection_errors_are_retried_then_reported(client: Client, mock: Any) -> None:
    import aiohttp

    for _ in range(3):
        mock.get(BACKUPS, exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(DcsBackupError, match="ServerDisconnected"):
        await client.list_backups("i1")
    assert len(calls(mock)) == 3


async def test_persistent_500_gives_typed_error(client: Client, mock: Any) -> None:
    for _ in range(3):
        mock.get(
            BACKUPS,
            status=500,
            headers={"X-Request-Id": "req-9"},
            payload={"error_code": "DCS.5000", "error_msg": "internal"},
        )
    with pytest.raises(ApiError) as info:
        await client.list_backups("i1")
    assert (info.value.status, info.value.error_code, info.value.request_id) == (
        500,
        "DCS.5000",
        "req-9",
    )


async def test_401_is_auth_error_and_not_retried(client: Client, mock: Any) -> None:
    mock.get(
        BACKUPS,
        status=401,
        headers={"X-Request-Id": "r1"},
        payload={
            "error_code": "APIGW.0301",
            "error_msg": "Incorrect IAM authentication information",
        },
    )
    with pytest.raises(AuthError) as info:
        await client.list_backups("i1")
    assert info.value.exit_code == 2 and info.value.error_code == "APIGW.0301"
    assert "r1" in str(info.value) and "\n" not in str(info.value)
    assert len(calls(mock)) == 1


async def test_dcs_error_body_is_mapped(client: Client, mock: Any) -> None:
    mock.get(
        BACKUPS,
        status=400,
        headers={"X-Request-Id": "abc"},
        payload={
            "error_code": "DCS.3022",
            "error_msg": "The instance does not exist.",
            "error_ext_msg": None,
        },
    )
    with pytest.raises(NotFoundError) as info:
        await client.list_backups("i1")
    assert info.value.error_msg == "The instance does not exist."
    assert info.value.request_id == "abc" and info.value.status == 400
    assert len(calls(mock)) == 1


@pytest.mark.parametrize(
    "answer",
    [
        {"body": "<html><body>Gateway says hi</body></html>", "content_type": "text/html"},
        {"payload": {"backup_record_response": []}},
        {"payload": {"total_num": "3", "backup_record_response": []}},
        {"payload": {"total_num": 1, "backup_record_response": [{"backup_id": 5, "status": "x"}]}},
        {"payload": {"total_num": 1, "backup_record_response": "nope"}},
        {"payload": ["not", "an", "object"]},
    ],
)
async def test_malformed_backups_answer(client: Client, mock: Any, answer: dict[str, Any]) -> None:
    mock.get(BACKUPS, **answer)
    with pytest.raises(MalformedResponseError) as info:
        await client.list_backups("i1")
    assert "\n" not in str(info.value)


async def test_get_links_parses_answer(client: Client, mock: Any) -> None:
    mock.post(
        LINKS,
        payload={"file_path": "p/", "bucket_name": "bkt", "links": [link("a.rdb"), link("b.rdb")]},
    )
    links = await client.get_backup_links("i1", "b1", expiration=600)
    assert [x.file_name for x in links.links] == ["a.rdb", "b.rdb"]
    request = next(iter(mock.requests.values()))[0]
    assert json.loads(request.kwargs["data"]) == {"expiration": 600}
    assert "Signature=x" not in repr(links.links[0])


@pytest.mark.parametrize("expiration", [0, 299, 86401, "600"])
async def test_link_expiration_is_checked_before_calling(
    client: Client, mock: Any, expiration: Any
) -> None:
    with pytest.raises(ConfigError, match=r"300\.\.86400"):
        await client.get_backup_links("i1", "b1", expiration=expiration)
    assert calls(mock) == []


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"links": [link(f"f{i}.rdb") for i in range(65)]}, MalformedResponseError),
        ({"links": []}, MalformedResponseError),
        ({"file_path": "p/"}, MalformedResponseError),
        ({"links": [{"file_name": "a.rdb"}]}, MalformedResponseError),
        ({"links": [{"file_name": "a.rdb", "link": 7}]}, MalformedResponseError),
        ({"links": [{"file_name": "a.rdb", "link": "file:///etc/passwd"}]}, MalformedResponseError),
        ({"links": ["a.rdb"]}, MalformedResponseError),
        ({"links": [link("../x.rdb")]}, UnsafeNameError),
        ({"links": [link("/etc/x")]}, UnsafeNameError),
        ({"links": [link("a/b.rdb")]}, UnsafeNameError),
        ({"links": [link("a\\b.rdb")]}, UnsafeNameError),
        ({"links": [link("a\x00.rdb")]}, UnsafeNameError),
        ({"links": [link("")]}, UnsafeNameError),
        ({"links": [link("a.rdb"), link("a.rdb")]}, UnsafeNameError),
    ],
)
async def test_bad_links_answers(
    client: Client, mock: Any, payload: dict[str, Any], error: type[Exception]
) -> None:
    mock.post(LINKS, payload=payload)
    with pytest.raises(error) as info:
        await client.get_backup_links("i1", "b1")
    assert "\n" not in str(info.value)


async def test_project_id_from_iam() -> None:
    creds = Credentials(ak="ak-test-value", sk="sk-test-value")
    with aioresponses() as mock:
        mock.get(
            re.compile(r"^https://iam\.test-1\.myhuaweicloud\.com/v3/projects\?name=test-1$"),
            payload={
                "projects": [{"id": "other", "name": "test-1_sub"}, {"id": "pid", "name": "test-1"}]
            },
        )
        mock.get(BACKUPS, status=204)
        async with Client(credentials=creds, region="test-1", retry=FAST) as client:
            assert await client.project_id() == "pid"
            assert await client.list_backups("i1") == []
        assert len(calls(mock)) == 2  # the project id is looked up once


async def test_create_and_wait(client: Client, mock: Any) -> None:
    mock.post(BACKUPS, payload={"backup_id": "b9"})
    mock.get(BACKUPS, payload={"total_num": 1, "backup_record_response": [record(9, "backuping")]})
    mock.get(BACKUPS, payload={"total_num": 1, "backup_record_response": [record(9)]})
    backup_id = await client.create_backup("i1", backup_format="rdb", remark="nightly")
    backup = await client.wait_for_backup("i1", backup_id, timeout=5, poll_interval=0.01)
    assert backup.status == "succeed" and backup.backup_id == "b9"


def test_endpoint_needs_region_or_url() -> None:
    creds = Credentials(ak="a-value", sk="s-value")
    with pytest.raises(ConfigError, match="region"):
        Client(credentials=creds)
    with pytest.raises(ConfigError, match="not an http"):
        Client(credentials=creds, endpoint="ftp://x")
    assert (
        Client(credentials=creds, endpoint="http://127.0.0.1:1/").endpoint == "http://127.0.0.1:1"
    )


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(attempts=3, wait_initial=0.0, wait_max=5.0)
    assert policy.backoff(1, retry_after=3.0) == 3.0
    assert 0 <= RetryPolicy(wait_initial=1, wait_max=2).backoff(10) <= 2.0
