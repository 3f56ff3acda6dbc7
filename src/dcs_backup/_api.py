"""An asyncio client of the DCS REST API (backups and their download links)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from yarl import URL

from ._auth import Credentials, canonical_query, sign_request
from ._errors import (
    ApiError,
    AuthError,
    BackupNotReadyError,
    ConfigError,
    DcsBackupError,
    MalformedResponseError,
    NotFoundError,
)
from ._http import parse_retry_after
from ._models import Backup, BackupLinks, parse_backup_page, parse_links
from ._redact import redact
from ._retry import RetryPolicy

log = logging.getLogger("dcs_backup.api")

ENDPOINT_VAR = "DCS_BACKUP_ENDPOINT"
IAM_ENDPOINT_VAR = "HUAWEICLOUD_SDK_IAM_ENDPOINT"
REGION_VAR = "HUAWEICLOUD_SDK_REGION"
MIN_EXPIRATION, MAX_EXPIRATION = 300, 86400
PAGE_SIZE = 1000
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_NOT_FOUND_CODES = frozenset({"DCS.3022"})


class _Retryable(Exception):
    """An answer worth another try (429, 5xx, a dropped connection)."""

    def __init__(self, error: BaseException, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class Client:
    """The DCS API of one region, signed with ``credentials``.

    Use it as an async context manager; it keeps one ``aiohttp.ClientSession``. ``endpoint``
    and ``iam_endpoint`` default to the region's public endpoints (or the
    ``DCS_BACKUP_ENDPOINT`` / ``HUAWEICLOUD_SDK_IAM_ENDPOINT`` environment variables) and may be
    ``http://`` URLs, e.g. of the local emulator.
    """

    def __init__(
        self,
        *,
        credentials: Credentials,
        region: str | None = None,
        endpoint: str | None = None,
        iam_endpoint: str | None = None,
        project_id: str | None = None,
        retry: RetryPolicy | None = None,
        request_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        region = region or os.environ.get(REGION_VAR) or None
        endpoint = endpoint or os.environ.get(ENDPOINT_VAR) or None
        iam_endpoint = iam_endpoint or os.environ.get(IAM_ENDPOINT_VAR) or None
        if not endpoint and not region:
            raise ConfigError(
                "no region: pass --region (e.g. cn-north-4), set HUAWEICLOUD_SDK_REGION, "
                "or give --endpoint"
            )
        self.region = region
        self.endpoint = _check_endpoint(endpoint or f"https://dcs.{region}.myhuaweicloud.com")
        self.iam_endpoint = (
            _check_endpoint(iam_endpoint or f"https://iam.{region}.myhuaweicloud.com")
            if iam_endpoint or region
            else None
        )
        self.credentials = credentials
        self._project_id = project_id or credentials.project_id
        self._retry = retry or RetryPolicy(attempts=5, timeout=120.0)
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._project_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Client(endpoint={self.endpoint!r}, project_id={self._project_id!r})"

    async def __aenter__(self) -> Client:
        self._session_or_new()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=True)
        return self._session

    # -- the calls -------------------------------------------------------------------------

    async def project_id(self) -> str:
        """The project id: given, from the environment, or looked up in IAM by region name."""
        async with self._project_lock:
            if self._project_id:
                return self._project_id
            if not self.region or not self.iam_endpoint:
                raise ConfigError("no project id: pass --project-id or --region")
            data = await self._call("GET", self.iam_endpoint, "/v3/projects", {"name": self.region})
            projects = data.get("projects") if isinstance(data, dict) else None
            if not isinstance(projects, list):
                raise MalformedResponseError("IAM projects answer: 'projects' is missing")
            for project in projects:
                if isinstance(project, dict) and project.get("name") == self.region:
                    pid = project.get("id")
                    if isinstance(pid, str) and pid:
                        self._project_id = pid
                        return pid
            raise ConfigError(f"IAM knows no project named {self.region!r}: pass --project-id")

    async def list_backups(
        self,
        instance_id: str,
        *,
        begin_time: str | None = None,
        end_time: str | None = None,
        status: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> list[Backup]:
        """Every backup of the instance (all pages of ``page_size``, 1..1000), newest first.

        ``begin_time`` / ``end_time`` are ``yyyyMMddHHmmss`` in UTC; ``status`` filters locally.
        """
        if not 1 <= page_size <= PAGE_SIZE:
            raise ConfigError(f"page_size must be 1..{PAGE_SIZE}")
        path = f"/v2/{await self.project_id()}/instances/{_segment(instance_id)}/backups"
        backups: list[Backup] = []
        offset = 0
        while True:
            query: dict[str, str] = {"offset": str(offset), "limit": str(page_size)}
            if begin_time:
                query["begin_time"] = begin_time
            if end_time:
                query["end_time"] = end_time
            data = await self._call("GET", self.endpoint, path, query)
            if data is None:  # 204: no backups at all
                break
            total, page = parse_backup_page(data)
            backups.extend(page)
            offset += len(page)
            if not page or offset >= total:
                break
        if status:
            backups = [b for b in backups if b.status == status]
        backups.sort(key=lambda b: b.created_at or "", reverse=True)
        return backups

    async def latest_backup(self, instance_id: str) -> Backup:
        """The newest backup whose status is ``succeed``."""
        done = await self.list_backups(instance_id, status="succeed")
        if not done:
            raise BackupNotReadyError(
                f"instance {instance_id} has no finished backup: create one first "
                "(in the console, or with Client.create_backup)"
            )
        return done[0]

    async def get_backup_links(
        self, instance_id: str, backup_id: str, *, expiration: int = 3600
    ) -> BackupLinks:
        """Presigned download links of every file of a backup, valid ``expiration`` seconds."""
        if not isinstance(expiration, int) or not MIN_EXPIRATION <= expiration <= MAX_EXPIRATION:
            raise ConfigError(
                f"link expiration must be {MIN_EXPIRATION}..{MAX_EXPIRATION} seconds, "
                f"not {expiration!r}"
            )
        path = (
            f"/v2/{await self.project_id()}/instances/{_segment(instance_id)}"
            f"/backups/{_segment(backup_id)}/links"
        )
        data = await self._call("POST", self.endpoint, path, body={"expiration": expiration})
        return parse_links(data)

    async def create_backup(
        self, instance_id: str, *, backup_format: str = "rdb", remark: str | None = None
    ) -> str:
        """Start a backup of the instance; return its backup_id."""
        if backup_format not in ("rdb", "aof"):
            raise ConfigError(f"backup format must be rdb or aof, not {backup_format!r}")
        path = f"/v2/{await self.project_id()}/instances/{_segment(instance_id)}/backups"
        body: dict[str, Any] = {"backup_format": backup_format}
        if remark:
            body["remark"] = remark
        data = await self._call("POST", self.endpoint, path, body=body)
        backup_id = data.get("backup_id") if isinstance(data, dict) else None
        if not isinstance(backup_id, str) or not backup_id:
            raise MalformedResponseError("create-backup answer: 'backup_id' is missing")
        return backup_id

    async def wait_for_backup(
        self, instance_id: str, backup_id: str, *, timeout: float = 3600, poll_interval: float = 5
    ) -> Backup:
        """Poll until the backup is ``succeed``; raise if it fails or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            for backup in await self.list_backups(instance_id):
                if backup.backup_id != backup_id:
                    continue
                if backup.status == "succeed":
                    return backup
                if backup.status in ("failed", "expired", "deleted"):
                    raise BackupNotReadyError(
                        f"backup {backup_id} ended as {backup.status!r}"
                        + (f" ({backup.error_code})" if backup.error_code else "")
                    )
            if time.monotonic() + poll_interval > deadline:
                raise BackupNotReadyError(
                    f"backup {backup_id} did not finish within {timeout:.0f} s"
                )
            await asyncio.sleep(poll_interval)

    # -- transport -------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        base: str,
        path: str,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        retrying = self._retry.retrying(
            is_retryable=lambda e: isinstance(e, _Retryable),
            retry_after=lambda e: e.retry_after if isinstance(e, _Retryable) else None,
            before_sleep=lambda s: log.info(
                "retrying %s %s after: %s", method, path, s.outcome.exception() if s.outcome else ""
            ),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._call_once(method, base, path, query, body)
        except _Retryable as exc:
            if isinstance(exc.error, DcsBackupError):
                raise exc.error from None
            raise DcsBackupError(
                f"{method} {base}{path} failed after retries: {redact(str(exc.error))}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(
        self,
        method: str,
        base: str,
        path: str,
        query: dict[str, str] | None,
        body: dict[str, Any] | None,
    ) -> Any:
        raw_query = canonical_query(urlencode(query)) if query else ""
        url = base.rstrip("/") + path + (f"?{raw_query}" if raw_query else "")
        payload = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"}
        project = self._project_id
        if project and "/v3/" not in path:
            headers["X-Project-Id"] = project
        signed = sign_request(method, url, headers, payload, self.credentials)
        session = self._session_or_new()
        try:
            async with session.request(
                method,
                URL(url, encoded=True),
                headers=signed,
                data=payload or None,
                ssl=self._ssl,
            ) as resp:
                text = await resp.text(errors="replace")
                request_id = resp.headers.get("X-Request-Id")
                if resp.status in _RETRY_STATUS:
                    err = _api_error(resp.status, text, request_id, path)
                    raise _Retryable(err, parse_retry_after(resp.headers))
                if resp.status >= 400:
                    raise _api_error(resp.status, text, request_id, path)
                if resp.status == 204 or not text.strip():
                    return None
                try:
                    return json.loads(text)
                except ValueError:
                    raise MalformedResponseError(
                        f"{method} {path}: the API answered HTTP {resp.status} with something "
                        f"that is not JSON ({_snippet(text)})"
                    ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            host = urlsplit(base).hostname
            raise ConfigError(
                f"the TLS certificate of {host} is not trusted ({exc.certificate_error}): "
                "pass --ca-bundle with the CA that signed it"
            ) from exc
        except aiohttp.ClientConnectorDNSError as exc:
            host = urlsplit(base).hostname
            raise ConfigError(
                f"cannot resolve {host}: check the region or endpoint, and DNS"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise _Retryable(
                DcsBackupError(f"cannot connect to {base}: {exc.os_error or exc}")
            ) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _Retryable(
                DcsBackupError(f"{method} {path}: {type(exc).__name__}: {exc}")
            ) from exc


def _check_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"endpoint {url!r} is not an http(s) URL")
    return url.rstrip("/")


def _segment(value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise ConfigError(f"{value!r} is not a valid id")
    return value


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat[:80] + ("..." if len(flat) > 80 else ""))


def _api_error(status: int, text: str, request_id: str | None, path: str) -> ApiError:
    code = msg = None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = data.get("error_code") or data.get("code")
        msg = data.get("error_msg") or data.get("message")
        if isinstance(data.get("error"), dict):  # IAM style {"error": {"code", "message"}}
            code = code or data["error"].get("code")
            msg = msg or data["error"].get("message")
    code = str(code) if code is not None else None
    msg = str(msg) if msg is not None else _snippet(text) if text.strip() else None
    detail = f"{code}: {msg}" if code else (msg or "no details")
    rid = f" [request id {request_id}]" if request_id else ""
    kwargs: dict[str, Any] = {
        "status": status,
        "error_code": code,
        "error_msg": msg,
        "request_id": request_id,
    }
    if code == "APIGW.0303":
        return AuthError(
            f"the API gateway refused the request time (HTTP {status}, {detail}){rid}: the "
            "system clock is more than 15 minutes off; fix it (NTP) and try again",
            **kwargs,
        )
    if status in (401, 403):
        return AuthError(
            f"the API refused the credentials (HTTP {status}, {detail}){rid}: "
            "check the AK/SK, token and project id",
            **kwargs,
        )
    if status == 404 or code in _NOT_FOUND_CODES:
        return NotFoundError(f"not found (HTTP {status}, {detail}){rid}", **kwargs)
    return ApiError(f"API error on {path} (HTTP {status}, {detail}){rid}", **kwargs)
