"""The picture's layout and SVG (pure): every node, subnet and pod address is in the drawing, no card overlaps another.

The SVG is parsed back with ElementTree, as a reader of the file would; text
is looked for in ``<text>`` and ``<title>`` (a cut line keeps its full text as
the tooltip).
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from pycni.picture import layout as picture_layout
from pycni.picture.model import Badge, Link, Node, Picture, Pod, State, Subnet
from pycni.picture.svg import render

NS = {"svg": "http://www.w3.org/2000/svg"}


def cluster(count: int, pods_per_node: int = 3, segments: int = 2) -> Picture:
    """``count`` Calico-like nodes in ``segments`` underlay networks, node1 the local one, a full BGP mesh."""
    nodes = []
    for i in range(1, count + 1):
        segment = 1 + (i - 1) * segments // count
        pods = tuple(Pod(f"default/web-{i}-{k}", (f"10.244.{i}.{k + 2}",)) for k in range(pods_per_node))
        state = State.FAIL if i % 7 == 0 else State.OK
        badges = (
            Badge(f"BGP {'Active' if state is State.FAIL else 'Established'}", state),
            Badge("route vxlan", State.OK),
        )
        nodes.append(
            Node(
                name=f"node{i}",
                address=f"198.51.{segment}.{10 + i}",
                segment=f"198.51.{segment}.0/24",
                subnets=(Subnet(f"10.244.{i}.0/26", "block", f"{pods_per_node}/64 used"),),
                pods=pods,
                details=(f"vxlan.calico 10.244.{i}.0",),
                badges=badges,
                local=i == 1,
            )
        )
    links = tuple(
        Link(a.name, b.name, "BGP Established" if a.local else "BGP", State.OK if a.local else State.UNKNOWN)
        for a, b in itertools.combinations(nodes, 2)
    )
    return Picture(
        title="Calico network 10.244.0.0/16",
        overlay="overlay: pool 10.244.0.0/16 VXLAN CrossSubnet (VNI 4096, UDP 4789) \u00b7 BGP full mesh",
        facts=("seen from node1: its routes and its BIRD",),
        nodes=tuple(nodes),
        links=links,
    )


def parse(svg: str) -> ET.Element:
    assert svg.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(svg)


def all_text(root: ET.Element) -> str:
    parts = []
    for element in root.iter():
        if element.tag in (f"{{{NS['svg']}}}text", f"{{{NS['svg']}}}title"):
            parts.append("".join(element.itertext()))
    return "\n".join(parts)


def cards(root: ET.Element) -> dict[str, tuple[float, float, float, float]]:
    found = {}
    for group in root.iterfind(".//svg:g[@class='node']", NS):
        rect = group.find("svg:rect[@class='card']", NS)
        assert rect is not None
        x, y, w, h = (float(rect.get(k, "0")) for k in ("x", "y", "width", "height"))
        found[group.get("data-node", "")] = (x, y, w, h)
    return found


def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


@pytest.mark.parametrize("count", [1, 3, 5, 6, 30])
def test_every_node_subnet_and_pod_is_drawn_and_no_cards_overlap(count: int) -> None:
    picture = cluster(count)
    root = parse(render(picture))
    text = all_text(root)
    for node in picture.nodes:
        assert node.name in text
        assert node.address in text
        for subnet in node.subnets:
            assert subnet.cidr in text
        for pod in node.pods:
            assert pod.name in text
            for address in pod.addresses:
                assert address in text
        for badge in node.badges:
            assert badge.text in text
    found = cards(root)
    assert sorted(found) == sorted(n.name for n in picture.nodes)
    for (a, box_a), (b, box_b) in itertools.combinations(found.items(), 2):
        assert not overlap(box_a, box_b), f"{a} {box_a} overlaps {b} {box_b}"
    width, height = float(root.get("width", "0")), float(root.get("height", "0"))
    for name, (x, y, w, h) in found.items():
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height, f"{name} is outside the picture"


def test_links_are_arcs_up_to_the_row_limit_and_a_caption_above_it() -> None:
    few = parse(render(cluster(4)))
    arcs = few.findall(".//svg:g[@class='link']", NS)
    assert len(arcs) == 6
    assert {(g.get("data-a"), g.get("data-b")) for g in arcs} == {
        (f"node{a}", f"node{b}") for a, b in itertools.combinations(range(1, 5), 2)
    }
    unknown = [g for g in arcs if g.find("svg:path[@stroke-dasharray]", NS) is not None]
    assert len(unknown) == 3  # the links without node1: not visible from it
    many = parse(render(cluster(30)))
    assert many.findall(".//svg:g[@class='link']", NS) == []
    assert "435 links are not drawn" in all_text(many)


def test_thirty_nodes_fill_a_grid_of_rows_per_underlay_network() -> None:
    picture = cluster(30, segments=2)
    drawn = picture_layout.layout(picture)
    columns = {card.box.x for card in drawn.cards}
    rows = {card.box.y for card in drawn.cards}
    assert len(columns) == picture_layout.MAX_COLUMNS
    assert len(rows) == 6  # 15 nodes per underlay network: 3 rows of 6, 6, 3 each
    buses = [line for line in drawn.lines if line.role == "bus"]
    assert len(buses) == 2
    labels = [t.text for t in drawn.labels if t.role == "bus"]
    assert labels == ["underlay 198.51.1.0/24  \u00b7  15 nodes", "underlay 198.51.2.0/24  \u00b7  15 nodes"]
    stubs = [line for line in drawn.lines if line.role == "stub"]
    assert len(stubs) == 30
    for card in drawn.cards:  # every card hangs off a rail or bus just above it
        assert any(abs(s.y2 - card.box.y) < 0.01 and card.box.x < s.x1 < card.box.right for s in stubs)


def test_badges_stay_inside_their_card() -> None:
    node = Node(
        "node1",
        "198.51.100.11",
        badges=tuple(Badge(f"badge number {i} with a long text", State.WARN) for i in range(9)),
    )
    drawn = picture_layout.layout(Picture("t", "o", (), (node,)))
    (card,) = drawn.cards
    assert len(card.badges) == 9
    for badge in card.badges:
        assert card.box.x <= badge.box.x and badge.box.right <= card.box.right
        assert card.box.y <= badge.box.y and badge.box.bottom <= card.box.bottom


ODD = [
    "<b>&\"node'</b>",
    "bell\x07\x00null",
    "\u00fcn\u00ef\u00a9\u00f8d\u00e9-\U0001f680",
    "x" * 200,
    "]]><script>alert(1)</script>",
]


def test_odd_names_are_escaped_and_the_file_stays_well_formed() -> None:
    nodes = tuple(
        Node(
            name,
            f"198.51.100.{10 + i}",
            subnets=(Subnet(f"10.1.{i}.0/24", note=name),),
            pods=(Pod(name, (f"10.1.{i}.2",)),),
            details=(name,),
            badges=(Badge(name, State.OK, detail=name),),
        )
        for i, name in enumerate(ODD)
    )
    links = (Link(ODD[0], ODD[1], ODD[2], State.OK, ODD[4]),)
    svg = render(Picture(ODD[0], ODD[4], (ODD[1],), nodes, links))
    root = parse(svg)  # well-formed despite markup, control characters and NULs in the names
    assert root.find(".//svg:script", NS) is None and "<script>" not in svg and "<b>" not in svg
    text = all_text(root)
    assert ODD[0] in text and ODD[2] in text and ODD[3] in text and ODD[4] in text
    assert "bell\ufffd\ufffdnull" in text  # what XML cannot hold is replaced, the rest kept
    assert {g.get("data-node") for g in root.iterfind(".//svg:g[@class='node']", NS)} == {
        name.replace("\x07", "\ufffd").replace("\x00", "\ufffd") for name in ODD
    }


def test_a_long_name_is_cut_on_the_card_and_whole_in_its_tooltip() -> None:
    long = "worker-" + "a" * 80
    root = parse(render(Picture("t", "o", (), (Node(long, "198.51.100.11"),))))
    (group,) = root.iterfind(".//svg:g[@class='node']", NS)
    (name,) = [t for t in group.iterfind("svg:text", NS) if t.get("class") == "name"]
    shown = name.text or ""
    assert shown.endswith("\u2026") and len(shown) < len(long)
    title = name.find("svg:title", NS)
    assert title is not None and title.text == long


def test_rendering_is_deterministic() -> None:
    assert render(cluster(7)) == render(cluster(7))


def test_picture_to_dict_names_states_as_words() -> None:
    data = cluster(2).to_dict()
    assert data["nodes"][0]["badges"][0] == {"text": "BGP Established", "state": "ok", "detail": ""}
    assert data["links"] == [{"a": "node1", "b": "node2", "label": "BGP Established", "state": "ok", "detail": ""}]


def test_a_network_without_nodes_is_still_a_picture() -> None:
    root = parse(render(Picture("Flannel network 10.244.0.0/16", "overlay: VXLAN", ("0 node(s)",), ())))
    assert cards(root) == {} and "no nodes in the datastore" in all_text(root)
