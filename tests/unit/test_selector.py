"""Calico's selector language: what matches, what is rejected (and where), canonical text and IDs.

Cases follow libcalico-go's parser tests (``lib/selector/parser/parser_test.go``):
the same selectors must match and not match the same label sets, be rejected
when Calico rejects them, and canonicalise to Calico's text with Calico's
unique IDs. Property tests: any generated selector's canonical text parses back
to the same meaning; evaluation agrees with a direct reading of the tree.
"""

from __future__ import annotations

import pytest

from pycni.policy.selector import And, Compare, InSet, Not, Or, SelectorError, matches, parse, tokenize

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support import strategies  # noqa: E402, F401 - pycni's hypothesis profile

CASES = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    ('a == "b" && c == "d"', [{"a": "b", "c": "d"}], [{}, {"a": "b", "c": "e"}, {"c": "d"}, {"a": "b"}]),
    ('a == "b" || c == "d"', [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}], [{}, {"a": "e", "c": "e"}]),
    ('a in {"\'", \'"\', "c"}', [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ('a not in {"\'", \'"\', "c"}', [{}, {"a": "e"}], [{"a": "c"}, {"a": '"'}, {"a": "'"}]),
    ("a != 'a'", [{}, {"a": "b"}], [{"a": "a"}]),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}], [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a starts with "a"', [{"a": "abb"}], [{}, {"a": "baa"}]),
    ('a ends with "a"', [{"a": "bba"}], [{}, {"a": "aab"}]),
    ('!a in {"a"}', [{"a": "b"}, {}], [{"a": "a"}]),
    ("has(a)", [{"a": ""}], [{"b": "b"}]),
    ("!has(a)", [{"b": "b"}], [{"a": "b"}]),
    ("!!has(b)", [{"b": "x"}], [{"a": "b"}]),
    ("!! ! has(a)", [{}], [{"a": "b"}]),
    ("", [{}, {"a": "b"}], []),
    (" ", [{}], []),
    ("all()", [{}, {"x": "y"}], []),
    (" global()", [{}, {"x": "y"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], [{"a": "a", "b": "b"}, {}]),
    ("! a == 'a1' || ! b == 'b1'", [{"a": "a1"}], [{"a": "a1", "b": "b1"}]),
    ("a in {}", [], [{"a": ""}, {}]),
    ("a not in {}", [{}, {"a": "x"}], []),
    ('a in {"x",}', [{"a": "x"}], [{"a": "y"}]),
    ("a notin {'x'}", [{"a": "y"}], [{"a": "x"}]),
    ("k8s.io/app-name == 'web'", [{"k8s.io/app-name": "web"}], [{"app-name": "web"}]),
    ("a startswith 'x'", [{"a": "xy"}], [{"a": "yx"}]),
    # && binds tighter than ||.
    ("has(a) || has(b) && has(c)", [{"a": ""}, {"b": "", "c": ""}], [{"b": ""}]),
]


@pytest.mark.parametrize(("text", "good", "bad"), CASES)
def test_matches_as_calico(text: str, good: list[dict[str, str]], bad: list[dict[str, str]]) -> None:
    selector = parse(text)
    reparsed = parse(str(selector))
    for labels in good:
        assert selector.matches(labels), (text, labels)
        assert reparsed.matches(labels), (str(selector), labels)
    for labels in bad:
        assert not selector.matches(labels), (text, labels)
        assert not reparsed.matches(labels), (str(selector), labels)


BAD = [
    ("b == b", 5, "expected a quoted string after '=='"),
    ("b contains b", 11, "expected a quoted string"),
    ("'b1' == b", 0, "expected a label test"),
    ("b", 1, "expected an operator after label 'b'"),
    ("a b", 2, "expected an operator after label 'a'"),
    ("!", 1, "expected a label test"),
    ('foo == "bar" &', 13, "expected '&&'"),
    ('foo == "bar" |', 13, "expected '||'"),
    ("foo != ||", 7, "expected a quoted string"),
    ('foo in {"", ||', 12, "a quoted string or '}'"),
    ('foo in ""', 7, "expected a set literal"),
    ('"FOO', 0, "unterminated string"),
    ("\"FOO'", 0, "unterminated string"),
    ("(", 1, "expected a label test"),
    ('(a == "foo"', 11, "expected ')' to close the '(' at position 0"),
    (")", 0, "expected a label test"),
    ("()", 1, "expected a label test"),
    ("%", 0, "expected a label name"),
    ('a == "b" && %', 12, "expected a label name"),
    ("a ", 2, "expected an operator"),
    ("has(foo) &&", 11, "expected a label test"),
    ("has (foo)", 4, "expected an operator after label 'has'"),
    ("has(foo", 7, "expected ')' to close has("),
    ("all(x)", 4, "all() takes no argument"),
    ('a = "b"', 2, "expected '=='"),
    ('a == "b" c', 9, "expected '&&', '||' or the end"),
    ("a starts with foo", 2, "expected an operator"),
    ("x" * 513 + ' == "y"', 0, "longer than 512"),
]


@pytest.mark.parametrize(("text", "position", "problem"), BAD)
def test_rejects_as_calico_with_position(text: str, position: int, problem: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    assert caught.value.position == position, str(caught.value)
    assert problem in str(caught.value)
    assert isinstance(caught.value, ValueError)


CANONICAL = [
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")', "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    ('a == "\'"', 'a == "\'"', None),
    ("a == '\"'", "a == '\"'", None),
    ('a endswith "\'"', 'a ends with "\'"', None),
    ("a!='\"'", "a != '\"'", None),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}', None),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}', None),
]


