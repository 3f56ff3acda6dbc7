"""Re-read downloaded files and check them against the manifest and their own formats."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import IntegrityError
from ._integrity import FileChecks, StreamVerifier, file_kind
from ._manifest import manifest_entries, read_manifest

_READ = 1 << 20


@dataclass
class VerifyReport:
    """The verdict on one file: ``problems`` is empty when it is good."""

    name: str
    problems: list[str] = field(default_factory=list)
    checks: FileChecks | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_file(path: Path, expected: FileChecks | None = None) -> VerifyReport:
    """Read ``path`` once: format checks, plus every checksum the manifest recorded."""
    report = VerifyReport(path.name)
    verifier = StreamVerifier(
        path.name,
        etag=expected.etag if expected else None,
        md5_etag=bool(expected and "md5=etag" in expected.verified),
        want_md5=(expected.md5 is not None) if expected else file_kind(path.name) != "rdb",
        want_sha256=bool(expected and expected.sha256),
    )
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(_READ), b""):
                verifier.update(block)
        report.checks = verifier.finish(path, expected.size if expected else None)
    except FileNotFoundError:
        report.problems.append("missing")
        return report
    except IntegrityError as exc:
        report.problems.append(str(exc))
        return report
    except OSError as exc:
        report.problems.append(f"unreadable: {exc.strerror or exc}")
        return report
    if expected is not None:
        got = report.checks
        for attr in ("crc64", "md5", "sha256"):
            want, have = getattr(expected, attr), getattr(got, attr)
            if want is not None and have != want:
                report.problems.append(f"{attr} {have} differs from the manifest's {want}")
    return report


async def verify_directory(directory: Path, *, concurrency: int = 4) -> list[VerifyReport]:
    """Every file the manifest lists (or, without one, every .rdb/.aof file), checked."""
    try:
        entries = manifest_entries(read_manifest(directory))
    except (ValueError, OSError) as exc:
        return [VerifyReport("manifest.json", [f"unreadable: {exc}"])]
    targets: list[tuple[Path, FileChecks | None]]
    if entries:
        targets = [(directory / name, entry) for name, entry in sorted(entries.items())]
    else:
        targets = [
            (p, None)
            for p in sorted(directory.iterdir())
            if p.is_file() and p.suffix in (".rdb", ".aof")
        ]
    limit = asyncio.Semaphore(concurrency)

    async def one(path: Path, entry: FileChecks | None) -> VerifyReport:
        async with limit:  # hashing releases the GIL: files are checked side by side
            return await asyncio.to_thread(verify_file, path, entry)

    return list(await asyncio.gather(*(one(p, e) for p, e in targets)))
