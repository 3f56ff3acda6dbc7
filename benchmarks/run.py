#!/usr/bin/env python3
"""Benchmark dcs-backup against wget2, curl and aria2c on the same files, in the same run.

    python benchmarks/run.py                       # 8 x 256 MiB, 3 interleaved runs of each
    python benchmarks/run.py --scenario tls        # the same over HTTPS, as OBS serves it
    python benchmarks/run.py --scenario small      # 64 x 256 KiB: per-file overhead
    python benchmarks/run.py --scenario memory     # peak RSS, 256 MiB files vs 2 GiB files
    python benchmarks/run.py --scenario capped     # one 2 GiB file, per-connection rate cap

Files are served by nginx on 127.0.0.1 (the capped scenario: by the project's emulator, whose
per-connection cap plays a cloud store's). Debian's nginx, wget2, curl, aria2 and time are
installed when missing (as root). Every run starts from an empty output directory; results go
to benchmarks/results/<scenario>.md with a PNG chart (matplotlib, from the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "results"
MiB = 1024 * 1024
TOOLS = {
    "nginx": "nginx-light",
    "wget2": "wget2",
    "curl": "curl",
    "aria2c": "aria2",
    "openssl": "openssl",
}


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if not Path("/usr/bin/time").exists():
        missing.append("time")
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"benchmark needs Debian packages {' '.join(missing)}: install them first")
    print(f"installing {' '.join(missing)} ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing], check=True, stdout=subprocess.DEVNULL
    )


def make_data(count: int, size: int) -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from dcs_backup.emulator import make_rdb, shard_name

    folder = WORK / f"data-{count}x{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / shard_name(i, count)
        if not path.exists() or path.stat().st_size < size - 64:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(make_rdb(size, seed=i, value_size=64 * 1024))
            tmp.rename(path)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    def __init__(self, root: Path, tls: dict[str, Path] | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nginx-", dir=WORK))
        listen = f"127.0.0.1:{self.port}"
        if tls:
            listen += (
                f" ssl; ssl_certificate {tls['cert']}; ssl_certificate_key {tls['key']};"
                " ssl_protocols TLSv1.2 TLSv1.3"
            )
        (self.dir / "nginx.conf").write_text(f"""
