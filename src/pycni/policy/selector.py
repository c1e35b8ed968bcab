"""Calico's label selector language: a parser with positioned errors, and an evaluator.

The grammar and its quirks are those of libcalico-go's ``lib/selector``
(tokenizer and parser), so a selector accepted by Calico is accepted here and
means the same thing, and one Calico rejects is rejected:

* terms: ``k == "v"``, ``k != "v"``, ``k in {"a", "b"}``, ``k not in {...}``,
  ``k contains "s"``, ``k starts with "s"``, ``k ends with "s"``, ``has(k)``,
  ``all()``, ``global()``; ``!`` negates a term (``!!`` cancels out), ``&&``
  binds tighter than ``||``, parentheses group; an empty selector is ``all()``;
* a label is ``[a-zA-Z0-9_./-]+`` (at most 512 characters); a value is a
  string literal in double or single quotes with no escapes (the other quote
  may appear inside); a set may be empty and may end with a comma;
* operators directly follow a label (``starts with`` may be written
  ``startswith``, ``not in`` as ``notin``); ``has(`` and ``all(`` must be written
  without a space before the parenthesis; only spaces and tabs are whitespace;
* ``k != "v"`` and ``k not in {...}`` are true when ``k`` is absent; every
  other label test is false then.

:func:`parse` returns a :class:`Selector`; ``str(selector)`` is Calico's
canonical form (sets sorted and de-duplicated, ``&&``/``||`` groups in
parentheses) and :meth:`Selector.unique_id` is Calico's ``s:`` + base64url
SHA-224 of it, so pycni and Felix name the same selector the same way.
Errors are :class:`SelectorError` with the position and what was expected.
:func:`with_label_prefix` renames every label a selector tests, as Calico's
``PrefixVisitor`` does for namespace (``pcns.``) and service account (``pcsa.``)
selectors. Pure: no I/O.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

MAX_LABEL_LENGTH = 512
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")


class SelectorError(ValueError):
    """A selector that does not parse: ``position`` (0-based character index) and what was wanted there."""

    def __init__(self, selector: str, position: int, problem: str) -> None:
        self.selector = selector
        self.position = position
        self.problem = problem
        super().__init__(f"invalid selector {selector!r} at position {position}: {problem}")


# -- tokens ------------------------------------------------------------------


class Tok(Enum):
    LABEL = "label"
    STRING = "string literal"
    LBRACE = "'{'"
    RBRACE = "'}'"
    COMMA = "','"
    EQ = "'=='"
    NE = "'!='"
    IN = "'in'"
    NOT = "'!'"
    NOT_IN = "'not in'"
    CONTAINS = "'contains'"
    STARTS_WITH = "'starts with'"
    ENDS_WITH = "'ends with'"
    ALL = "'all()'"
    HAS = "'has(...)'"
    LPAREN = "'('"
    RPAREN = "')'"
    AND = "'&&'"
    OR = "'||'"
    GLOBAL = "'global()'"
    EOF = "end of selector"


@dataclass(frozen=True)
class Token:
    kind: Tok
    value: str
    position: int

    def describe(self) -> str:
        if self.kind is Tok.LABEL:
            return f"label {self.value!r}"
        if self.kind is Tok.STRING:
            return f"string {self.value!r}"
        return str(self.kind.value)


_SIMPLE = {"(": Tok.LPAREN, ")": Tok.RPAREN, "{": Tok.LBRACE, "}": Tok.RBRACE, ",": Tok.COMMA}
_PAIRS = {"=": ("==", Tok.EQ), "&": ("&&", Tok.AND), "|": ("||", Tok.OR)}


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _word_boundary(text: str, pos: int) -> bool:
    return pos >= len(text) or text[pos] not in _LABEL_CHARS


def _cut_words(text: str, pos: int, *words: str) -> int | None:
    """Position after the operator ``words``, or None; Calico's word-boundary rules exactly.

    One word (``in``, ``contains``) must end at a word boundary; several (``not in``,
    ``starts with``) may have any spaces between them, none needed, and the boundary is
    checked after the spaces that follow the last word.
    """
    if len(words) == 1:
        end = pos + len(words[0])
        return end if text.startswith(words[0], pos) and _word_boundary(text, end) else None
    for word in words:
        if not text.startswith(word, pos):
            return None
        pos = _skip_space(text, pos + len(word))
    return pos if _word_boundary(text, pos) else None


def _identifier(selector: str, pos: int) -> tuple[str, int]:
    end = pos
    while end < len(selector) and selector[end] in _LABEL_CHARS:
        end += 1
    ident = selector[pos:end]
    if not ident:
        found = repr(selector[pos]) if pos < len(selector) else "the end of the selector"
        raise SelectorError(selector, pos, f"expected a label name (letters, digits, _ . / -), found {found}")
    if len(ident) > MAX_LABEL_LENGTH:
        raise SelectorError(selector, pos, f"label is longer than {MAX_LABEL_LENGTH} characters")
    return ident, end


def tokenize(selector: str) -> list[Token]:
    """The selector's tokens, ending with an EOF token; raises :class:`SelectorError`."""
    tokens: list[Token] = []
    pos = 0
    while True:
        pos = _skip_space(selector, pos)
        if pos >= len(selector):
            tokens.append(Token(Tok.EOF, "", pos))
            return tokens
        char = selector[pos]
        last = tokens[-1].kind if tokens else None
        if char in _SIMPLE:
            tokens.append(Token(_SIMPLE[char], char, pos))
            pos += 1
        elif char in "\"'":
            end = selector.find(char, pos + 1)
            if end < 0:
                raise SelectorError(selector, pos, f"unterminated string: no closing {char} for the one here")
            tokens.append(Token(Tok.STRING, selector[pos + 1 : end], pos))
            pos = end + 1
        elif char in _PAIRS:
            text, kind = _PAIRS[char]
            if not selector.startswith(text, pos):
                raise SelectorError(selector, pos, f"expected {text!r}, found {char!r} alone")
            tokens.append(Token(kind, text, pos))
            pos += 2
        elif char == "!":
            if selector.startswith("!=", pos):
                tokens.append(Token(Tok.NE, "!=", pos))
                pos += 2
            else:
                tokens.append(Token(Tok.NOT, "!", pos))
                pos += 1
        elif last is Tok.LABEL:
            pos = _operator(selector, pos, tokens)
        elif selector.startswith(("has(", "all(", "global("), pos):
            pos = _call(selector, pos, tokens)
        else:
            start = pos
            ident, pos = _identifier(selector, pos)
            tokens.append(Token(Tok.LABEL, ident, start))


