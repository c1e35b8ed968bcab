"""Which datastore the Calico tools use (calicoctl's rules plus pycni's embedded store), and calicoctl's formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycni.cli.calicoctl import go_g, pretty_table, tabwriter
from pycni.fabric.calico.config import DEFAULT_STORE_PATH, ConfigError, StoreConfig, load_config


def test_environment_choices(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.cfg")
    assert load_config(None, {}) == StoreConfig("pycni", path=DEFAULT_STORE_PATH)
    assert load_config(None, {"PYCNI_CALICO_STORE": "/x/c.db"}).path == "/x/c.db"
    assert load_config(None, {}, store_path="/y.db").path == "/y.db"
    etcd = load_config(None, {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": "http://a:2379, http://b:2379"})
    assert etcd == StoreConfig("etcdv3", ("http://a:2379", "http://b:2379"))
    assert load_config(None, {"CALICO_ETCD_ENDPOINTS": "http://a:2379"}).datastore_type == "etcdv3"
    for env, message in (
        ({"DATASTORE_TYPE": "kubernetes"}, "not supported by pycni"),
        ({"DATASTORE_TYPE": "etcdv3"}, "needs etcdEndpoints"),
        ({"ETCD_ENDPOINTS": "https://a:2379", "ETCD_CERT_FILE": "/c.pem"}, "TLS"),
        ({"DATASTORE_TYPE": "consul"}, "unknown datastoreType"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, env)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(missing, {})


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "calicoctl.cfg"
    path.write_text(
        "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\n"
        "spec:\n  datastoreType: etcdv3\n  etcdEndpoints: 'http://127.0.0.1:2379'\n"
    )
    assert load_config(str(path), {"DATASTORE_TYPE": "kubernetes"}).endpoints == ("http://127.0.0.1:2379",)
    path.write_text('{"kind": "Other"}')
    with pytest.raises(ConfigError, match="not a CalicoAPIConfig"):
        load_config(str(path), {})


def test_go_formats() -> None:
    assert [go_g(v) for v in (1e6, 1000.0, 1e7, 0.5, 1234567.0, 0.00001)] == [
        "1e+06", "1000", "1e+07", "0.5", "1.234567e+06", "1e-05",
    ]  # fmt: skip
    assert tabwriter([["NAME", "CIDR"], ["p", "10.0.0.0/8"]]) == "NAME   CIDR         \np      10.0.0.0/8   \n"
    assert pretty_table(["A", "NUM"], [["x", "5"]], frozenset({1})) == (
        "+---+-----+\n| A | NUM |\n+---+-----+\n| x |   5 |\n+---+-----+\n"
    )
