"""A local DCS API + OBS object store on aiohttp.web, faithful where the client cares.

The DCS side checks SDK-HMAC-SHA256 signatures and answers the backups, create-backup, links
and IAM projects calls. The OBS side serves objects through presigned V2 URLs (signature and
``Expires`` checked), with Range, If-Match, MD5 ETags, and the faults of ``Faults``.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .._auth import DATE_FORMAT, Credentials, signature, string_to_sign
from ._faults import EmulatorStats, Faults
from ._rdb import make_rdb, shard_name

log = logging.getLogger("dcs_backup.emulator")

BUCKET = "dcs-backup-emulator"
_SEND_CHUNK = 256 * 1024


@dataclass
class StoredObject:
    key: str
    size: int
    etag: str
    data: bytes | None = None
    path: Path | None = None

    def read(self, start: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[start : start + length]
        assert self.path is not None
        with self.path.open("rb") as f:
            f.seek(start)
            return f.read(length)


@dataclass
class StoredBackup:
    backup_id: str
    instance_id: str
    files: list[str]
    size: int
    status: str = "succeed"
    backup_format: str = "rdb"
    backup_type: str = "manual"
    remark: str = ""
    created_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    )

    def record(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "backup_name": f"backup_{self.created_at[:19].replace('-', '').replace(':', '')}",
            "instance_id": self.instance_id,
            "size": self.size,
            "backup_type": self.backup_type,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "progress": "100.00" if self.status == "succeed" else "0.00",
            "status": self.status,
            "backup_format": self.backup_format,
            "remark": self.remark,
            "error_code": "",
            "is_support_restore": "TRUE",
        }


class Emulator:
    """Run with ``async with Emulator(...) as emu:``; ``emu.endpoint`` is its base URL.

    ``credentials()`` gives credentials it accepts; ``add_backup`` stores a backup whose files
    it then serves. ``faults`` and ``stats`` may be read and changed while it runs.
    """

    def __init__(
        self,
        *,
        ak: str = "EMULATORACCESSKEY000",
        sk: str = "emulator-secret-key-do-not-use",
        project_id: str = "0123456789abcdef0123456789abcdef",
        region: str = "emulator-1",
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        create_delay: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ak, self.sk = ak, sk
        self.project_id = project_id
        self.region = region
        self.faults = faults or Faults()
        self.stats = EmulatorStats()
        self.host, self.port = host, port
        self.create_delay = create_delay
        self.ssl_context = ssl_context  # serve HTTPS with it (the endpoint becomes https://)
        self.backups: dict[str, list[StoredBackup]] = {}
        self.objects: dict[str, StoredObject] = {}
        self.clock_offset = 0.0  # seconds the emulated servers' clock is ahead of ours
        self._obs_ak = "OBSEMULATORKEY"
        self._obs_sk = secrets.token_hex(16)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/v3/projects", self._projects)
        app.router.add_get("/v2/{project}/instances/{instance}/backups", self._list)
        app.router.add_post("/v2/{project}/instances/{instance}/backups", self._create)
        app.router.add_post(
            "/v2/{project}/instances/{instance}/backups/{backup}/links", self._links
        )
        app.router.add_get("/obs/{bucket}/{key:.+}", self._get_object)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def credentials(self, **overrides: str) -> Credentials:
        values = {"ak": self.ak, "sk": self.sk, "project_id": self.project_id, **overrides}
        return Credentials(**values)

    def now(self) -> float:
        return time.time() + self.clock_offset

    # -- content -----------------------------------------------------------------------------

    def add_backup(
        self,
        instance_id: str,
        files: dict[str, bytes | Path],
        *,
        backup_id: str | None = None,
        backup_format: str = "rdb",
        status: str = "succeed",
        created_at: str | None = None,
    ) -> str:
        """Store a backup of ``instance_id`` with the given files; return its backup_id."""
        backup_id = backup_id or str(uuid.uuid4())
        total = 0
        for name, content in files.items():
            key = f"{instance_id}/{backup_id}/{name}"
            if isinstance(content, Path):
                md5 = hashlib.md5()
                with content.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        md5.update(block)
                size = content.stat().st_size
                obj = StoredObject(key, size, md5.hexdigest(), path=content)
            else:
                obj = StoredObject(
                    key, len(content), hashlib.md5(content).hexdigest(), data=bytes(content)
                )
            self.objects[key] = obj
            total += obj.size
        backup = StoredBackup(
            backup_id, instance_id, list(files), total, status=status, backup_format=backup_format
        )
        if created_at:
            backup.created_at = created_at
        self.backups.setdefault(instance_id, []).append(backup)
        return backup_id

    def add_generated_backup(
        self,
        instance_id: str,
        *,
        shards: int = 3,
        shard_size: int | list[int] = 1 << 20,
        seed: int = 0,
    ) -> str:
        """A cluster backup of ``shards`` valid RDB files of about ``shard_size`` bytes each
        (or the listed sizes); the same seed gives the same bytes."""
        sizes = shard_size if isinstance(shard_size, list) else [shard_size] * shards
        files: dict[str, bytes | Path] = {
            shard_name(i, len(sizes)): make_rdb(size, seed=seed * 1000 + i, ctime=1764000000)
            for i, size in enumerate(sizes)
        }
        return self.add_backup(instance_id, files)

    def object_bytes(self, instance_id: str, backup_id: str, name: str) -> bytes:
        obj = self.objects[f"{instance_id}/{backup_id}/{name}"]
        return obj.read(0, obj.size)

    def presign(self, key: str, expires: int) -> str:
        """A V2 query-auth URL for ``key``, its Signature percent-encoded as OBS gives it."""
        sig = self._obs_signature(key, expires)
        return (
            f"{self.endpoint}/obs/{BUCKET}/{quote(key)}?AWSAccessKeyId={self._obs_ak}"
            f"&Expires={expires}&Signature={quote(sig, safe='')}"
        )

    def _obs_signature(self, key: str, expires: int) -> str:
        text = f"GET\n\n\n{expires}\n/{BUCKET}/{key}"
        digest = hmac.new(self._obs_sk.encode(), text.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    # -- DCS API -----------------------------------------------------------------------------

    def _error(self, status: int, code: str, message: str) -> web.Response:
        return web.json_response(
            {"error_code": code, "error_msg": message, "error_ext_msg": None},
            status=status,
            headers={"X-Request-Id": uuid.uuid4().hex},
        )

    def _check_auth(self, request: web.Request, body: bytes) -> web.Response | None:
        self.stats.api_calls += 1
        header = request.headers.get("Authorization", "")
        if not header:
            self.stats.auth_failures += 1
            return self._error(401, "APIGW.0101", "The request carries no authentication")
        try:
            algorithm, rest = header.split(" ", 1)
            fields = dict(part.strip().split("=", 1) for part in rest.split(","))
            signed = fields["SignedHeaders"].split(";")
            given_sig, access = fields["Signature"], fields["Access"]
            sdk_date = request.headers["X-Sdk-Date"]
            moment = datetime.strptime(sdk_date, DATE_FORMAT).replace(tzinfo=timezone.utc)
        except (ValueError, KeyError):
            self.stats.auth_failures += 1
            return self._error(401, "APIGW.0301", "Incorrect IAM authentication information")
        if abs(moment.timestamp() - self.now()) > 15 * 60:
            self.stats.auth_failures += 1
            return self._error(
                401, "APIGW.0303", "Incorrect app authentication information: time expired"
            )
        headers = {name: request.headers.get(name, "") for name in signed}
        url = f"http://{request.host}{request.raw_path}"
        text = string_to_sign(request.method, url, headers, body, signed)
        if (
            algorithm != "SDK-HMAC-SHA256"
            or access != self.ak
            or "host" not in signed
            or not hmac.compare_digest(signature(self.sk, text), given_sig)
        ):
            self.stats.auth_failures += 1
            return self._error(
                401,
                "APIGW.0301",
                "Incorrect IAM authentication information: verify aksk signature fail",
            )
        return None

    def _instance(
        self, request: web.Request
    ) -> tuple[list[StoredBackup] | None, web.Response | None]:
        if request.match_info["project"] != self.project_id:
            return None, self._error(403, "DCS.0403", "project id does not match the token")
        backups = self.backups.get(request.match_info["instance"])
        if backups is None:
            return None, self._error(400, "DCS.3022", "The instance does not exist.")
        return backups, None

    async def _authorized(
        self, request: web.Request
    ) -> tuple[bytes, list[StoredBackup]] | web.Response:
        """The body and the instance's backups of a signed request, or the error to answer."""
        body = await request.read()
        denied = self._check_auth(request, body)
        if denied:
            return denied
        backups, error = self._instance(request)
        if error:
            return error
        assert backups is not None
        return body, backups

    async def _projects(self, request: web.Request) -> web.Response:
        denied = self._check_auth(request, await request.read())
        if denied:
            return denied
        name = request.query.get("name")
        projects = [{"id": self.project_id, "name": self.region}] if name == self.region else []
        return web.json_response({"projects": projects})

    async def _list(self, request: web.Request) -> web.Response:
        answer = await self._authorized(request)
        if isinstance(answer, web.Response):
            return answer
        _, backups = answer
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            return self._error(400, "DCS.4800", "Invalid offset or limit")
        if not 1 <= limit <= 1000 or offset < 0:
            return self._error(400, "DCS.4800", "Invalid offset or limit")
        if not backups:
            return web.Response(status=204)
        ordered = sorted(backups, key=lambda b: b.created_at, reverse=True)
        page = ordered[offset : offset + limit]
        return web.json_response(
            {"total_num": len(ordered), "backup_record_response": [b.record() for b in page]}
        )

    async def _create(self, request: web.Request) -> web.Response:
        answer = await self._authorized(request)
        if isinstance(answer, web.Response):
            return answer
        body, _ = answer
        try:
            data = json.loads(body)
            fmt = data.get("backup_format", "rdb")
        except (ValueError, AttributeError):
            return self._error(400, "DCS.4800", "Invalid request body")
        if fmt not in ("rdb", "aof"):
            return self._error(400, "DCS.4800", "Invalid backup_format")
        instance = request.match_info["instance"]
        backup_id = self.add_generated_backup(instance, shards=3, shard_size=256 * 1024)
        record = self.backups[instance][-1]
        record.status, record.remark, record.backup_format = (
            "backuping",
            str(data.get("remark") or ""),
            fmt,
        )

        async def finish() -> None:
            await asyncio.sleep(self.create_delay)
            record.status = "succeed"

        task = asyncio.ensure_future(finish())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        name = record.record()["backup_name"]
        return web.json_response({"backup_id": backup_id, "backup_name": name})

    async def _links(self, request: web.Request) -> web.Response:
        answer = await self._authorized(request)
        if isinstance(answer, web.Response):
            return answer
        body, backups = answer
        try:
            expiration = json.loads(body)["expiration"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "DCS.4800", "Invalid request body")
        if not isinstance(expiration, int) or not 300 <= expiration <= 86400:
            return self._error(400, "DCS.4800", "expiration must be 300..86400")
        backup = next((b for b in backups if b.backup_id == request.match_info["backup"]), None)
        if backup is None:
            return self._error(400, "DCS.4313", "The backup does not exist.")
        if backup.status != "succeed":
            return self._error(400, "DCS.4314", "The backup is not finished.")
        self.stats.links_calls += 1
        lifetime = self.faults.link_lifetime or expiration
        expires = int(self.now() + lifetime + 0.999)
        prefix = f"{backup.instance_id}/{backup.backup_id}"
        links = [
            {"file_name": name, "link": self.presign(f"{prefix}/{name}", expires)}
            for name in backup.files
        ]
        return web.json_response({"file_path": prefix + "/", "bucket_name": BUCKET, "links": links})

    # -- OBS ---------------------------------------------------------------------------------

    def _obs_error(self, status: int, code: str, message: str) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
        )
        return web.Response(
            status=status, text=body, content_type="application/xml", headers=self._date()
        )

    def _date(self) -> dict[str, str]:
        """The servers' own clock, as OBS reports it in every answer."""
        return {"Date": email.utils.formatdate(self.now(), usegmt=True)}

    async def _get_object(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        query = request.query
        obj = self.objects.get(key) if request.match_info["bucket"] == BUCKET else None
        access, expires, given = (
            query.get("AWSAccessKeyId"),
            query.get("Expires", ""),
            query.get("Signature"),
        )
        if not access or not given or not expires.isdigit():
            return self._obs_error(403, "AccessDenied", "Access Denied")
        if access != self._obs_ak or not hmac.compare_digest(
            self._obs_signature(key, int(expires)), given
        ):
            return self._obs_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if self.now() > int(expires):
            self.stats.expired_requests += 1
            return self._obs_error(403, "AccessDenied", "Request has expired")
        if obj is None:
            return self._obs_error(404, "NoSuchKey", "The specified key does not exist.")
        self.stats.object_requests += 1
        self.stats.requests_by_file[key.rsplit("/", 1)[-1]] += 1
        span = _parse_range(request.headers.get("Range"), obj.size)
        fault = self.faults.draw(ranged=span is not None)
        if fault:
            self.stats.faults[fault] += 1
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault == "error_500":
            return self._obs_error(500, "InternalError", "We encountered an internal error.")
        if fault == "slowdown_503":
            return self._obs_error(503, "SlowDown", "Please reduce your request rate.")
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match.strip().strip('"') != obj.etag:
            return self._obs_error(412, "PreconditionFailed", "At least one precondition failed")
        if span == "invalid":
            return self._obs_error(416, "InvalidRange", "The requested range cannot be satisfied")
        if fault == "ignore_range":
            span = None
        headers = {
            **self._date(),
            "ETag": f'"{obj.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "binary/octet-stream",
            "Last-Modified": "Tue, 24 Nov 2026 06:15:00 GMT",
        }
        if span is None:
            start, end, status = 0, obj.size - 1, 200
        else:
            assert isinstance(span, tuple)
            start, end = span
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
        length = end - start + 1
        headers["Content-Length"] = str(length)
        resp = web.StreamResponse(status=status, headers=headers)
        stats = self.stats
        stats.active_responses += 1
        stats.max_active_responses = max(stats.max_active_responses, stats.active_responses)
        try:
            await resp.prepare(request)
            await self._send(request, resp, obj, start, length, fault)
        finally:
            stats.active_responses -= 1
        return resp

    async def _send(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        obj: StoredObject,
        start: int,
        length: int,
        fault: str | None,
    ) -> None:
        stop_at = length
        if fault == "truncate":
            stop_at = int(length * self.faults.fraction())
        if self.faults.cut_after is not None:
            stop_at = min(stop_at, self.faults.cut_after)
        stall_at = int(length * self.faults.fraction()) if fault == "stall" else -1
        flip_at = int(stop_at * self.faults.fraction()) if fault == "corrupt" else -1
        rate = self.faults.rate_limit
        chunk = _SEND_CHUNK if not rate else max(min(_SEND_CHUNK, rate // 20), 1024)
        began = time.monotonic()
        sent = 0
        try:
            while sent < stop_at:
                if 0 <= stall_at <= sent:
                    stall_at = -1
                    await asyncio.sleep(self.faults.stall_seconds)
                n = min(chunk, stop_at - sent)
                if 0 <= stall_at < sent + n:
                    n = max(stall_at - sent, 1)
                piece = obj.read(start + sent, n)
                if sent <= flip_at < sent + n:
                    spoiled = bytearray(piece)
                    spoiled[flip_at - sent] ^= 0x10
                    piece = bytes(spoiled)
                await resp.write(piece)
                sent += n
                self.stats.bytes_sent += n
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            if sent < length and request.transport is not None:
                request.transport.abort()  # a body shorter than its Content-Length
        except (ConnectionError, RuntimeError):
            return  # the client went away


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end) for a satisfiable single range, 'invalid' for 416, None to ignore it."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(size - n, 0), size - 1) if n > 0 else "invalid"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if end < start:
        return None
    if start >= size:
        return "invalid"
    return start, min(end, size - 1)
