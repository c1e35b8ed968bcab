"""Where everything of a :class:`~pycni.picture.model.Picture` goes: pure geometry, no markup.

The picture has to stay readable at 30 nodes, so nodes are cards hanging off
an underlay bus (one per underlay network, when the datastore says which) under
a band naming the overlay, not a web of links: a full mesh of 30 nodes is 435
lines. Up to :data:`ROW_LIMIT` nodes sit in one row and their links (tunnels,
BGP sessions) are drawn as arcs beneath the row, nested by span, so none hides
a card; above that the cards fill a grid, row by row, each row on a rail joined
to its bus, and the link states are the cards' badges.

Text is measured as DejaVu Sans Mono (every glyph 0.602 em wide), the font the
SVG asks for first; a line that does not fit is cut with an ellipsis, its full
text kept as the element's tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pycni.picture.model import Badge, Link, Node, Picture, State, natural_key

ROW_LIMIT = 5  # at most this many nodes: one row, with their links drawn
MIN_WIDTH = 820.0  # the header's lines wrap at the picture's width, which is the cards' (at least this)
MAX_COLUMNS = 6
MARGIN = 24.0
GLYPH = 0.602  # DejaVu Sans Mono's advance, in em
BODY = 12.0  # font sizes (px)
SMALL = 11.0
TITLE = 20.0
LINE = 16.0  # baseline to baseline of body text
CARD_PAD = 10.0
CARD_TITLE = 26.0
CARD_MIN, CARD_MAX = 230.0, 330.0
GAP_X, GAP_Y = 22.0, 46.0  # between cards (GAP_Y leaves room for the next row's rail and stubs)
SEGMENT_GAP = 70.0  # between the buses of two underlay networks side by side
BADGE_H, BADGE_GAP = 18.0, 5.0
STUB = 22.0  # from the bus (or rail) down to a card
ARC_STEP = 34.0  # how much deeper an arc goes per node it spans


def text_width(text: str, size: float = BODY) -> float:
    return len(text) * size * GLYPH


def fit(text: str, width: float, size: float = BODY) -> str:
    """``text`` cut with an ellipsis to ``width`` pixels."""
    chars = max(1, int(width / (size * GLYPH)))
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def overlaps(self, other: Box) -> bool:
        return self.x < other.right and other.x < self.right and self.y < other.bottom and other.y < self.bottom


@dataclass(frozen=True)
class Text:
    """One line of text at its baseline; ``role`` picks its style, ``full`` is the uncut text (the tooltip)."""

    x: float
    y: float
    text: str
    role: str
    anchor: str = "start"
    full: str = ""


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    role: str  # bus, rail, stub, routed


@dataclass(frozen=True)
class BadgeBox:
    box: Box
    badge: Badge
    text: str


@dataclass(frozen=True)
class Card:
    node: Node
    box: Box
    texts: tuple[Text, ...]
    badges: tuple[BadgeBox, ...]
    rules: tuple[float, ...]  # y of the thin lines between a card's sections


@dataclass(frozen=True)
class Arc:
    """A link drawn below the row: from ``start`` down to ``depth`` and up to ``end``; its label at the bottom."""

    link: Link
    start: tuple[float, float]
    end: tuple[float, float]
    bottom: float
    label: BadgeBox | None


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    header: tuple[Text, ...]
    legend: tuple[BadgeBox, ...]
    overlay: Box
    overlay_text: tuple[Text, ...]
    lines: tuple[Line, ...]
    labels: tuple[Text, ...]  # bus labels and the caption
    cards: tuple[Card, ...]
    arcs: tuple[Arc, ...]


# -- cards ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """A line of a card before placement: its text (left) and an optional right-aligned part."""

    text: str
    role: str
    right: str = ""


def _sections(node: Node) -> list[list[_Row]]:
    head = [_Row(node.address, "line")] if node.address else []
    head += [_Row(detail, "muted") for detail in node.details]
    subnets = [_Row(f"{s.kind} {s.cidr}", "subnet", s.note) for s in node.subnets] or [_Row("no subnet", "muted")]
    pods = [_Row(p.name, "pod", ", ".join(p.addresses)) for p in node.pods]
    return [section for section in (head, subnets, pods or [_Row("no pods known", "muted")]) if section]


def _row_width(row: _Row) -> float:
    return text_width(row.text) + (text_width(row.right) + text_width("  ") if row.right else 0.0)


def card_width(nodes: Sequence[Node]) -> float:
    """One width for every card (a grid), wide enough for the longest line, within bounds."""
    needed = CARD_MIN
    for node in nodes:
        title = text_width(node.name, 13.0) + (text_width(" this node ", SMALL) + 14 if node.local else 0)
        rows = [row for section in _sections(node) for row in section]
        needed = max(needed, title + 2 * CARD_PAD, *(_row_width(r) + 2 * CARD_PAD for r in rows))
    return min(CARD_MAX, math.ceil(needed))


def _badge_rows(badges: Sequence[Badge], inner: float) -> list[list[tuple[Badge, str, float]]]:
    rows: list[list[tuple[Badge, str, float]]] = []
    used = inner + 1
    for badge in badges:
        text = fit(badge.text, inner - 12, SMALL)
        width = text_width(text, SMALL) + 12
        if used + width > inner:
            rows.append([])
            used = 0.0
        rows[-1].append((badge, text, width))
        used += width + BADGE_GAP
    return rows


def card_height(node: Node, width: float) -> float:
    rows = sum(len(section) for section in _sections(node))
    badge_rows = len(_badge_rows(node.badges, width - 2 * CARD_PAD))
    sections = len(_sections(node))
    return (
        CARD_TITLE
        + 8
        + rows * LINE
        + (sections - 1) * 9
        + (badge_rows * (BADGE_H + BADGE_GAP) + 4 if badge_rows else 0)
        + CARD_PAD
    )


def place_card(node: Node, x: float, y: float, width: float, height: float) -> Card:
    inner = width - 2 * CARD_PAD
    texts = [
        Text(x + CARD_PAD, y + 17.5, fit(node.name, inner - (86 if node.local else 0), 13.0), "name", full=node.name)
    ]
    if node.local:
        texts.append(Text(x + width - CARD_PAD, y + 17, "this node", "local", anchor="end"))
    cursor = y + CARD_TITLE + 6
    rules: list[float] = []
    for index, section in enumerate(_sections(node)):
        if index:
            rules.append(cursor + 3)
            cursor += 9
        for row in section:
            cursor += LINE
            baseline = cursor - 4
            if row.right:
                right = fit(row.right, inner * 0.62)
                left_room = inner - text_width(right) - text_width("  ")
                texts.append(Text(x + CARD_PAD, baseline, fit(row.text, left_room), row.role, full=row.text))
                texts.append(Text(x + width - CARD_PAD, baseline, right, row.role + "-right", "end", row.right))
            else:
                texts.append(Text(x + CARD_PAD, baseline, fit(row.text, inner), row.role, full=row.text))
    badges: list[BadgeBox] = []
    cursor += 6
    for badge_row in _badge_rows(node.badges, inner):
        bx = x + CARD_PAD
        for badge, text, badge_width in badge_row:
            badges.append(BadgeBox(Box(bx, cursor, badge_width, BADGE_H), badge, text))
            bx += badge_width + BADGE_GAP
        cursor += BADGE_H + BADGE_GAP
    return Card(node, Box(x, y, width, height), tuple(texts), tuple(badges), tuple(rules))


# -- the whole picture ----------------------------------------------------------------------------


def _segments(nodes: Sequence[Node]) -> list[tuple[str, list[Node]]]:
    groups: dict[str, list[Node]] = {}
    for node in sorted(nodes, key=lambda n: natural_key(n.name)):
        groups.setdefault(node.segment, []).append(node)
    return sorted(groups.items(), key=lambda item: natural_key(item[0]))


def _bus_label(segment: str, count: int) -> str:
    where = f"underlay {segment}" if segment else "underlay network"
    return f"{where}  \u00b7  {count} node{'s' if count != 1 else ''}"


def wrap(text: str, width: float, size: float = BODY, indent: str = "  ") -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels (continuations indented); a word
    longer than a line is cut."""
    chars = max(8, int(width / (size * GLYPH)))
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else (indent + word if lines else word)
        if len(candidate) <= chars or not current:
            current = candidate
        else:
            lines.append(current)
            current = indent + word
    lines.append(current)
    return [fit(line, width, size) for line in lines]


