"""Write tests/file_durations.json from a JUnit XML report: seconds per test file, the slowest first.

    .venv/bin/pytest -n 4 --dist loadfile -m "not serial" --junitxml=/tmp/report.xml tests
    .venv/bin/python scripts/file_durations.py /tmp/report.xml

``make test`` hands whole files to its workers slowest first (tests/conftest.py
orders the collection by this table), so that the long cluster files do not
start last and run on alone while the other workers idle. Regenerate it when
files are added or their cost changes much; a file missing from it counts as
the median file.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

TABLE = Path(__file__).resolve().parent.parent / "tests" / "file_durations.json"


def per_file(report: str) -> dict[str, float]:
    seconds: Counter[str] = Counter()
    for case in ElementTree.parse(report).iter("testcase"):
        module = case.get("classname", "")
        parts = module.split(".")
        while parts and not Path(*parts).with_suffix(".py").exists():
            parts.pop()  # a class inside the module: drop it
        if parts:
            seconds[str(Path(*parts).with_suffix(".py"))] += float(case.get("time") or 0)
    return {name: round(value, 1) for name, value in seconds.most_common()}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: file_durations.py REPORT.xml", file=sys.stderr)
        return 2
    TABLE.write_text(json.dumps(per_file(argv[0]), indent=1) + "\n")
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
