"""Helpers to put test plugin executables on a CNI_PATH."""

from __future__ import annotations

import os
import sys
from pathlib import Path

NOOP = Path(__file__).with_name("noop_plugin.py")


def install_script(directory: str | os.PathLike[str], name: str, script: Path, flags: str = "-S") -> str:
    """An executable ``directory/name`` that runs ``script`` with this interpreter."""
    path = os.path.join(directory, name)
    with open(path, "w") as handle:
        handle.write(
            f"#!{sys.executable} {flags}\nimport runpy\nrunpy.run_path({str(script)!r}, run_name='__main__')\n"
        )
    os.chmod(path, 0o755)
    return path


def install_noop(directory: str | os.PathLike[str], *names: str) -> None:
    for name in names:
        install_script(directory, name, NOOP)
