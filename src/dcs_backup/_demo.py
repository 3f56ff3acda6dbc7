"""``dcs-backup demo``: the real engine against the local emulator, faults and all."""

from __future__ import annotations

from pathlib import Path

from ._api import Client
from ._config import DownloadConfig
from ._downloader import download_backup
from ._events import Subscriber
from ._result import DownloadResult
from .emulator import Emulator, Faults

DEMO_INSTANCE = "demo-instance-0001"
MiB = 1024 * 1024


async def run_demo(
    output_dir: Path, *, subscribers: list[Subscriber], shards: int = 6
) -> tuple[DownloadResult, list[str]]:
    """Download a generated backup of ``shards`` RDB files from a faulty local emulator.

    Returns the result and the names of files whose bytes differ from the served ones.
    """
    faults = Faults(
        link_lifetime=2.0,  # shorter than the download: links get refreshed on the way
        rate_limit=2 * MiB,  # per connection, so that the bars have something to show
        reset=0.04,
        error_500=0.04,
        slowdown_503=0.04,
        truncate=0.04,
    )
    async with Emulator(faults=faults) as emulator:
        sizes = [(4 + 2 * (i % 4)) * MiB for i in range(shards)]
        backup_id = emulator.add_generated_backup(DEMO_INSTANCE, shard_size=sizes, seed=7)
        async with Client(
            credentials=emulator.credentials(),
            region=emulator.region,
            endpoint=emulator.endpoint,
            iam_endpoint=emulator.endpoint,
        ) as client:
            backup = await client.latest_backup(DEMO_INSTANCE)
            assert backup.backup_id == backup_id
            result = await download_backup(
                client,
                DEMO_INSTANCE,
                backup_id,
                output_dir,
                config=DownloadConfig(concurrency=4, read_timeout=10.0),
                subscribers=subscribers,
            )
        mismatched = [
            f.name
            for f in result.files
            if f.status != "failed"
            and f.path.read_bytes() != emulator.object_bytes(DEMO_INSTANCE, backup_id, f.name)
        ]
    return result, mismatched
