"""Keep secrets out of anything a person or a log can see (DESIGN invariant 4)."""

from __future__ import annotations

import re

REDACTED = "REDACTED"

# Query parameters of presigned OBS/S3 URLs that grant access.
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:AWSAccessKeyId|Signature|X-Amz-[A-Za-z-]+|X-Obs-[A-Za-z-]+|AccessKeyId|"
    r"x-security-token|SecurityToken)=)[^&#\s\"'<>]*"
)
# Header-like "Name: value" or "Name=value" pairs that carry credentials.
_SECRET_HEADER = re.compile(
    r"(?i)((?:Authorization|X-Auth-Token|X-Security-Token|X-Subject-Token)[\"']?\s*[:=]\s*[\"']?)"
    r"[^\s\"',}]+(?:\s+Access=[^\s\"',}]+,?\s*SignedHeaders=[^\s\"',}]+,?\s*Signature=[^\s\"',}]+)?"
)
_AUTH_SIGNATURE = re.compile(
    r"(Access=)[^,\s]+(,\s*SignedHeaders=[^,\s]+,\s*Signature=)[0-9a-fA-F]+"
)

_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a literal secret (an AK, SK or token) so that redact() removes it anywhere."""
    if value and len(value) >= 4:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with URL signatures, credential headers and known secrets replaced."""
    text = _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, text)
    text = _AUTH_SIGNATURE.sub(lambda m: m.group(1) + REDACTED + m.group(2) + REDACTED, text)
    text = _SECRET_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in _extra_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
