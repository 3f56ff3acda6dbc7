"""The signer against Huawei's official SDK signer, and credential loading."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urlencode

import pytest
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from dcs_backup import ConfigError, Credentials
from dcs_backup._auth import sign_request

AK, SK = "HPUAEXAMPLEAK1234567", "ExampleSecretKey0123456789abcdefghijklmn"
NOW = datetime(2026, 11, 24, 6, 15, 0, tzinfo=timezone.utc)

CASES = [
    pytest.param(
        "GET",
        "https",
        "dcs.cn-north-4.myhuaweicloud.com",
        "/v2/0a1b/instances/inst-1/backups",
        [("offset", "0"), ("limit", "1000"), ("begin_time", "20260101000000")],
        {},
        b"",
        id="get-sorted-query",
    ),
    pytest.param(
        "GET",
        "https",
        "iam.cn-north-4.myhuaweicloud.com",
        "/v3/projects",
        [("name", "cn north+4/é"), ("a b", "x&y=z"), ("empty", ""), ("name", "aaa~-_.")],
        {},
        b"",
        id="get-query-needs-encoding",
    ),
    pytest.param(
        "POST",
        "https",
        "dcs.ap-southeast-1.myhuaweicloud.com",
        "/v2/0a1b/instances/inst-1/backups/b-2/links",
        [],
        {"Content-Type": "application/json;charset=UTF-8"},
        b'{"expiration": 3600}',
        id="post-json-body",
    ),
    pytest.param(
        "GET",
        "https",
        "dcs.cn-north-4.myhuaweicloud.com",
        "/v2/0a1b/instances/" + quote("inst ance:1@x", safe="") + "/backups",
        [],
        {},
        b"",
        id="path-needs-encoding",
    ),
    pytest.param(
        "POST",
        "http",
        "127.0.0.1:8443",
        "/v2/p/instances/i/backups",
        [("k", "v")],
        {"Content-Type": "application/json", "X-Project-Id": "p", "X-Security-Token": "tok-en/+="},
        b'{"backup_format": "rdb"}',
        id="explicit-port-token-project",
    ),
    pytest.param(
        "POST",
        "https",
        "dcs.cn-north-4.myhuaweicloud.com",
        "/v2/p/upload",
        [],
        {"Content-Type": "application/octet-stream"},
        b"\x00\x01binary",
        id="unsigned-payload",
    ),
]


@pytest.mark.parametrize(("method", "scheme", "host", "path", "query", "headers", "body"), CASES)
def test_signature_matches_official_sdk(
    method: str,
    scheme: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
) -> None:
    sdk_headers = {"X-Sdk-Date": NOW.strftime("%Y%m%dT%H%M%SZ"), **headers}
    request = SdkRequest(
        method=method,
        schema=scheme,
        host=host,
        resource_path=path,
        query_params=list(query),
        header_params=sdk_headers,
        body=body,
    )
    Signer(SimpleNamespace(ak=AK, sk=SK)).sign(request)
    expected = request.header_params["Authorization"]

    url = f"{scheme}://{host}{path}" + (f"?{urlencode(query, quote_via=quote)}" if query else "")
    ours_headers = {k: v for k, v in headers.items() if k != "X-Security-Token"}
    token = headers.get("X-Security-Token")
    creds = Credentials(ak=AK, sk=SK, security_token=token)
    signed = sign_request(method, url, ours_headers, body, creds, now=NOW)
    assert signed["Authorization"] == expected
    assert signed["X-Sdk-Date"] == "20261124T061500Z"
    assert signed["Host"] == host


def test_token_credentials_are_not_signed() -> None:
    creds = Credentials(auth_token="iam-token-value")
    headers = sign_request("GET", "https://x/v2/p", {}, b"", creds, now=NOW)
    assert headers == {"X-Auth-Token": "iam-token-value"}


def test_missing_credentials_name_the_variables() -> None:
    with pytest.raises(ConfigError, match="HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK"):
        Credentials.from_env(environ={})


def test_environment_variable_names(tmp_path: Path) -> None:
    creds = Credentials.from_env(
        environ={
            "CLOUD_SDK_AK": "ak-from-samples",
            "CLOUD_SDK_SK": "sk-from-samples",
            "HUAWEICLOUD_SDK_PROJECT_ID": "pid",
        },
        credentials_file=tmp_path / "none",
    )
    assert (creds.ak, creds.sk, creds.project_id) == ("ak-from-samples", "sk-from-samples", "pid")
    creds = Credentials.from_env(
        environ={
            "HUAWEICLOUD_SDK_AK": "a1",
            "HUAWEICLOUD_SDK_SK": "s1",
            "CLOUD_SDK_AK": "a2",
            "CLOUD_SDK_SK": "s2",
            "HUAWEICLOUD_SDK_SECURITY_TOKEN": "tok",
        },
    )
    assert (creds.ak, creds.sk, creds.security_token) == ("a1", "s1", "tok")
    assert (
        Credentials.from_env(ak="flag-ak", sk="flag-sk", environ={"HUAWEICLOUD_SDK_AK": "e"}).ak
        == "flag-ak"
    )


def test_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("[basic]\nak = file-ak\nsk = file-sk\nproject_id = file-pid\n")
    creds = Credentials.from_env(environ={}, credentials_file=path)
    assert (creds.ak, creds.sk, creds.project_id) == ("file-ak", "file-sk", "file-pid")


def test_repr_shows_no_secret() -> None:
    creds = Credentials(
        ak="AKVISIBLE123", sk="SKSECRET456", security_token="TOKEN789", project_id="pid"
    )
    text = repr(creds) + str(creds)
    for secret in ("AKVISIBLE123", "SKSECRET456", "TOKEN789"):
        assert secret not in text
