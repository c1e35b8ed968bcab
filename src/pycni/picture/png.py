"""SVG to PNG through ``rsvg-convert`` (Debian ``librsvg2-bin``): librsvg renders the SVG, pycni does not.

A missing converter is a clear error naming the package, never a traceback;
``--svg`` needs nothing outside the standard library.
"""

from __future__ import annotations

import shutil
import subprocess

from pycni.picture.model import PictureError

CONVERTER = "rsvg-convert"


def converter() -> str:
    """The converter's path; PictureError naming the package to install if it is not on PATH."""
    path = shutil.which(CONVERTER)
    if path is None:
        raise PictureError(
            f"--png needs {CONVERTER}, which is not on PATH: apt-get install librsvg2-bin (or write --svg only)"
        )
    return path


def to_png(svg: str, timeout: float = 60.0) -> bytes:
    path = converter()
    try:
        proc = subprocess.run(
            [path, "--format", "png"], input=svg.encode(), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise PictureError(f"{CONVERTER} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0 or not proc.stdout:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise PictureError(f"{CONVERTER} failed (exit {proc.returncode}): {why[-1] if why else 'no output'}")
    return proc.stdout
