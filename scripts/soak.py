#!/usr/bin/env python3
"""Soak: download a 64-shard backup through a faulty emulator, round after round, and check
every byte.

    python scripts/soak.py                    # 64 shards x 4 MiB, 3 rounds, 30% faults, 3 s links
    python scripts/soak.py --rounds 1 --shards 8 --shard-size 262144

Each round downloads the whole backup into an empty directory with the real engine while the
emulator resets connections, answers 500 and 503 SlowDown, truncates and stalls bodies,
ignores Range, cuts every response after a few MB and lets links expire every few seconds.
Then every file is compared byte for byte with the source and `verify` checks the manifest.
Exit status 0 when every round is exact and within the bytes budget.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from dcs_backup import Client, DownloadConfig, RetryPolicy, download_backup
from dcs_backup._verify import verify_directory
from dcs_backup.emulator import FAULT_KINDS, Emulator, Faults

MiB = 1024 * 1024
SOAK_KINDS = ("reset", "error_500", "slowdown_503", "truncate", "stall", "ignore_range")


@dataclass
class Round:
    number: int
    seconds: float
    faults: dict[str, int]
    refreshes: int
    retries: int
    bytes_sent: int
    bytes_needed: int
    exact: bool
    verified: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exact and self.verified


async def soak_round(number: int, args: argparse.Namespace, workdir: Path) -> Round:
    per_kind = args.fault_rate / len(SOAK_KINDS)
    faults = Faults(
        link_lifetime=args.link_lifetime,
        cut_after=args.cut_after,
        rate_limit=args.rate_limit or None,
        stall_seconds=args.read_timeout * 2,
        seed=args.seed + number,
        **{kind: per_kind for kind in SOAK_KINDS},
    )
    async with Emulator(faults=faults) as emu:
        backup_id = emu.add_generated_backup(
            "soak", shards=args.shards, shard_size=args.shard_size, seed=number
        )
        needed = sum(obj.size for obj in emu.objects.values())
        out = workdir / f"round-{number}"
        config = DownloadConfig(
            concurrency=args.concurrency,
            read_timeout=args.read_timeout,
            link_expiration=300,
            retry=RetryPolicy(attempts=20, timeout=600, wait_initial=0.05, wait_max=1.0),
            processes=args.processes,
            segment_size=args.segment_size,
        )
        started = time.monotonic()
        async with Client(credentials=emu.credentials(), endpoint=emu.endpoint) as client:
            result = await download_backup(client, "soak", backup_id, out, config=config)
        seconds = time.monotonic() - started
        problems = [f"{f.name}: {f.error}" for f in result.failed]
        backup = emu.backups["soak"][0]
        for name in backup.files:
            path = out / name
            if not path.exists() or path.read_bytes() != emu.object_bytes("soak", backup_id, name):
                problems.append(f"{name}: not byte-identical")
        exact = not problems
        reports = await verify_directory(out)
        verified = len(reports) == args.shards and all(r.ok for r in reports)
        return Round(
            number,
            seconds,
            {k: emu.stats.faults[k] for k in FAULT_KINDS if emu.stats.faults[k]},
            result.refreshes,
            result.retries,
            emu.stats.bytes_sent,
            needed,
            exact,
            verified,
            problems,
        )


def table(rounds: list[Round], args: argparse.Namespace) -> str:
    kinds = [k for k in SOAK_KINDS if any(k in r.faults for r in rounds)]
    head = ["round", "s", *kinds, "refresh calls", "retries", "sent / needed", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rounds:
        cells = [
            str(r.number),
            f"{r.seconds:.1f}",
            *(str(r.faults.get(k, 0)) for k in kinds),
            str(r.refreshes),
            str(r.retries),
            f"{r.bytes_sent / r.bytes_needed:.3f}",
            "exact, verified" if r.ok else "FAILED",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        f"soak: {args.shards} shards x {args.shard_size / MiB:g} MiB, {args.fault_rate:.0%} "
        f"faults, {args.link_lifetime:g} s links, responses cut after "
        f"{args.cut_after / MiB:g} MiB, {args.rate_limit / MiB:g} MiB/s per connection\n\n"
        + "\n".join(lines)
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--shards", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=4 * MiB)
    p.add_argument("--fault-rate", type=float, default=0.30, help="share of requests that fail")
    p.add_argument("--link-lifetime", type=float, default=3.0)
    p.add_argument("--cut-after", type=int, default=MiB, help="bytes per response at most")
    p.add_argument(
        "--rate-limit",
        type=int,
        default=4 * MiB,
        help="bytes/s per connection (0: none), so rounds outlive the links",
    )
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--read-timeout", type=float, default=1.0)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--segment-size", type=int, default=32 * MiB)
    p.add_argument("--max-ratio", type=float, default=1.2, help="bytes sent / needed allowed")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


async def soak(args: argparse.Namespace) -> list[Round]:
    with tempfile.TemporaryDirectory(prefix="dcs-soak-") as tmp:
        rounds = []
        for number in range(1, args.rounds + 1):
            rounds.append(await soak_round(number, args, Path(tmp)))
            print(f"round {number}: {'ok' if rounds[-1].ok else 'FAILED'}", flush=True)
        return rounds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rounds = asyncio.run(soak(args))
    print(table(rounds, args))
    for r in rounds:
        for problem in r.problems:
            print(f"round {r.number}: {problem}")
    ratio = max(r.bytes_sent / r.bytes_needed for r in rounds)
    ok = all(r.ok for r in rounds) and ratio <= args.max_ratio
    print(
        f"\nworst bytes sent / needed: {ratio:.3f} (allowed {args.max_ratio}); "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