worker_processes 2;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000;
  client_body_temp_path {self.dir}; proxy_temp_path {self.dir}; fastcgi_temp_path {self.dir};
  uwsgi_temp_path {self.dir}; scgi_temp_path {self.dir};
  server {{ listen {listen}; root {root}; }}
}}
""")
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir), "-g", "daemon off;"]
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for_port(port: int) -> None:
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def tree_memory(root_pid: int) -> tuple[int, int]:
    """Resident bytes of a process and all its descendants: (RSS, PSS).

    RSS counts a page shared by two processes (a forked worker's imported modules) twice;
    PSS splits it between them, so it is the memory the tree really holds.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    totals = {"Rss": 0, "Pss": 0}
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            key, _, value = line.partition(":")
            if key in totals:
                totals[key] += int(value.split()[0]) * 1024  # kB
    return totals["Rss"], totals["Pss"]


@dataclass
class Run:
    tool: str
    wall: float
    cpu: float
    rss: int
    pss: int
    ok: bool


@dataclass
class Tool:
    name: str
    command: list[str]
    shell: bool = False
    writes: bool = True
    runs: list[Run] = field(default_factory=list)


def timed(tool: Tool, out: Path, expected: dict[str, int]) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(["sync"], check=False)
    timing = out.parent / "time.txt"
    command = ["/usr/bin/time", "-f", "%e %U %S", "-o", str(timing)]
    command += ["sh", "-c", tool.command[0]] if tool.shell else tool.command
    peak_rss = peak_pss = 0
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_rss, peak_pss
        while not done.wait(0.05):
            rss, pss = tree_memory(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    wall, user, sys_ = (float(x) for x in timing.read_text().split()[-3:])
    ok = proc.returncode == 0
    if ok and tool.writes:
        got = {p.name: p.stat().st_size for p in out.iterdir() if p.name in expected}
        ok = got == expected
    if not ok:
        print(f"  {tool.name}: FAILED (exit {proc.returncode}) {err.decode()[-300:]}", flush=True)
    return Run(tool.name, wall, user + sys_, peak_rss, peak_pss, ok)


def tools_for(
    data: Path, base_url: str, parallel: int, work: Path, links: Path, ca: Path | None = None
) -> list[Tool]:
    """Every tool on the same files; with ``ca``, each told to trust that CA (HTTPS)."""
    names = sorted(p.name for p in data.iterdir() if not p.name.endswith(".tmp"))
    urls = work / "urls.txt"
    urls.write_text("".join(f"{base_url}/{n}\n" for n in names))
    curl_cfg = work / "curl.cfg"
    curl_cfg.write_text(
        (f'cacert = "{ca}"\n' if ca else "")
        + "".join(f'url = "{base_url}/{n}"\noutput = "{work}/out/{n}"\n' for n in names)
    )
    trust = [f"--ca-certificate={ca}"] if ca else []
    wget2 = ["wget2", "-q", *trust, "--max-threads", str(parallel)]
    out = work / "out"
    dd = " ".join(f"dd if={data}/{n} of={out}/{n} bs=1M status=none &" for n in names)
    return [
        Tool("dcs-backup", dcs_command(links, out, ca)),
        Tool(
            "wget2",
            [*wget2, "-P", str(out), "-i", str(urls)],
        ),
        # dcs-backup fsyncs every file before naming it; the others leave their bytes in the
        # page cache. The same download made durable, for comparison:
        Tool(
            "wget2, then sync",
            [f"wget2 -q {' '.join(trust)} --max-threads {parallel} -P {out} -i {urls} && sync"],
            shell=True,
        ),
        Tool(
            "curl",
            ["curl", "-s", "--parallel", "--parallel-max", str(parallel), "-K", str(curl_cfg)],
        ),
        Tool(
            "aria2c",
            [
                "aria2c",
                "-q",
                *trust,
                "-i",
                str(urls),
                "-j",
                str(parallel),
                "-x",
                "1",
                "-d",
                str(out),
                "--allow-overwrite=true",
            ],
        ),
        Tool(
            "floor: wget2 to /dev/null",
            ["wget2", "-q", "--max-threads", str(parallel), "-O", "/dev/null", "-i", str(urls)],
            writes=False,
        ),
        Tool(f"floor: {len(names)} x dd", [f"{dd} wait"], shell=True),
    ]


def dcs_command(links: Path, out: Path, ca: Path | None = None) -> list[str]:
    """dcs-backup with its defaults, downloading from a links file."""
    command = [sys.executable, "-m", "dcs_backup", "download", "--links-file", str(links)]
    command += ["-o", str(out), "--no-progress"]
    return command + (["--ca-bundle", str(ca)] if ca else [])


def write_links(data: Path, base_url: str, path: Path) -> None:
    names = sorted(p.name for p in data.iterdir() if not p.name.endswith(".tmp"))
    # nginx ignores the query; the Signature stands in for OBS's, never checked here.
    path.write_text(
        json.dumps(
            {
                "file_path": "bench/",
                "bucket_name": "bench",
                "links": [
                    {
                        "file_name": n,
                        "link": f"{base_url}/{n}?AWSAccessKeyId=BENCH&Expires=4102444800"
                        f"&Signature=bench",
                    }
                    for n in names
                ],
            }
        )
    )


def machine() -> str:
    import aiohttp

    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}"
    )


