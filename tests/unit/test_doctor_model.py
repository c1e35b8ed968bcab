"""pycni doctor's pure parts: findings, rendering, exit status, a broken check, the CLI's option errors."""

from __future__ import annotations

import json

import pytest

from pycni.cli import doctor as cli
from pycni.datastore import Unavailable
from pycni.doctor import runner
from pycni.doctor.context import Node, Options
from pycni.doctor.model import Check, Finding, Status, fail, listed, ok, warn

FINDINGS = [
    ok("ip_forward", "net.ipv4.ip_forward=1"),
    warn("host_local", "2 leaked", "run DEL"),
    fail("pod_mtu", "1450 > 1350", "use MTU 1350"),
]


def test_text_is_one_line_per_finding_status_check_message_advice() -> None:
    lines = runner.render_text(FINDINGS)
    assert lines == [
        "ok    ip_forward  net.ipv4.ip_forward=1",
        "warn  host_local  2 leaked -- run DEL",
        "fail  pod_mtu  1450 > 1350 -- use MTU 1350",
    ]


def test_text_folds_a_multi_line_message_into_one_line() -> None:
    (line,) = runner.render_text([warn("x", "a\nb  c", "d\n e")])
    assert line == "warn  x  a b c -- d e"


def test_json_holds_every_finding_and_the_worst_status() -> None:
    data = json.loads(runner.render_json(FINDINGS))
    assert data["status"] == "fail"
    assert [f["status"] for f in data["findings"]] == ["ok", "warn", "fail"]
    assert data["findings"][2] == {
        "check": "pod_mtu",
        "status": "fail",
        "message": "1450 > 1350",
        "advice": "use MTU 1350",
    }


@pytest.mark.parametrize(
    ("findings", "status"),
    [([], 0), (FINDINGS[:1], 0), (FINDINGS[:2], 1), (FINDINGS, 2), (FINDINGS[1:2] + FINDINGS[2:], 2)],
)
def test_exit_status_is_the_worst_finding(findings: list[Finding], status: int) -> None:
    assert runner.exit_status(findings) == status


def test_listed_names_the_rest_by_count() -> None:
    assert listed(["a", "b"]) == "a, b"
    assert listed([str(i) for i in range(7)], 3) == "0, 1, 2 (+4 more)"


def _broken(node: Node) -> list[Finding]:
    raise RuntimeError("netlink went away")


def _away(node: Node) -> list[Finding]:
    raise Unavailable("etcd at http://127.0.0.1:1 did not answer")


def test_a_broken_check_is_a_failure_naming_it_and_the_others_still_run(tmp_path: object) -> None:
    checks = [
        Check("broken", _broken),
        Check("away", _away),
        Check("fine", lambda node: [ok("fine", "all good")]),
    ]
    found = runner.run(Options(cni_conf_dir=str(tmp_path)), checks)
    assert [(f.check, f.status) for f in found] == [("broken", Status.FAIL), ("away", Status.FAIL), ("fine", Status.OK)]
    assert "RuntimeError: netlink went away" in found[0].message
    assert "did not answer" in found[1].message and "--etcd-endpoints" in found[1].advice


def test_check_names_are_unique_and_each_has_a_summary() -> None:
    names = [c.name for c in runner.CHECKS]
    assert len(names) == len(set(names))
    assert all(c.summary for c in runner.CHECKS)


def test_options_map_to_the_node_paths() -> None:
    opts = cli.parser().parse_args(
        ["--cni-conf-dir", "/c", "--cni-cache-dir", "/k", "--host-local-dir", "/h", "--subnet-file", "/s",
         "--etcd-endpoints", "http://127.0.0.1:2379", "--bird-socket", "/b.ctl", "--lease-margin", "30"]
    )  # fmt: skip
    options = cli.options_of(opts)
    assert (options.cni_conf_dir, options.cni_cache_dir, options.host_local_dir, options.subnet_file) == (
        "/c", "/k", "/h", "/s"
    )  # fmt: skip
    assert (options.etcd_endpoints, options.bird_socket, options.lease_margin) == (
        "http://127.0.0.1:2379",
        "/b.ctl",
        30,
    )


def test_defaults_are_where_pycni_puts_things() -> None:
    options = cli.options_of(cli.parser().parse_args([]))
    assert options.cni_conf_dir == "/etc/cni/net.d"
    assert options.cni_cache_dir == "/var/lib/cni"
    assert options.host_local_dir == "/var/lib/cni/networks"
    assert options.subnet_file == "/run/flannel/subnet.env"
    assert options.attachments_dir == "/run/pycni/attachments"
    assert options.etcd_endpoints is None and options.bird_socket is None


@pytest.mark.parametrize("argv", [["--bogus"], ["--lease-margin", "soon"], ["--lease-margin", "-1"]])
def test_a_bad_option_is_one_line_and_exit_status_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = int(exc.code or 0)
    assert status == 1
    err = capsys.readouterr().err
    assert "pycni doctor" in err and "Traceback" not in err
