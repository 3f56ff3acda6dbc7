"""The ``dcs-backup`` command line. Heavy imports wait until a command runs (fast --help)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

    from ._api import Client
    from ._auth import Credentials
    from ._result import DownloadResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("dcs_backup")


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from ._redact import redact

        return redact(super().format(record))


def _setup_logging(verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    if verbosity:
        logging.getLogger("dcs_backup").setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)
    if verbosity > 2:
        root.setLevel(logging.DEBUG)


def _fork_spare_workers(processes: int | None) -> None:
    """Worker processes forked before the event loop starts begin with their modules loaded
    (see ``_workers.fork_spares``); the download takes as many as it wants."""
    from . import _downloader  # noqa: F401  (loaded before the fork: the workers need it)
    from ._config import most_processes
    from ._workers import fork_spares

    fork_spares(most_processes(processes) - 1)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _byte_size(text: str) -> int:
    """A size such as 32M, 512K, 1G or plain bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 32M or 512K") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    api = common.add_argument_group("API and credentials")
    api.add_argument("--region", help="region, e.g. cn-north-4 (env HUAWEICLOUD_SDK_REGION)")
    api.add_argument(
        "--project-id",
        help="project id (env HUAWEICLOUD_SDK_PROJECT_ID; looked up in IAM by region when absent)",
    )
    api.add_argument("--endpoint", help="DCS API endpoint URL (env DCS_BACKUP_ENDPOINT)")
    api.add_argument("--iam-endpoint", help="IAM endpoint URL (env HUAWEICLOUD_SDK_IAM_ENDPOINT)")
    api.add_argument("--ak", help="access key id (prefer env HUAWEICLOUD_SDK_AK)")
    api.add_argument("--sk", help=argparse.SUPPRESS)  # visible to `ps`: env is the way
    api.add_argument(
        "--ca-bundle", type=Path, help="PEM file of CA certificates to trust (private CAs, proxies)"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail on stderr (-vv for debug); tracebacks on errors",
    )

    parser = argparse.ArgumentParser(
        prog="dcs-backup",
        description="Download full backups of Huawei Cloud DCS (Redis) instances.",
        parents=[],
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backups", parents=[common], help="list an instance's backups")
    p.add_argument("--instance-id", required=True)
    p.add_argument("--status", help="only backups with this status (e.g. succeed)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("links", parents=[common], help="print a backup's download links as JSON")
    p.add_argument("--instance-id", required=True)
    p.add_argument("--backup-id", required=True)
    p.add_argument("--expiration", type=int, default=3600, help="link lifetime, 300..86400 s")

    p = sub.add_parser("download", parents=[common], help="download every file of a backup")
    p.add_argument("--instance-id", help="the DCS instance (needed unless --links-file)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--backup-id")
    which.add_argument("--latest", action="store_true", help="the newest finished backup")
    p.add_argument("-o", "--output-dir", required=True, type=Path)
    p.add_argument("--links-file", help="a saved links answer (JSON), or - for stdin")
    _add_download_options(p)

    p = sub.add_parser(
        "verify", help="check downloaded files against the manifest and their formats"
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON on stdout")
    p.add_argument("-v", "--verbose", action="count", default=0)

    p = sub.add_parser(
        "demo", parents=[common], help="download a generated backup from a local, faulty emulator"
    )
    p.add_argument("-o", "--output-dir", type=Path, default=Path("dcs-backup-demo"))
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    p = sub.add_parser("emulator", parents=[common], help="run the local DCS + OBS emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--instance-id", default="emulator-instance")
    p.add_argument("--shards", type=_positive_int, default=3)
    p.add_argument("--shard-size", type=_positive_int, default=8 * 1024 * 1024)
    p.add_argument(
        "--files",
        nargs="*",
        type=Path,
        default=[],
        help="serve these files as one backup instead of generated shards",
    )
    p.add_argument("--link-lifetime", type=_positive_float)
    p.add_argument("--rate-limit", type=_positive_int, help="bytes/s per connection")
    p.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability of each fault kind per request"
    )
    return parser


def _add_download_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=_positive_int, default=8, help="files at once (8)")
    p.add_argument(
        "--expiration",
        type=int,
        default=3600,
        help="lifetime asked for new links, 300..86400 s (3600)",
    )
    p.add_argument(
        "--read-timeout",
        type=_positive_float,
        default=30.0,
        help="seconds without data before a retry (30)",
    )
    p.add_argument(
        "--retries",
        type=_positive_int,
        default=10,
        help="failures in a row without progress before a file fails (10)",
    )
    p.add_argument(
        "--verify",
        choices=("auto", "full"),
        default="auto",
        help="auto: size, RDB CRC-64, AOF format, MD5 where no checksum; "
        "full: also MD5 and SHA-256 of every file (auto)",
    )
    p.add_argument(
        "--segment-size",
        type=_byte_size,
        default=32 << 20,
        help="fetch files of at least twice this size in ranges over several connections "
        "when connections are to spare (32M; 0 never)",
    )
    p.add_argument(
        "--max-segments", type=_positive_int, default=8, help="ranges of one file at once (8)"
    )
    p.add_argument(
        "--processes",
        type=_positive_int,
        help="download in this many processes (default: one per core, at most 4, for "
        "backups of 256 MiB or more)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start even when the disk looks too small for the backup",
    )
    p.add_argument(
        "--allow-http",
        action="store_true",
        help="accept plain http:// download links to non-loopback hosts",
    )
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dcs-backup")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def console_main() -> int:
    """The ``dcs-backup`` program (a library caller uses ``main``, which leaves signals and
    processes be)."""
    return main(ignore_late_interrupts=True, fork_workers=True)


def main(
    argv: Sequence[str] | None = None,
    *,
    ignore_late_interrupts: bool = False,
    fork_workers: bool = False,
) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if fork_workers and args.command == "download":
        _fork_spare_workers(args.processes)
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = {
        "backups": _cmd_backups,
        "links": _cmd_links,
        "download": _cmd_download,
        "verify": _cmd_verify,
        "demo": _cmd_demo,
        "emulator": _cmd_emulator,
    }[args.command]
    from ._errors import DcsBackupError
    from ._redact import redact

    try:
        try:
            return asyncio.run(command(args))
        finally:
            if ignore_late_interrupts:
                # The work is over (done, failed or interrupted): a Ctrl-C now would only kill
                # the report and turn the exit status into a signal.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        print(
            "interrupted: partial files are kept; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except DcsBackupError as exc:
        if args.verbose:
            log.exception("failed")
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: still one line, the traceback with -v
        if args.verbose:
            log.exception("internal error")
        print(
            f"internal error: {redact(f'{type(exc).__name__}: {exc}')} "
            "(run with -v for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _credentials(args: argparse.Namespace, *, required: bool = True) -> Credentials | None:
    from ._auth import Credentials
    from ._errors import ConfigError

    try:
        return Credentials.from_env(ak=args.ak, sk=args.sk, project_id=args.project_id)
    except ConfigError:
        if required:
            raise
        return None


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not getattr(args, "ca_bundle", None):
        return None
    from ._downloader import ca_bundle_context

    return ca_bundle_context(str(args.ca_bundle))


def _client(args: argparse.Namespace, credentials: Credentials) -> Client:
    from ._api import Client

    return Client(
        credentials=credentials,
        region=args.region,
        endpoint=args.endpoint,
        iam_endpoint=args.iam_endpoint,
        project_id=args.project_id,
        ssl_context=_ssl_context(args),
    )


async def _cmd_backups(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    assert credentials is not None
    async with _client(args, credentials) as client:
        backups = await client.list_backups(args.instance_id, status=args.status)
    if args.json:
        from dataclasses import asdict

        print(json.dumps([asdict(b) for b in backups], indent=2))
        return EXIT_OK
    if not backups:
        print(f"instance {args.instance_id} has no backups", file=sys.stderr)
        return EXIT_OK
    print(f"{'BACKUP ID':<38} {'CREATED':<25} {'STATUS':<10} {'FORMAT':<6} {'SIZE':>12}")
    for b in backups:
        size = f"{b.size:,}" if b.size is not None else "?"
        print(
            f"{b.backup_id:<38} {b.created_at or '?':<25} {b.status:<10} "
            f"{b.backup_format or '?':<6} {size:>12}"
        )
    return EXIT_OK


async def _cmd_links(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    assert credentials is not None
    async with _client(args, credentials) as client:
        links = await client.get_backup_links(
            args.instance_id, args.backup_id, expiration=args.expiration
        )
    print(json.dumps(links.to_json(), indent=2))
    return EXIT_OK


def _read_links_file(source: str) -> Any:
    from ._errors import ConfigError, MalformedResponseError
    from ._models import parse_links

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the links file {source}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise MalformedResponseError(f"the links file {source} is not JSON") from None
    return parse_links(data)


async def _cmd_download(args: argparse.Namespace) -> int:
    from ._config import DownloadConfig
    from ._downloader import download_backup
    from ._errors import ConfigError
    from ._retry import RetryPolicy

    links = _read_links_file(args.links_file) if args.links_file else None
    if links is None and not args.instance_id:
        raise ConfigError("download needs --instance-id (or --links-file)")
    if links is None and not (args.backup_id or args.latest):
        raise ConfigError("download needs --backup-id B or --latest")
    try:
        config = DownloadConfig(
            concurrency=args.concurrency,
            read_timeout=args.read_timeout,
            link_expiration=args.expiration,
            retry=RetryPolicy(attempts=args.retries, timeout=3600.0),
            verify=args.verify,
            processes=args.processes,
            segment_size=args.segment_size,
            max_segments=args.max_segments,
            check_space=not args.force,
            allow_http=args.allow_http,
            ca_bundle=str(args.ca_bundle) if args.ca_bundle else None,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    credentials = _credentials(args, required=links is None)
    can_refresh = credentials is not None and args.instance_id and (args.backup_id or args.latest)
    client = _client(args, credentials) if credentials is not None and can_refresh else None
    backup_id = args.backup_id or (_backup_id_from_links(links) if links else "")
    progress = _progress(args)
    try:
        if client is not None:
            async with client:
                if args.latest:
                    backup = await client.latest_backup(args.instance_id)
                    backup_id = backup.backup_id
                    print(f"latest backup: {backup_id} ({backup.created_at})", file=sys.stderr)
                result = await download_backup(
                    client,
                    args.instance_id,
                    backup_id,
                    args.output_dir,
                    links=links,
                    config=config,
                    subscribers=[progress],
                )
        else:
            result = await download_backup(
                None,
                args.instance_id or "",
                backup_id,
                args.output_dir,
                links=links,
                config=config,
                subscribers=[progress],
            )
    finally:
        progress.close()
    return _report(result, as_json=args.json)


def _backup_id_from_links(links: Any) -> str:
    # The file_path of a links answer names the backup; it keys the resume state.
    return str(links.file_path).strip("/") or "links-file"


def _progress(args: argparse.Namespace) -> Any:
    from ._progress import Progress

    return Progress(bars=False if args.no_progress or args.json else None)


def _report(result: DownloadResult, *, as_json: bool) -> int:
    summary = result.to_json()
    downloaded = sum(1 for f in result.files if f.status == "downloaded")
    skipped = sum(1 for f in result.files if f.status == "skipped")
    if downloaded == 0 and skipped == len(result.files):
        line = f"nothing to do: all {skipped} files in {result.directory} are already complete"
    else:
        line = (
            f"{downloaded} downloaded, {skipped} already complete, {len(result.failed)} failed; "
            f"{summary['bytes_received'] / 2**20:.1f} MiB in {result.seconds:.1f}s "
            f"({summary['throughput_mib_s']} MiB/s), {result.retries} retries, "
            f"{result.refreshes} link refreshes -> {result.directory}"
        )
    print(line, file=sys.stderr)
    disk_full = [f for f in result.failed if "the disk is full" in (f.error or "")]
    if disk_full:
        print(
            f"error: the disk is full in {result.directory}: free some space and run the same "
            f"command again to resume ({len(disk_full)} files kept as partials)",
            file=sys.stderr,
        )
    for failed in result.failed:
        if failed not in disk_full:
            print(f"failed: {failed.name}: {failed.error}", file=sys.stderr)
    if result.failed and not disk_full:
        print("the partial files are kept: run the same command again to resume", file=sys.stderr)
    if as_json:
        print(json.dumps(summary, indent=2))
    return EXIT_OK if result.ok else EXIT_FAILED


async def _cmd_verify(args: argparse.Namespace) -> int:
    from ._errors import ConfigError
    from ._verify import verify_directory

    if not args.directory.is_dir():
        raise ConfigError(f"{args.directory} is not a directory")
    reports = await verify_directory(args.directory)
    if not reports:
        raise ConfigError(f"{args.directory} holds no manifest and no .rdb or .aof files")
    bad = [r for r in reports if not r.ok]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "ok": r.ok,
                        "problems": r.problems,
                        "verified": r.checks.verified if r.checks else [],
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    for report in reports:
        if report.ok:
            what = ", ".join(report.checks.verified) if report.checks else ""
            print(f"ok   {report.name} ({what})", file=sys.stderr)
        else:
            print(f"BAD  {report.name}: {'; '.join(report.problems)}", file=sys.stderr)
    print(f"{len(reports) - len(bad)} good, {len(bad)} bad in {args.directory}", file=sys.stderr)
    return EXIT_FAILED if bad else EXIT_OK


async def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    progress = _progress(args)
    print(
        f"demo: a local emulator serves a 6-shard backup with short-lived links and "
        f"injected faults; downloading into {args.output_dir}/",
        file=sys.stderr,
    )
    try:
        result, mismatched = await run_demo(args.output_dir, subscribers=[progress])
    finally:
        progress.close()
    code = _report(result, as_json=args.json)
    if mismatched:
        print(
            f"demo: {len(mismatched)} files differ from the source: {', '.join(mismatched)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if code == EXIT_OK:
        print(
            f"demo: every file is byte-for-byte identical to the source, in {result.directory}",
            file=sys.stderr,
        )
    return code


async def _cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator import Emulator, Faults

    p = args.fault_rate
    faults = Faults(
        link_lifetime=args.link_lifetime,
        rate_limit=args.rate_limit,
        reset=p,
        error_500=p,
        slowdown_503=p,
        truncate=p,
        stall=p,
        stall_seconds=60.0,
        ignore_range=p,
    )
    emulator = Emulator(host=args.host, port=args.port, faults=faults)
    if args.files:
        backup_id = emulator.add_backup(args.instance_id, {path.name: path for path in args.files})
    else:
        backup_id = emulator.add_generated_backup(
            args.instance_id, shards=args.shards, shard_size=args.shard_size
        )
    async with emulator:
        print(
            f"emulator on {emulator.endpoint}: instance {args.instance_id}, backup {backup_id}\n"
            f"  export DCS_BACKUP_ENDPOINT={emulator.endpoint} "
            f"HUAWEICLOUD_SDK_IAM_ENDPOINT={emulator.endpoint} "
            f"HUAWEICLOUD_SDK_REGION={emulator.region}\n"
            f"  export HUAWEICLOUD_SDK_AK={emulator.ak} HUAWEICLOUD_SDK_SK={emulator.sk}\n"
            "  (these are the emulator's own throwaway keys) Ctrl-C stops it.",
            flush=True,
        )
        await asyncio.Event().wait()
    return EXIT_OK  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