def _indented(x: float, y: float, line: str, role: str, full: str) -> Text:
    """A wrapped line: SVG collapses leading spaces, so a continuation's indent is moved into ``x``."""
    text = line.lstrip(" ")
    return Text(
        x + text_width(line[: len(line) - len(text)]), y, text, role, full=full if text.endswith("\u2026") else ""
    )


def _header(picture: Picture, width: float) -> tuple[list[Text], float]:
    texts = [Text(MARGIN, MARGIN + TITLE, fit(picture.title, width - 2 * MARGIN, TITLE), "title", full=picture.title)]
    y = MARGIN + TITLE + 8
    for fact in picture.facts:
        for line in wrap(fact, width - 2 * MARGIN):
            y += LINE + 1
            texts.append(_indented(MARGIN, y, line, "fact", fact))
    return texts, y


LEGEND = (
    Badge("ok", State.OK),
    Badge("degraded", State.WARN),
    Badge("down / missing", State.FAIL),
    Badge("not visible from this node", State.UNKNOWN),
)


def _legend(x: float, y: float) -> list[BadgeBox]:
    boxes = []
    for badge in LEGEND:
        w = text_width(badge.text, SMALL) + 12
        boxes.append(BadgeBox(Box(x, y, w, BADGE_H), badge, badge.text))
        x += w + BADGE_GAP
    return boxes