def _call(selector: str, pos: int, tokens: list[Token]) -> int:
    """``has(label)``, ``all()`` or ``global()`` (no space before the parenthesis, as in Calico)."""
    start = pos
    name = selector[pos : selector.index("(", pos)]
    pos = _skip_space(selector, pos + len(name) + 1)
    if name == "has":
        ident, pos = _identifier(selector, pos)
        pos = _skip_space(selector, pos)
        if not selector.startswith(")", pos):
            raise SelectorError(selector, pos, "expected ')' to close has(")
        tokens.append(Token(Tok.HAS, ident, start))
    else:
        if not selector.startswith(")", pos):
            raise SelectorError(selector, pos, f"expected ')' after {name}(: {name}() takes no argument")
        tokens.append(Token(Tok.ALL if name == "all" else Tok.GLOBAL, f"{name}()", start))
    return pos + 1


_OPERATORS = (
    (("contains",), Tok.CONTAINS),
    (("starts", "with"), Tok.STARTS_WITH),
    (("ends", "with"), Tok.ENDS_WITH),
    (("not", "in"), Tok.NOT_IN),
    (("in",), Tok.IN),
)


def _operator(selector: str, pos: int, tokens: list[Token]) -> int:
    for words, kind in _OPERATORS:
        after = _cut_words(selector, pos, *words)
        if after is not None:
            tokens.append(Token(kind, " ".join(words), pos))
            return after
    raise SelectorError(
        selector,
        pos,
        f"expected an operator after label {tokens[-1].value!r} (==, !=, in, not in, contains, starts with, ends with)",
    )


