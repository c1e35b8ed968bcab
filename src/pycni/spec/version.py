"""CNI spec versions: parsing, comparison and the gates that depend on them.

Mirrors ``cni/pkg/version``: an empty version means 0.1.0, at most three
dot-separated integer parts, missing parts are zero, comparison is numeric.
"""

from __future__ import annotations

from collections.abc import Iterable

ALL_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LEGACY_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0")
CURRENT_VERSION = "1.1.0"

VersionTuple = tuple[int, int, int]


class VersionError(ValueError):
    """A version string that does not parse."""


def parse_version(version: str) -> VersionTuple:
    """Parse ``major.minor.micro``; the empty string is 0.1.0 as in libcni."""
    if version == "":
        return (0, 1, 0)
    parts = version.split(".")
    if len(parts) >= 4:
        raise VersionError(f"invalid version {version!r}: too many parts")
    numbers = [0, 0, 0]
    for index, (label, part) in enumerate(zip(("major", "minor", "micro"), parts, strict=False)):
        if not _is_go_int(part):
            raise VersionError(f"failed to convert {label} version part {part!r} of {version!r}")
        numbers[index] = int(part)
    return (numbers[0], numbers[1], numbers[2])


def _is_go_int(text: str) -> bool:
    """True for what Go's strconv.Atoi accepts: optional sign, ASCII digits."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    return digits.isascii() and digits.isdigit()


def greater_than_or_equal(version: str, other: str) -> bool:
    return parse_version(version) >= parse_version(other)


def greater_than(version: str, other: str) -> bool:
    return parse_version(version) > parse_version(other)


def highest(versions: Iterable[str]) -> str:
    """The numerically highest version of a non-empty collection."""
    return max(versions, key=parse_version)


# The minimum config version of the verbs that came later (the runtime and the plugin SDK both gate on it).
VERB_MINIMUM_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


def supports_verb(verb: str, config_version: str) -> bool:
    """Whether a config of ``config_version`` may be used with ``verb`` at all."""
    minimum = VERB_MINIMUM_VERSION.get(verb)
    return minimum is None or greater_than_or_equal(config_version, minimum)


def versions_from(first: str) -> tuple[str, ...]:
    """All spec versions starting at ``first`` (Go's ``VersionsStartingFrom``)."""
    return tuple(v for v in ALL_VERSIONS if greater_than_or_equal(v, first))