def _columns(count: int) -> int:
    return max(1, min(MAX_COLUMNS, count, math.ceil(math.sqrt(count * 1.6))))


def layout(picture: Picture) -> Layout:
    """Place every part of ``picture``; the caller draws exactly what this returns."""
    nodes = list(picture.nodes)
    width_card = card_width(nodes)
    one_row = len(nodes) <= ROW_LIMIT
    segments = _segments(nodes)
    if one_row:
        inner = len(nodes) * width_card + max(0, len(nodes) - 1) * GAP_X + (len(segments) - 1) * SEGMENT_GAP
    else:
        inner = _columns(len(nodes)) * (width_card + GAP_X) - GAP_X + 14
    width = math.ceil(max(inner + 2 * MARGIN, MIN_WIDTH))
    header, y = _header(picture, width)
    legend = _legend(MARGIN, y + 10)
    y += 10 + BADGE_H + 18
    band = wrap(picture.overlay, width - 2 * MARGIN - 24)
    overlay = Box(MARGIN, y, width - 2 * MARGIN, 12 + (LINE + 1) * len(band))
    overlay_text = tuple(
        _indented(MARGIN + 12, y + 20 + (LINE + 1) * i, line, "overlay", picture.overlay) for i, line in enumerate(band)
    )
    y = overlay.bottom + 30
    lines: list[Line] = []
    labels: list[Text] = []
    cards: list[Card] = []
    left = MARGIN + (0.0 if one_row else 14.0)
    arcs: list[Arc] = []
    if not nodes:
        labels.append(Text(MARGIN, y, "no nodes in the datastore", "caption"))
        bottom = y
    elif one_row:
        bottom = _one_row(segments, width_card, left, y, lines, labels, cards)
        arcs, bottom = _arcs(picture.links, cards, bottom)
    else:
        bottom = _grid(segments, width_card, left, y, lines, labels, cards)
        if picture.links:
            caption = (
                f"{len(picture.links)} links are not drawn with more than {ROW_LIMIT} nodes: "
                "each card's badges give their state as this node sees it"
            )
            labels.append(Text(MARGIN, bottom + 22, fit(caption, width - 2 * MARGIN), "caption", full=caption))
            bottom += 30
    return Layout(
        width=width,
        height=math.ceil(bottom + MARGIN),
        header=tuple(header),
        legend=tuple(legend),
        overlay=overlay,
        overlay_text=overlay_text,
        lines=tuple(lines),
        labels=tuple(labels),
        cards=tuple(cards),
        arcs=tuple(arcs),
    )