# -- the tree ----------------------------------------------------------------


def _quote(value: str) -> str:
    quote = "'" if '"' in value else '"'
    return f"{quote}{value}{quote}"


class Node:
    """A selector term; ``matches`` evaluates it, ``str`` is Calico's canonical text."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class All(Node):
    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True)
class Global(Node):
    """``global()``: in policy it selects non-namespaced things; over a label set it is true."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "global()"


@dataclass(frozen=True)
class Has(Node):
    label: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.label in labels

    def __str__(self) -> str:
        return f"has({self.label})"


@dataclass(frozen=True)
class Compare(Node):
    """``label <op> "value"`` for ==, !=, contains, starts with, ends with."""

    label: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        if actual is None:
            return self.op == "!="
        if self.op == "==":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        if self.op == "contains":
            return self.value in actual
        if self.op == "starts with":
            return actual.startswith(self.value)
        return actual.endswith(self.value)

    def __str__(self) -> str:
        return f"{self.label} {self.op} {_quote(self.value)}"


@dataclass(frozen=True)
class InSet(Node):
    """``label in {...}`` (or ``not in``, which is true for an absent label); values sorted, unique."""

    label: str
    values: tuple[str, ...]
    negated: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        if actual is None:
            return self.negated
        return (actual in self.values) != self.negated

    def __str__(self) -> str:
        op = "not in" if self.negated else "in"
        return f"{self.label} {op} {{{', '.join(_quote(v) for v in self.values)}}}"


@dataclass(frozen=True)
class Not(Node):
    operand: Node

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.matches(labels)

    def __str__(self) -> str:
        return f"!{self.operand}"