def report(scenario: str, title: str, tools: list[Tool], total_bytes: int, note: str) -> str:
    lines = [
        f"# Benchmark: {title}",
        "",
        f"Machine: {machine()}.  ",
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{len(tools[0].runs)} interleaved runs per tool, medians.",
        "",
        note,
        "",
        "| tool | wall s | MiB/s | CPU s (user+sys) | peak PSS MiB | peak RSS MiB "
        "| dcs-backup / tool (wall) |",
        "|---|---|---|---|---|---|---|",
    ]
    med = {t.name: statistics.median(r.wall for r in t.runs) for t in tools}
    dcs = med.get("dcs-backup")
    for t in tools:
        wall = med[t.name]
        cpu = statistics.median(r.cpu for r in t.runs)
        rss = statistics.median(r.rss for r in t.runs) / MiB
        pss = statistics.median(r.pss for r in t.runs) / MiB
        ratio = f"{dcs / wall:.2f}" if dcs and t.name != "dcs-backup" else ""
        bad = "" if all(r.ok for r in t.runs) else " (FAILED runs)"
        lines.append(
            f"| {t.name}{bad} | {wall:.2f} | {total_bytes / MiB / wall:.0f} | {cpu:.2f} "
            f"| {pss:.0f} | {rss:.0f} | {ratio} |"
        )
    lines += ["", "Every run:", "", "| tool | wall s |", "|---|---|"]
    lines += [f"| {t.name} | {', '.join(f'{r.wall:.2f}' for r in t.runs)} |" for t in tools]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{scenario}.md").write_text(text)
    chart(scenario, title, tools, med, total_bytes)
    return text


def chart(
    scenario: str, title: str, tools: list[Tool], med: dict[str, float], total_bytes: int
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no chart: pip install -e '.[bench]' for matplotlib)")
        return
    names = [t.name for t in tools]
    speeds = [total_bytes / MiB / med[n] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.2))
    colors = [
        "tab:green" if n == "dcs-backup" else "tab:gray" if n.startswith("floor") else "tab:blue"
        for n in names
    ]
    ax.barh(names[::-1], speeds[::-1], color=colors[::-1])
    ax.set_xlabel("MiB/s (median)")
    ax.set_title(title)
    for y, v in enumerate(speeds[::-1]):
        ax.text(v, y, f" {v:.0f}", va="center")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{scenario}.png", dpi=100)
    plt.close(fig)


def run_scenario(tools: list[Tool], runs: int, out: Path, expected: dict[str, int]) -> None:
    for i in range(runs):
        for tool in tools:
            run = timed(tool, out, expected)
            tool.runs.append(run)
            print(
                f"  run {i + 1} {tool.name:28} {run.wall:6.2f} s  {run.pss / MiB:6.0f} MiB PSS"
                + ("" if run.ok else "  FAILED"),
                flush=True,
            )
    shutil.rmtree(out, ignore_errors=True)


def parallel(
    args: argparse.Namespace,
    count: int,
    size: int,
    scenario: str,
    title: str,
    only: list[str] | None = None,
    tls: bool = False,
) -> str:
    data = make_data(count, size)
    expected = {p.name: p.stat().st_size for p in data.iterdir() if not p.name.endswith(".tmp")}
    work = Path(tempfile.mkdtemp(prefix=f"{scenario}-", dir=WORK))
    certs = None
    if tls:
        from dcs_backup.emulator import make_certificates  # make_data put src/ on the path

        certs = make_certificates(work / "tls")
    server = Nginx(data, certs)
    try:
        base = f"{'https' if tls else 'http'}://127.0.0.1:{server.port}"
        write_links(data, base, work / "links.json")
        ca = certs["ca"] if certs else None
        tools = tools_for(data, base, min(count, 8), work, work / "links.json", ca)
        for wanted in (only, args.tools):  # the scenario's tools, then the command line's
            if wanted:
                tools = [t for t in tools if t.name in wanted]
        run_scenario(tools, args.runs, work / "out", expected)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    note = (
        f"{count} files x {size / MiB:g} MiB served by nginx on 127.0.0.1"
        f"{' over TLS (a private CA every tool is told to trust)' if tls else ''}; dcs-backup with "
        "its defaults (verification on: size and RDB CRC-64) from a links file."
    )
    return report(scenario, title, tools, count * size, note)


