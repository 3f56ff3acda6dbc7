"""Credentials and the SDK-HMAC-SHA256 request signer of Huawei Cloud's API gateway."""

from __future__ import annotations

import configparser
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ._errors import ConfigError
from ._redact import register_secret

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_AK_VARS = ("HUAWEICLOUD_SDK_AK", "CLOUD_SDK_AK")
_SK_VARS = ("HUAWEICLOUD_SDK_SK", "CLOUD_SDK_SK")
_TOKEN_VAR = "HUAWEICLOUD_SDK_SECURITY_TOKEN"
_AUTH_TOKEN_VAR = "HUAWEICLOUD_SDK_AUTH_TOKEN"
_PROJECT_VAR = "HUAWEICLOUD_SDK_PROJECT_ID"


@dataclass(frozen=True)
class Credentials:
    """How requests to the DCS API prove who sends them.

    Either an access key pair (``ak`` and ``sk``, plus ``security_token`` for temporary keys)
    or an IAM ``auth_token``. ``repr()`` never shows a secret.
    """

    ak: str | None = field(default=None, repr=False)
    sk: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)
    auth_token: str | None = field(default=None, repr=False)
    project_id: str | None = None

    def __post_init__(self) -> None:
        for secret in (self.ak, self.sk, self.security_token, self.auth_token):
            register_secret(secret)
        if self.auth_token is None and (not self.ak or not self.sk):
            raise ConfigError(
                "no DCS credentials: set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK "
                "(or CLOUD_SDK_AK / CLOUD_SDK_SK, or HUAWEICLOUD_SDK_AUTH_TOKEN), "
                "or pass --ak/--sk"
            )

    def __repr__(self) -> str:
        kind = "token" if self.auth_token else "aksk"
        return f"Credentials(kind={kind!r}, project_id={self.project_id!r})"

    @classmethod
    def from_env(
        cls,
        *,
        ak: str | None = None,
        sk: str | None = None,
        security_token: str | None = None,
        auth_token: str | None = None,
        project_id: str | None = None,
        environ: Mapping[str, str] | None = None,
        credentials_file: Path | None = None,
    ) -> Credentials:
        """Explicit values, then environment variables, then ``~/.huaweicloud/credentials``."""
        env = os.environ if environ is None else environ
        ak = ak or _first(env, _AK_VARS)
        sk = sk or _first(env, _SK_VARS)
        auth_token = auth_token or env.get(_AUTH_TOKEN_VAR) or None
        security_token = security_token or env.get(_TOKEN_VAR) or None
        project_id = project_id or env.get(_PROJECT_VAR) or None
        if not auth_token and not (ak and sk):
            path = credentials_file or Path.home() / ".huaweicloud" / "credentials"
            basic = _read_credentials_file(path)
            ak = ak or basic.get("ak")
            sk = sk or basic.get("sk")
            security_token = security_token or basic.get("security_token")
            project_id = project_id or basic.get("project_id")
        return cls(
            ak=ak,
            sk=sk,
            security_token=security_token,
            auth_token=auth_token,
            project_id=project_id,
        )


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


def _read_credentials_file(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error, UnicodeDecodeError):
        return {}
    return dict(parser["basic"]) if parser.has_section("basic") else {}


def _encode(value: str) -> str:
    # Only A-Za-z0-9-_.~ stay as they are, as the official SDK encodes.
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """Each segment percent-encoded, joined by '/', with a trailing '/'."""
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(query: str) -> str:
    """``key=value`` pairs of a raw query string, encoded, sorted, joined by '&'."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    return sorted(name.lower() for name in headers if "_" not in name)


def string_to_sign(
    method: str, url: str, headers: Mapping[str, str], body: bytes, signed: list[str]
) -> str:
    parts = urlsplit(url)
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    if not body:
        payload_hash = EMPTY_SHA256
    else:
        payload_hash = lowered.get("x-sdk-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        [
            method.upper(),
            canonical_uri(parts.path or "/"),
            canonical_query(parts.query),
            canonical_headers,
            ";".join(signed),
            payload_hash,
        ]
    )
    return "\n".join(
        [ALGORITHM, lowered["x-sdk-date"], hashlib.sha256(canonical_request.encode()).hexdigest()]
    )


def signature(sk: str, text: str) -> str:
    return hmac.new(sk.encode(), text.encode(), hashlib.sha256).hexdigest()


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    *,
    now: datetime | None = None,
) -> dict[str, str]:
    """Return the headers to send: ``headers`` plus Host, X-Sdk-Date and Authorization.

    ``url`` must already carry its query in canonical form (see ``canonical_query``) so that
    what is sent is what was signed.
    """
    out = dict(headers)
    if credentials.security_token:
        out["X-Security-Token"] = credentials.security_token
    if credentials.auth_token:
        out["X-Auth-Token"] = credentials.auth_token
        return out
    assert credentials.ak and credentials.sk  # guaranteed by Credentials.__post_init__
    content_type = next((v for k, v in out.items() if k.lower() == "content-type"), None)
    if content_type and not content_type.startswith(("application/json", "application/bson")):
        out["X-Sdk-Content-Sha256"] = "UNSIGNED-PAYLOAD"
    moment = now or datetime.now(timezone.utc)
    out["X-Sdk-Date"] = moment.strftime(DATE_FORMAT)
    if not any(k.lower() == "host" for k in out):
        out["Host"] = urlsplit(url).netloc
    signed = signed_header_names(out)
    text = string_to_sign(method, url, out, body, signed)
    out["Authorization"] = (
        f"{ALGORITHM} Access={credentials.ak}, SignedHeaders={';'.join(signed)}, "
        f"Signature={signature(credentials.sk, text)}"
    )
    return out