@dataclass(frozen=True)
class And(Node):
    operands: tuple[Node, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(op.matches(labels) for op in self.operands)

    def __str__(self) -> str:
        return "(" + " && ".join(str(op) for op in self.operands) + ")"


@dataclass(frozen=True)
class Or(Node):
    operands: tuple[Node, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(op.matches(labels) for op in self.operands)

    def __str__(self) -> str:
        return "(" + " || ".join(str(op) for op in self.operands) + ")"


# -- the parser --------------------------------------------------------------

_COMPARE = {
    Tok.EQ: "==",
    Tok.NE: "!=",
    Tok.CONTAINS: "contains",
    Tok.STARTS_WITH: "starts with",
    Tok.ENDS_WITH: "ends with",
}


class _Parser:
    def __init__(self, selector: str) -> None:
        self.selector = selector
        self.tokens = tokenize(selector)
        self.index = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Tok.EOF:
            self.index += 1
        return token

    def fail(self, token: Token, expected: str) -> SelectorError:
        return SelectorError(self.selector, token.position, f"expected {expected}, found {token.describe()}")

    def parse(self) -> Node:
        if self.peek().kind is Tok.EOF:
            return All()
        node = self.or_expression()
        if self.peek().kind is not Tok.EOF:
            raise self.fail(self.peek(), "'&&', '||' or the end of the selector")
        return node

    def or_expression(self) -> Node:
        operands = [self.and_expression()]
        while self.peek().kind is Tok.OR:
            self.take()
            operands.append(self.and_expression())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expression(self) -> Node:
        operands = [self.operation()]
        while self.peek().kind is Tok.AND:
            self.take()
            operands.append(self.operation())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def operation(self) -> Node:
        negated = False
        while self.peek().kind is Tok.NOT:
            self.take()
            negated = not negated
        token = self.take()
        node: Node
        if token.kind is Tok.HAS:
            node = Has(token.value)
        elif token.kind is Tok.ALL:
            node = All()
        elif token.kind is Tok.GLOBAL:
            node = Global()
        elif token.kind is Tok.LABEL:
            node = self.label_test(token)
        elif token.kind is Tok.LPAREN:
            node = self.or_expression()
            closing = self.take()
            if closing.kind is not Tok.RPAREN:
                raise self.fail(closing, "')' to close the '(' at position " + str(token.position))
        else:
            raise self.fail(token, "a label test, has(...), all(), '!' or '('")
        return Not(node) if negated else node

    def label_test(self, label: Token) -> Node:
        op = self.take()
        if op.kind in _COMPARE:
            value = self.take()
            if value.kind is not Tok.STRING:
                raise self.fail(value, f"a quoted string after {op.kind.value}")
            return Compare(label.value, _COMPARE[op.kind], value.value)
        if op.kind in (Tok.IN, Tok.NOT_IN):
            brace = self.take()
            if brace.kind is not Tok.LBRACE:
                raise self.fail(brace, f'a set literal {{"a", "b"}} after {op.kind.value}')
            values: list[str] = []
            while self.peek().kind is Tok.STRING:
                values.append(self.take().value)
                if self.peek().kind is not Tok.COMMA:
                    break
                self.take()
            closing = self.take()
            if closing.kind is not Tok.RBRACE:
                raise self.fail(closing, "a quoted string or '}' in the set")
            return InSet(label.value, tuple(sorted(set(values))), negated=op.kind is Tok.NOT_IN)
        raise self.fail(op, f"an operator after label {label.value!r} (==, !=, in, not in, contains, ...)")


@dataclass(frozen=True)
class Selector:
    """A parsed selector: ``matches(labels)``; ``str()`` canonical text; ``unique_id()`` as Calico's."""

    root: Node

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.root.matches(labels)

    def __str__(self) -> str:
        return str(self.root)

    def unique_id(self) -> str:
        """``s:`` + unpadded base64url SHA-224 of ``s:<canonical>`` (libcalico-go ``hash.MakeUniqueID``)."""
        digest = hashlib.sha224(f"s:{self}".encode()).digest()
        return "s:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


@functools.lru_cache(maxsize=8192)
def parse(selector: str) -> Selector:
    """Parse ``selector``; raises :class:`SelectorError` naming the position and what was expected.

    Memoised: the policy manager compiles every policy of the cluster on each
    change, and a :class:`Selector` is immutable, so a text is parsed once.
    """
    return Selector(_Parser(selector).parse())


def validate(selector: str) -> None:
    """Raise :class:`SelectorError` unless ``selector`` parses."""
    parse(selector)


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Parse and evaluate in one step (for one-off checks; keep the :class:`Selector` otherwise)."""
    return parse(selector).matches(labels)


def _prefixed(node: Node, prefix: str) -> Node:
    if isinstance(node, Has):
        return Has(prefix + node.label)
    if isinstance(node, Compare):
        return Compare(prefix + node.label, node.op, node.value)
    if isinstance(node, InSet):
        return InSet(prefix + node.label, node.values, node.negated)
    if isinstance(node, Not):
        return Not(_prefixed(node.operand, prefix))
    if isinstance(node, And):
        return And(tuple(_prefixed(op, prefix) for op in node.operands))
    if isinstance(node, Or):
        return Or(tuple(_prefixed(op, prefix) for op in node.operands))
    return node


def with_label_prefix(selector: Selector, prefix: str) -> Selector:
    """Every label the selector tests, renamed ``prefix + label`` (libcalico-go's ``PrefixVisitor``).

    Calico turns a namespaceSelector ``env == "prod"`` into ``pcns.env == "prod"``
    this way, to match the namespace labels endpoints inherit from their profile.
    """
    return Selector(_prefixed(selector.root, prefix))
