#!/usr/bin/env python3
"""Crash and resume: kill a download at random moments, rerun, and check that nothing is lost.

    python scripts/crash_resume.py                       # 20 SIGKILL cycles, whole-file mode
    python scripts/crash_resume.py --signal INT --mode segmented --cycles 10

Each cycle starts `dcs-backup download` against a local emulator, kills it (SIGKILL, or
SIGINT and expects exit 130) at a random moment, and starts it again; a last run completes.
Then every file must be byte-identical to the source, no incomplete file may ever carry its
final name, and the bytes the server sent in all must stay within --max-ratio of the size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from dcs_backup.emulator import Emulator, Faults

MiB = 1024 * 1024


@dataclass
class Outcome:
    cycles: int
    killed: int
    exits: list[int]
    bytes_sent: int
    bytes_needed: int
    exact: bool
    premature_names: list[str]

    @property
    def ratio(self) -> float:
        return self.bytes_sent / self.bytes_needed


async def crash_resume(args: argparse.Namespace) -> Outcome:
    rng = random.Random(args.seed)
    sig = signal.SIGKILL if args.signal == "KILL" else signal.SIGINT
    faults = Faults(rate_limit=args.rate_limit)
    async with Emulator(faults=faults) as emu:
        backup_id = emu.add_generated_backup(
            "crash", shards=args.shards, shard_size=args.shard_size
        )
        needed = sum(obj.size for obj in emu.objects.values())
        env = {
            **os.environ,
            "DCS_BACKUP_ENDPOINT": emu.endpoint,
            "HUAWEICLOUD_SDK_IAM_ENDPOINT": emu.endpoint,
            "HUAWEICLOUD_SDK_REGION": emu.region,
            "HUAWEICLOUD_SDK_AK": emu.ak,
            "HUAWEICLOUD_SDK_SK": emu.sk,
        }
        segment = "256K" if args.mode == "segmented" else "0"
        with tempfile.TemporaryDirectory(prefix="dcs-crash-") as tmp:
            out = Path(tmp)
            command = [
                sys.executable,
                "-m",
                "dcs_backup",
                "download",
                "--instance-id",
                "crash",
                "--backup-id",
                backup_id,
                "-o",
                str(out),
                "--no-progress",
                "--segment-size",
                segment,
                "--concurrency",
                str(args.concurrency),
                "--processes",
                str(args.processes),
            ]
            exits: list[int] = []
            premature: list[str] = []
            killed = 0
            for _ in range(args.cycles):
                proc = await asyncio.create_subprocess_exec(
                    *command, env=env, stderr=asyncio.subprocess.DEVNULL
                )
                try:
                    await asyncio.wait_for(proc.wait(), rng.uniform(args.min_wait, args.max_wait))
                except asyncio.TimeoutError:
                    proc.send_signal(sig)
                    killed += 1
                exits.append(await proc.wait())
                # Invariant: a final name only ever holds a complete, correct file.
                for path in out.glob("*.rdb"):
                    if path.read_bytes() != emu.object_bytes("crash", backup_id, path.name):
                        premature.append(path.name)
            proc = await asyncio.create_subprocess_exec(
                *command, env=env, stderr=asyncio.subprocess.DEVNULL
            )
            exits.append(await proc.wait())
            backup = emu.backups["crash"][0]
            exact = all(
                (out / name).exists()
                and (out / name).read_bytes() == emu.object_bytes("crash", backup_id, name)
                for name in backup.files
            )
        return Outcome(
            args.cycles, killed, exits, emu.stats.bytes_sent, needed, exact, sorted(set(premature))
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--signal", choices=["KILL", "INT"], default="KILL")
    p.add_argument("--mode", choices=["whole", "segmented"], default="whole")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--shard-size", type=int, default=32 * MiB)
    p.add_argument("--rate-limit", type=int, default=4 * MiB, help="bytes/s per connection")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--min-wait", type=float, default=0.4, help="seconds before a kill, at least")
    p.add_argument("--max-wait", type=float, default=1.2)
    p.add_argument("--max-ratio", type=float, default=1.3)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcome = asyncio.run(crash_resume(args))
    wanted_exit = -signal.SIGKILL if args.signal == "KILL" else 130
    interrupted = [code for code in outcome.exits[:-1] if code != 0]
    bad_exits = [code for code in interrupted if code != wanted_exit]
    ok = (
        outcome.exact
        and not outcome.premature_names
        and not bad_exits
        and outcome.exits[-1] == 0
        and outcome.ratio <= args.max_ratio
    )
    print(
        f"crash-resume ({args.mode}, SIG{args.signal}): {outcome.cycles} cycles, "
        f"{outcome.killed} interrupted mid-download, exit codes {sorted(set(outcome.exits))}, "
        f"final run exit {outcome.exits[-1]}"
    )
    print(
        f"  files exact: {outcome.exact}; incomplete files under a final name: "
        f"{outcome.premature_names or 'none'}"
    )
    print(
        f"  bytes sent / needed: {outcome.ratio:.3f} (allowed {args.max_ratio}); "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