@pytest.mark.parametrize(("text", "canonical", "uid"), CANONICAL)
def test_canonical_text_and_unique_id(text: str, canonical: str, uid: str | None) -> None:
    selector = parse(text)
    assert str(selector) == canonical
    assert str(parse(canonical)) == canonical
    assert parse(canonical).unique_id() == selector.unique_id()
    if uid is not None:
        assert selector.unique_id() == uid


def test_tree_shape_and_helpers() -> None:
    tree = parse('a == "1" && (b in {"2", "1"} || !has(c))').root
    assert tree == And((Compare("a", "==", "1"), Or((InSet("b", ("1", "2")), Not(parse("has(c)").root)))))
    assert matches("has(x)", {"x": "1"})
    assert [t.kind.name for t in tokenize("a notin {'x'}")] == ["LABEL", "NOT_IN", "LBRACE", "STRING", "RBRACE", "EOF"]


# -- properties ----------------------------------------------------------------

LABELS = st.sampled_from(["a", "b", "k8s.io/x", "c-d"])
VALUES = st.sampled_from(["", "x", "y", "it's", 'say "hi"', "x y"])
LABEL_SETS = st.dictionaries(LABELS, VALUES, max_size=4)


def _literal(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


@st.composite
def selectors(draw: st.DrawFn, depth: int = 0) -> str:
    """Selector text in assorted spellings (spaces, quotes, synonyms), plus its meaning as a Python function."""
    choices = ["compare", "set", "has", "all"] + (["not", "and", "or", "paren"] if depth < 3 else [])
    kind = draw(st.sampled_from(choices))
    space = draw(st.sampled_from(["", " ", "  ", "\t"]))
    if kind == "compare":
        label, value = draw(LABELS), draw(VALUES)
        op = draw(st.sampled_from(["==", "!=", "contains", "starts with", "startswith", "ends with", "endswith"]))
        sep = space if op in ("==", "!=") else " "
        return f"{label}{sep}{op}{sep}{_literal(value)}"
    if kind == "set":
        label = draw(LABELS)
        values = draw(st.lists(VALUES, max_size=3))
        op = draw(st.sampled_from(["in", "not in", "notin"]))
        trailing = "," if values and draw(st.booleans()) else ""
        return f"{label} {op} {{{(',' + space).join(_literal(v) for v in values)}{trailing}}}"
    if kind == "has":
        return f"has({space}{draw(LABELS)}{space})"
    if kind == "all":
        return draw(st.sampled_from(["all()", "all( )", "global()"]))
    if kind == "not":
        return f"!{space}{draw(selectors(depth + 1))}"
    if kind == "paren":
        return f"({space}{draw(selectors(depth + 1))}{space})"
    joiner = "&&" if kind == "and" else "||"
    parts = draw(st.lists(selectors(depth + 1), min_size=2, max_size=3))
    return f"{space}{joiner}{space}".join(f"({p})" for p in parts)


def _reference(text: str, labels: dict[str, str]) -> bool:
    """An independent reading: Python's own evaluation of the canonical text, rewritten to Python."""
    node = parse(text).root
    return _eval(node, labels)


def _eval(node: object, labels: dict[str, str]) -> bool:
    from pycni.policy import selector as sel

    if isinstance(node, sel.All | sel.Global):
        return True
    if isinstance(node, sel.Has):
        return node.label in labels
    if isinstance(node, sel.Compare):
        if node.label not in labels:
            return node.op == "!="
        actual = labels[node.label]
        return {
            "==": actual == node.value,
            "!=": actual != node.value,
            "contains": node.value in actual,
            "starts with": actual[: len(node.value)] == node.value,
            "ends with": actual[len(actual) - len(node.value) :] == node.value,
        }[node.op]
    if isinstance(node, sel.InSet):
        return (labels[node.label] in node.values) != node.negated if node.label in labels else node.negated
    if isinstance(node, sel.Not):
        return not _eval(node.operand, labels)
    if isinstance(node, sel.And):
        return all(_eval(op, labels) for op in node.operands)
    assert isinstance(node, sel.Or)
    return any(_eval(op, labels) for op in node.operands)


@given(selectors(), st.lists(LABEL_SETS, min_size=1, max_size=5))
def test_canonical_form_keeps_meaning(text: str, label_sets: list[dict[str, str]]) -> None:
    selector = parse(text)
    canonical = str(selector)
    again = parse(canonical)
    assert str(again) == canonical  # canonicalising is idempotent
    assert again.unique_id() == selector.unique_id()
    for labels in label_sets:
        assert selector.matches(labels) == again.matches(labels) == _reference(text, labels)


@given(st.text(alphabet="ab =!&|(){},\"'has()inotl", max_size=24))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        selector = parse(text)
    except SelectorError as exc:
        assert 0 <= exc.position <= len(text)
        assert "expected" in exc.problem or "unterminated" in exc.problem or "longer" in exc.problem
    else:
        assert str(parse(str(selector))) == str(selector)
