"""Shared hypothesis setup for pycni's property tests: profiles, JSON strategies, mutations.

Profiles: ``pycni-fast`` (the default: few examples, derandomized, what ``make test`` runs)
and ``campaign`` (``HYPOTHESIS_PROFILE=campaign``: many examples, a random seed each run).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pycni.spec import CNIError

settings.register_profile(
    "pycni-fast",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "campaign",
    max_examples=2000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pycni-fast"))

# Go's int is 64 bits; JSON numbers outside it are not values Go could have written.
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)

odd_scalars = st.sampled_from(
    [
        "",
        " ",
        "0",
        "-1",
        "true",
        "null",
        "1.1.0",
        "9.9.9",
        "1.2.3.4",
        "10.0.0.0/24",
        "10.0.0.1/33",
        "10.0.0.1/-1",
        "10.0.0.1/٣",
        "fd00::/129",
        "::ffff:10.0.0.1/120",
        "fe80::1%eth0",
        "\x00",
        "é",
        "\ud800",
        "\U0001d518\U0001d52b\U0001d526",
        "a" * 5000,
        0,
        -1,
        2**31,
        2**63,
        2**64,
        10**100,
        1e308,
        0.5,
        float("inf"),
        True,
        False,
        None,
    ]
)
json_scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), st.text(max_size=10), odd_scalars)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of a decoded JSON document, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(paths_of(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(paths_of(child, (*prefix, index)))
    return found


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A valid document with one to three nodes replaced, removed, renamed or nested deeper."""
    doc = copy.deepcopy(draw(documents))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_of(doc)))
        operation = draw(st.sampled_from(["replace", "delete", "case", "wrap"]))
        if not path:
            doc = draw(json_values) if operation == "replace" else [doc] if operation == "wrap" else doc
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        if operation == "replace":
            parent[key] = draw(json_values)
        elif operation == "delete":
            del parent[key]
        elif operation == "case" and isinstance(key, str):
            parent[key.swapcase()] = parent.pop(key)
        elif operation == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"x": parent[key]}, str(parent[key])]))
    return doc


def only_cni_errors(call: Callable[[], object]) -> CNIError | None:
    """Run ``call``; a ``CNIError`` is returned for inspection, any other exception fails the test."""
    try:
        call()
    except CNIError as error:
        assert isinstance(error.code, int) and error.msg, repr(error)
        json.loads(error.to_json("1.1.0"))
        return error
    return None