def _one_row(
    segments: list[tuple[str, list[Node]]],
    width_card: float,
    x: float,
    bus_y: float,
    lines: list[Line],
    labels: list[Text],
    cards: list[Card],
) -> float:
    """Every node in one row; each underlay network's bus above its cards. Returns the row's bottom."""
    top = bus_y + STUB
    height = max(card_height(node, width_card) for _, group in segments for node in group)
    previous_end = 0.0
    for index, (segment, group) in enumerate(segments):
        start = x
        for node in group:
            cards.append(place_card(node, x, top, width_card, height))
            lines.append(Line(x + width_card / 2, bus_y, x + width_card / 2, top, "stub"))
            x += width_card + GAP_X
        end = x - GAP_X
        lines.append(Line(start - 8, bus_y, end + 8, bus_y, "bus"))
        label = _bus_label(segment, len(group))
        labels.append(Text(start - 8, bus_y - 8, fit(label, end - start + 16, SMALL), "bus", full=label))
        if index:
            lines.append(Line(previous_end + 8, bus_y, start - 8, bus_y, "routed"))
            labels.append(Text((previous_end + start) / 2, bus_y + 16, "routed", "routed", "middle"))
        previous_end = end
        x += SEGMENT_GAP - GAP_X
    return top + height


def _grid(
    segments: list[tuple[str, list[Node]]],
    width_card: float,
    left: float,
    y: float,
    lines: list[Line],
    labels: list[Text],
    cards: list[Card],
) -> float:
    """Each underlay network a section: its bus, then rows of cards, each row on a rail joined to the bus."""
    columns = _columns(sum(len(group) for _, group in segments))
    trunk_x = left - 10
    for segment, group in segments:
        rows = [group[i : i + columns] for i in range(0, len(group), columns)]
        row_width = min(columns, len(group)) * (width_card + GAP_X) - GAP_X
        label = _bus_label(segment, len(group))
        labels.append(Text(trunk_x, y - 8, fit(label, row_width + 20, SMALL), "bus", full=label))
        bus_y = y
        rail_y = y
        for number, row in enumerate(rows):
            if number:
                rail_y = y
                lines.append(Line(trunk_x, rail_y, left + len(row) * (width_card + GAP_X) - GAP_X + 8, rail_y, "rail"))
            else:
                lines.append(Line(trunk_x, bus_y, left + row_width + 8, bus_y, "bus"))
            top = rail_y + STUB
            height = max(card_height(node, width_card) for node in row)
            for column, node in enumerate(row):
                x = left + column * (width_card + GAP_X)
                cards.append(place_card(node, x, top, width_card, height))
                lines.append(Line(x + width_card / 2, rail_y, x + width_card / 2, top, "stub"))
            y = top + height + GAP_Y - STUB
        if rail_y != bus_y:
            lines.append(Line(trunk_x, bus_y, trunk_x, rail_y, "trunk"))
        y += 40
    return y - 40 - GAP_Y + STUB


def _arcs(links: Sequence[Link], cards: Sequence[Card], bottom: float) -> tuple[list[Arc], float]:
    """Links as arcs under the row; at each card, ends ordered so that nested arcs do not cross."""
    index = {card.node.name: i for i, card in enumerate(cards)}
    drawn = [link for link in links if link.a in index and link.b in index and link.a != link.b]
    ends: dict[int, list[tuple[tuple[int, int], Link]]] = {i: [] for i in range(len(cards))}
    for link in drawn:
        a, b = sorted((index[link.a], index[link.b]))
        # at a card: links to the left first, nearest partner leftmost; then to the right, farthest leftmost
        ends[a].append(((1, -(b - a)), link))
        ends[b].append(((0, b - a), link))
    slot: dict[tuple[int, int], float] = {}
    for i, items in ends.items():
        items.sort(key=lambda item: item[0])
        box = cards[i].box
        for n, (_, link) in enumerate(items):
            key = (i, id(link))
            slot[key] = box.x + box.w * (n + 1) / (len(items) + 1)
    arcs = []
    deepest = bottom
    for link in drawn:
        a, b = sorted((index[link.a], index[link.b]))
        span = b - a
        depth = bottom + 26 + ARC_STEP * span
        start, end = (slot[(a, id(link))], bottom), (slot[(b, id(link))], bottom)
        label = None
        if link.state is not State.UNKNOWN:
            text = link.label
            w = text_width(text, SMALL) + 12
            middle = (start[0] + end[0]) / 2
            label = BadgeBox(Box(middle - w / 2, depth - BADGE_H / 2, w, BADGE_H), Badge(text, link.state), text)
        arcs.append(Arc(link, start, end, depth, label))
        deepest = max(deepest, depth + BADGE_H)
    return arcs, deepest
