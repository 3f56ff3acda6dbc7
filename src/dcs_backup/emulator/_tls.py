"""Throwaway TLS files for serving the emulator (or nginx) over HTTPS on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def make_certificates(folder: Path) -> dict[str, Path]:
    """A private CA and a certificate for 127.0.0.1 signed by it, made with the openssl CLI.

    Returns the paths of ``ca`` (to trust), ``cert`` and ``key`` (to serve with).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("making TLS certificates needs the openssl command (Debian: openssl)")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    )  # fmt: skip
    run(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem",
    )  # fmt: skip
    return {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
