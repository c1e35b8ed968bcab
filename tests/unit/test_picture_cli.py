"""``pycni inspect --svg/--png/--calico`` refuses bad input with one line and exit status 1, never a traceback.

Each case fails before this machine's kernel would be read, so the tier needs no root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pycni.cli.main import main
from pycni.datastore import open_datastore


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["inspect", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.strip()


def test_png_without_a_converter_names_the_package_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, err = run(capsys, "--png", str(tmp_path / "net.png"), "--store-path", str(tmp_path / "flannel.db"))
    assert code == 1
    assert err == (
        "pycni: --png needs rsvg-convert, which is not on PATH: apt-get install librsvg2-bin (or write --svg only) "
        "(CNI error code 7)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_missing_flannel_store_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--svg", str(tmp_path / "net.svg"), "--store-path", str(tmp_path / "flannel.db"))
    assert code == 1 and f"no Flannel store at {tmp_path / 'flannel.db'}: give --store-path" in err
    assert list(tmp_path.iterdir()) == []


def test_a_store_without_a_network_config_says_how_to_write_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_datastore(path=str(tmp_path / "flannel.db")).close()
    code, err = run(capsys, "--svg", str(tmp_path / "net.svg"), "--store-path", str(tmp_path / "flannel.db"))
    assert code == 1 and "no network config for /coreos.com/network" in err and "--net-config-path" in err
    assert not (tmp_path / "net.svg").exists()


def test_a_damaged_store_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "calico.db").write_text("not a database\n")
    for argv in (["--store-path", str(tmp_path / "calico.db")], ["--calico", "--store", str(tmp_path / "calico.db")]):
        code, err = run(capsys, "--svg", str(tmp_path / "net.svg"), *argv)
        assert code == 1 and "is not a sqlite database" in err and "\n" not in err


def test_etcd_that_does_not_answer_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ([], ["--calico"]):
        code, err = run(capsys, "--svg", str(tmp_path / "net.svg"), "--etcd-endpoints", "http://127.0.0.1:9", *extra)
        assert code == 1 and err.startswith("pycni: etcd is unreachable at http://127.0.0.1:9") and "\n" not in err


def test_calico_without_a_datastore_or_without_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATASTORE_TYPE", "CALICO_DATASTORE_TYPE", "ETCD_ENDPOINTS", "CALICO_ETCD_ENDPOINTS"):
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path / "calico.db"
    code, err = run(capsys, "--calico", "-c", str(tmp_path / "none.cfg"))
    assert code == 1 and "cannot read the config file" in err
    code, err = run(capsys, "--calico", "--store", str(missing))
    assert code == 1 and f"no Calico datastore: {missing} does not exist" in err
    assert not missing.exists()
    open_datastore(path=str(missing)).close()
    code, err = run(capsys, "--calico", "--store", str(missing), "--svg", str(tmp_path / "net.svg"))
    assert code == 1 and f"no Calico Node in the embedded store {missing}" in err
    assert not (tmp_path / "net.svg").exists()


def test_the_text_summary_has_every_node_block_pod_and_badge() -> None:
    from pycni.cli.inspect import summary
    from pycni.picture.model import Badge, Node, Picture, Pod, State, Subnet

    node = Node(
        "node1",
        "198.51.100.11",
        subnets=(Subnet("10.244.1.0/26", "block", "1/64 used"),),
        pods=(Pod("default/web", ("10.244.1.1",)),),
        details=("vxlan.calico 10.244.1.0",),
        badges=(Badge("BGP 1/1 Established", State.OK),),
        local=True,
    )
    text = summary(Picture("Calico network 10.244.0.0/16", "overlay: x", ("fact",), (node, Node("node2"))))
    assert text.splitlines() == [
        "Calico network 10.244.0.0/16",
        "overlay: x",
        "fact",
        "",
        "node1  (this node)  198.51.100.11",
        "  vxlan.calico 10.244.1.0",
        "  block 10.244.1.0/26  1/64 used",
        "  pod default/web  10.244.1.1",
        "  [ok] BGP 1/1 Established",
        "node2",
    ]
