"""Property-based tests: random and near-valid input ends in a typed error or a valid result."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcs_backup import MalformedResponseError, UnsafeNameError
from dcs_backup._formats import AofChecker, FormatError, RdbChecker
from dcs_backup._models import MAX_LINKS, parse_backup_page, parse_links
from dcs_backup._obs import normalize_etag, parse_content_range, parse_obs_error

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
names = st.one_of(
    st.sampled_from(
        [
            "a.rdb",
            "../x.rdb",
            "/etc/x",
            "a/b.rdb",
            "..",
            ".",
            "",
            "a\x00b",
            "redis_1.2.3.4_6379_0-16383_20260101000000.rdb",
            "x.part",
            "é.rdb",
            "manifest.json",
            "a" * 300,
        ]
    ),
    st.text(max_size=40),
    st.integers(),
    st.none(),
)
links = st.one_of(
    st.sampled_from(
        [
            "https://b.obs.example.com/p/a.rdb?Expires=1&Signature=x",
            "http://127.0.0.1:1/x",
            "ftp://x",
            "",
            "https://",
        ]
    ),
    st.text(max_size=40),
    st.integers(),
)
near_valid_links = st.fixed_dictionaries(
    {
        "links": st.lists(
            st.fixed_dictionaries({"file_name": names, "link": links}), max_size=MAX_LINKS + 3
        )
    },
    optional={"file_path": json_values, "bucket_name": json_values},
)


def _check_links(data: Any) -> None:
    try:
        result = parse_links(data)
    except (MalformedResponseError, UnsafeNameError) as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert 1 <= len(result.links) <= MAX_LINKS
    seen = set()
    for link in result.links:
        assert "/" not in link.file_name and "\\" not in link.file_name
        assert link.file_name not in (".", "..") and link.file_name not in seen
        assert link.url.startswith(("http://", "https://"))
        seen.add(link.file_name)


@FAST
@given(json_values)
def test_links_parser_on_any_json(data: Any) -> None:
    _check_links(data)


@FAST
@given(near_valid_links)
def test_links_parser_on_near_valid_answers(data: Any) -> None:
    _check_links(data)


backup_records = st.fixed_dictionaries(
    {
        "backup_id": st.one_of(st.text(max_size=10), st.integers()),
        "status": st.one_of(st.sampled_from(["succeed", "failed"]), st.integers(), st.none()),
    },
    optional={
        "size": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.text()),
        "created_at": json_values,
        "backup_format": json_values,
    },
)


@FAST
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "total_num": st.one_of(st.integers(), st.text()),
                "backup_record_response": st.one_of(
                    st.lists(backup_records, max_size=4), json_values
                ),
            }
        ),
    )
)
def test_backups_parser(data: Any) -> None:
    try:
        total, records = parse_backup_page(data)
    except MalformedResponseError:
        return
    assert isinstance(total, int)
    for record in records:
        assert isinstance(record.backup_id, str) and isinstance(record.status, str)
        assert record.size is None or record.size >= 0


@FAST
@given(st.text(max_size=60))
def test_header_parsers(text: str) -> None:
    span = parse_content_range(text)
    if span is not None:
        assert 0 <= span.start <= span.end
        assert span.total is None or span.end < span.total
    normalize_etag(text)
    parse_obs_error(text)


@FAST
@given(st.integers(0, 2**64), st.integers(0, 2**64), st.integers(0, 2**64))
def test_content_range_numbers(a: int, b: int, total: int) -> None:
    span = parse_content_range(f"bytes {a}-{b}/{total}")
    assert (span is not None) == (a <= b < total)


@FAST
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=8))
def test_format_checkers_on_random_bytes(data: bytes, cuts: list[int]) -> None:
    for checker in (RdbChecker(), AofChecker()):
        i = 0
        try:
            for n in [*cuts, len(data)]:
                checker.update(data[i : i + n])
                i += n
            checker.finish()
        except FormatError:
            pass


@FAST
@given(st.lists(st.lists(st.binary(max_size=12), min_size=1, max_size=4), max_size=6))
def test_resp_checker_accepts_what_redis_writes(commands: list[list[bytes]]) -> None:
    aof = b"".join(
        b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        for args in commands
    )
    checker = AofChecker()
    for i in range(0, len(aof), 7):
        checker.update(aof[i : i + 7])
    checker.finish()
    assert checker.commands == len(commands)
