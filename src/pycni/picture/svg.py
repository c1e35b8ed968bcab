"""Draw a :class:`~pycni.picture.layout.Layout` as SVG, built with ElementTree (pure: no I/O).

ElementTree escapes ``<``, ``&`` and quotes in text and attributes; what it
would write raw but XML 1.0 forbids (control characters, lone surrogates) is
replaced here, so a node or pod named with anything still gives a well-formed
file. Each node is a ``<g class="node">`` with ``data-node`` naming it and its
card ``<rect class="card">``, so tools (and the tests) can find them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from pycni.picture.layout import Arc, BadgeBox, Card, Layout, Text, layout
from pycni.picture.model import Picture, State

SVG_NS = "http://www.w3.org/2000/svg"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
SANS = "DejaVu Sans, Helvetica, Arial, sans-serif"
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# state -> (stroke, fill, text)
COLOURS = {
    State.OK: ("#1a7f37", "#dafbe1", "#116329"),
    State.WARN: ("#9a6700", "#fff8c5", "#7d4e00"),
    State.FAIL: ("#cf222e", "#ffebe9", "#a40e26"),
    State.UNKNOWN: ("#8c959f", "#f6f8fa", "#57606a"),
}
STYLE = f"""
text {{ font-family: {MONO}; font-size: 12px; fill: #1f2328; }}
.title {{ font-family: {SANS}; font-size: 20px; font-weight: bold; }}
.fact {{ fill: #424a53; }}
.overlay {{ font-weight: bold; fill: #0a3069; }}
.bus {{ font-size: 11px; font-weight: bold; fill: #32383f; }}
.routed {{ font-size: 11px; fill: #57606a; font-style: italic; }}
.caption {{ font-size: 11px; fill: #57606a; }}
.name {{ font-size: 13px; font-weight: bold; }}
.local {{ font-size: 11px; font-weight: bold; fill: #ffffff; }}
.muted {{ fill: #6e7781; }}
.subnet {{ fill: #0550ae; }}
.subnet-right {{ fill: #6e7781; font-size: 11px; }}
.pod {{ fill: #1f2328; }}
.pod-right {{ fill: #8250df; }}
.badge {{ font-size: 11px; }}
"""


def clean(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (ElementTree escapes the rest)."""
    return _NOT_XML.sub("\ufffd", text)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _el(parent: ET.Element, tag: str, **attrs: object) -> ET.Element:
    return ET.SubElement(parent, tag, {key.rstrip("_").replace("_", "-"): _attr(v) for key, v in attrs.items()})


def _attr(value: object) -> str:
    return _num(value) if isinstance(value, float) else clean(str(value))


def _text(parent: ET.Element, text: Text) -> ET.Element:
    element = _el(parent, "text", x=text.x, y=text.y, class_=text.role)
    if text.anchor != "start":
        element.set("text-anchor", text.anchor)
    element.text = clean(text.text)
    if text.full and text.full != text.text:
        _el(element, "title").text = clean(text.full)
    return element


def _badge(parent: ET.Element, item: BadgeBox) -> None:
    stroke, fill, ink = COLOURS[item.badge.state]
    group = _el(parent, "g", class_=f"badge-{item.badge.state.value}")
    if item.badge.detail or item.text != item.badge.text:
        _el(group, "title").text = clean(" \u2014 ".join(t for t in (item.badge.text, item.badge.detail) if t))
    box = item.box
    _el(group, "rect", x=box.x, y=box.y, width=box.w, height=box.h, rx=9.0, fill=fill, stroke=stroke)
    label = _el(group, "text", x=box.x + box.w / 2, y=box.y + 12.5, class_="badge", fill=ink)
    label.set("text-anchor", "middle")
    label.text = clean(item.text)


def _card(parent: ET.Element, card: Card) -> None:
    group = _el(parent, "g", class_="node", data_node=card.node.name)
    box = card.box
    worst = next((state for state in (State.FAIL, State.WARN) if any(b.state is state for b in card.node.badges)), None)
    edge = "#0969da" if card.node.local else COLOURS[worst][0] if worst else "#8c959f"  # a problem stands out at 30
    _el(
        group,
        "rect",
        class_="card",
        x=box.x,
        y=box.y,
        width=box.w,
        height=box.h,
        rx=6.0,
        fill="#ffffff",
        stroke=edge,
        stroke_width=2.5 if card.node.local else 1.2,
    )
    head = "#0969da" if card.node.local else "#eaeef2"
    path = f"M{_num(box.x)},{_num(box.y + 26)} v-20 a6,6 0 0 1 6,-6 h{_num(box.w - 12)} a6,6 0 0 1 6,6 v20 z"
    _el(group, "path", d=path, fill=head, stroke=edge, stroke_width=2.5 if card.node.local else 1.2)
    for y in card.rules:
        _el(group, "line", x1=box.x + 8, y1=y, x2=box.right - 8, y2=y, stroke="#d0d7de", stroke_dasharray="3 3")
    for text in card.texts:
        element = _text(group, text)
        if text.role == "name" and card.node.local:
            element.set("fill", "#ffffff")
    for badge in card.badges:
        _badge(group, badge)


def _arc(parent: ET.Element, arc: Arc) -> None:
    stroke = COLOURS[arc.link.state][0]
    (x0, y0), (x1, y1) = arc.start, arc.end
    control = (4 * arc.bottom - y0) / 3  # a cubic whose lowest point (t = 1/2) is at arc.bottom
    d = f"M{_num(x0)},{_num(y0)} C{_num(x0)},{_num(control)} {_num(x1)},{_num(control)} {_num(x1)},{_num(y1)}"
    group = _el(parent, "g", class_="link", data_a=arc.link.a, data_b=arc.link.b)
    _el(group, "title").text = clean(
        f"{arc.link.a} \u2194 {arc.link.b}: {arc.link.label}" + (f" ({arc.link.detail})" if arc.link.detail else "")
    )
    attrs: dict[str, object] = {"d": d, "fill": "none", "stroke": stroke, "stroke_width": 1.8}
    if arc.link.state is State.UNKNOWN:
        attrs["stroke_dasharray"] = "5 4"
    _el(group, "path", **attrs)
    if arc.label is not None:
        _badge(group, arc.label)


LINE_STYLES = {
    "bus": {"stroke": "#32383f", "stroke_width": 5.0, "stroke_linecap": "round"},
    "rail": {"stroke": "#32383f", "stroke_width": 3.0, "stroke_linecap": "round"},
    "trunk": {"stroke": "#32383f", "stroke_width": 3.0},
    "stub": {"stroke": "#57606a", "stroke_width": 2.0},
    "routed": {"stroke": "#57606a", "stroke_width": 2.0, "stroke_dasharray": "6 5"},
}


def render_layout(drawn: Layout) -> ET.Element:
    root = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "width": _num(drawn.width),
            "height": _num(drawn.height),
            "viewBox": f"0 0 {_num(drawn.width)} {_num(drawn.height)}",
        },
    )
    _el(root, "style").text = STYLE
    _el(root, "rect", x=0.0, y=0.0, width=drawn.width, height=drawn.height, fill="#ffffff")
    for text in drawn.header:
        _text(root, text)
    for badge in drawn.legend:
        _badge(root, badge)
    box = drawn.overlay
    _el(
        root,
        "rect",
        class_="overlay-band",
        x=box.x,
        y=box.y,
        width=box.w,
        height=box.h,
        rx=15.0,
        fill="#ddf4ff",
        stroke="#54aeff",
        stroke_dasharray="8 4",
    )
    for text in drawn.overlay_text:
        _text(root, text)
    for line in drawn.lines:
        _el(root, "line", class_=line.role, x1=line.x1, y1=line.y1, x2=line.x2, y2=line.y2, **LINE_STYLES[line.role])
    for label in drawn.labels:
        _text(root, label)
    for arc in drawn.arcs:
        _arc(root, arc)
    for card in drawn.cards:
        _card(root, card)
    return root


def render(picture: Picture) -> str:
    """The SVG document of ``picture``."""
    root = render_layout(layout(picture))
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