def capped(args: argparse.Namespace) -> str:
    size = args.capped_mib * MiB
    data = make_data(1, size)
    path = next(p for p in data.iterdir() if not p.name.endswith(".tmp"))
    port = free_port()
    rate = args.cap_mib * MiB
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dcs_backup",
            "emulator",
            "--port",
            str(port),
            "--files",
            str(path),
            "--rate-limit",
            str(rate),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    work = Path(tempfile.mkdtemp(prefix="capped-", dir=WORK))
    try:
        first = emulator.stdout.readline() if emulator.stdout else ""
        backup_id = first.split("backup ")[-1].strip()
        env = {
            **os.environ,
            "DCS_BACKUP_ENDPOINT": f"http://127.0.0.1:{port}",
            "HUAWEICLOUD_SDK_IAM_ENDPOINT": f"http://127.0.0.1:{port}",
            "HUAWEICLOUD_SDK_REGION": "emulator-1",
            "HUAWEICLOUD_SDK_AK": "EMULATORACCESSKEY000",
            "HUAWEICLOUD_SDK_SK": "emulator-secret-key-do-not-use",
        }
        links = subprocess.run(
            [
                sys.executable,
                "-m",
                "dcs_backup",
                "links",
                "--instance-id",
                "emulator-instance",
                "--backup-id",
                backup_id,
                "--expiration",
                "86400",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (work / "links.json").write_text(links)
        url = json.loads(links)["links"][0]["link"]
        out = work / "out"
        tools = [
            Tool("dcs-backup", dcs_command(work / "links.json", out)),
            Tool("curl (one connection)", ["curl", "-s", "-o", str(out / path.name), url]),
            Tool(
                "aria2c -x 8 (segmented)",
                [
                    "aria2c",
                    "-q",
                    "-x",
                    "8",
                    "-s",
                    "8",
                    "-d",
                    str(out),
                    "-o",
                    path.name,
                    "--allow-overwrite=true",
                    url,
                ],
            ),
        ]
        run_scenario(tools, args.runs, out, {path.name: path.stat().st_size})
    finally:
        emulator.terminate()
        emulator.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    note = (
        f"One {size / MiB:g} MiB file from the emulator, which caps every connection at "
        f"{args.cap_mib} MiB/s as cloud object stores cap single streams."
    )
    return report("capped", "one large file, per-connection cap", tools, size, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        choices=["parallel", "tls", "small", "memory", "capped", "all"],
        default="parallel",
    )
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size-mib", type=float, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--capped-mib", type=int, default=2048)
    parser.add_argument("--cap-mib", type=int, default=40, help="per-connection cap, MiB/s")
    parser.add_argument("--tools", nargs="*", help="only these tools (names as in the table)")
    args = parser.parse_args()
    ensure_tools()
    WORK.mkdir(parents=True, exist_ok=True)
    chosen = (
        ["parallel", "tls", "small", "memory", "capped"]
        if args.scenario == "all"
        else [args.scenario]
    )
    for scenario in chosen:
        print(f"== {scenario}", flush=True)
        if scenario == "parallel":
            text = parallel(
                args,
                args.files,
                int(args.size_mib * MiB),
                "parallel",
                f"{args.files} x {args.size_mib:g} MiB",
            )
        elif scenario == "tls":
            text = parallel(
                args,
                args.files,
                int(args.size_mib * MiB),
                "tls",
                f"{args.files} x {args.size_mib:g} MiB over HTTPS",
                only=["dcs-backup", "wget2", "wget2, then sync", "curl", "aria2c"],
                tls=True,
            )
        elif scenario == "small":
            text = parallel(
                args,
                64,
                256 * 1024,
                "small",
                "64 x 256 KiB",
                only=["dcs-backup", "wget2", "curl", "aria2c"],
            )
        elif scenario == "memory":
            text = parallel(args, 2, 2048 * MiB, "memory-2GiB", "2 x 2 GiB", only=["dcs-backup"])
            text += parallel(
                args, 8, 256 * MiB, "memory-256MiB", "8 x 256 MiB", only=["dcs-backup"]
            )
        else:
            text = capped(args)
        print(text, flush=True)


if __name__ == "__main__":
    main()
