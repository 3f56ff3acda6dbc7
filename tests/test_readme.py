"""The README's library example runs as written (against the emulator it starts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_library_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## Library\n\n```python\n(.*?)```", readme, re.S)
    assert example, "the README lost its library example"
    script = tmp_path / "example.py"
    script.write_text(example.group(1))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("True ")
    assert len(list((tmp_path / "backup-dir").glob("*.rdb"))) == 3


def test_readme_first_lines_are_the_newcomer_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:8]
    assert any("dcs-backup demo" in line for line in head)
    assert any("pytest" in line and "[test]" in line for line in head)
