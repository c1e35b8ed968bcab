"""Argument checks every backend shares, and the key range a prefix spans.

Checking here, before any backend sees a call, is what makes the three
backends fail alike: etcd would refuse an empty key or an oversized value
with its own wording, sqlite would store either.
"""

from __future__ import annotations

from pycni.datastore.errors import InvalidArgument
from pycni.datastore.model import MAX_TTL, MAX_VALUE_BYTES

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def _encoded(what: str, text: object) -> bytes:
    if not isinstance(text, str):
        raise InvalidArgument(f"a datastore {what} must be a string, not {type(text).__name__}")
    try:
        return text.encode()
    except UnicodeEncodeError as error:
        raise InvalidArgument(f"datastore {what} {text[:80]!r} is not valid Unicode text ({error.reason})") from None


def check_key(key: object) -> str:
    data = _encoded("key", key)
    if not data:
        raise InvalidArgument("a datastore key must not be empty")
    if b"\0" in data:
        raise InvalidArgument(f"datastore key {key!r} contains a NUL character")
    assert isinstance(key, str)
    return key


def check_prefix(prefix: object) -> str:
    """A prefix may be empty (every key); end it with '/' to mean a directory ('/a/' does not match '/ab')."""
    data = _encoded("prefix", prefix)
    if b"\0" in data:
        raise InvalidArgument(f"datastore prefix {prefix!r} contains a NUL character")
    assert isinstance(prefix, str)
    return prefix


def check_value(key: str, value: object) -> str:
    size = len(_encoded("value", value))
    if size > MAX_VALUE_BYTES:
        raise InvalidArgument(
            f"the value for {key} is {size} bytes; a datastore value may be at most {MAX_VALUE_BYTES} bytes "
            "(etcd's request limit): split it over several keys"
        )
    assert isinstance(value, str)
    return value


def check_ttl(ttl: object) -> int | None:
    """None: the key never expires; otherwise whole seconds, as etcd leases count them."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise InvalidArgument(f"a TTL must be whole seconds (an int) or None, not {ttl!r}")
    if not 1 <= ttl <= MAX_TTL:
        raise InvalidArgument(f"a TTL must be between 1 and {MAX_TTL} seconds (None: never expires), not {ttl}")
    return ttl


def check_revision(revision: object, what: str = "revision") -> int:
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise InvalidArgument(f"a datastore {what} must be an int >= 0, not {revision!r}")
    return revision


def prefix_end(prefix: str) -> str | None:
    """The first string after every string that starts with ``prefix``; None if no such bound exists.

    Successor of the last code point (skipping the surrogates no key can hold).
    Code-point order is UTF-8 byte order, so the bound is also right for
    sqlite's TEXT comparison (memcmp of UTF-8). An empty prefix has no bound.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < _MAX_CODE_POINT:
            following = last + 1
            if following in _SURROGATES:
                following = _SURROGATES.stop
            return "".join(chars) + chr(following)
    return None


def prefix_end_bytes(prefix: str) -> bytes:
    """etcd's range end for a prefix (clientv3 ``GetPrefixRangeEnd``); ``b"\\0"`` with key ``b"\\0"`` is every key."""
    data = bytearray(prefix.encode())
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\0"
