"""Environment + stdin to a verb handler, as ``cni/pkg/skel`` does it.

The required-variable matrix, validation, version gates and error codes are
the reference's; two deliberate differences, both safer:

* the "CNI_NETNS is the plugin's own namespace" check (code 8) runs *before*
  the handler, so a misdirected ADD changes nothing (skel runs it after);
* an unexpected exception becomes code 999 with a one-line message, and the
  traceback goes to stderr only when ``PYCNI_DEBUG`` is set.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pycni.skel.plugin import CmdArgs, Deferred, Reply
from pycni.spec import jsonutil
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.validate import validate_container_id, validate_interface_name, validate_network_name
from pycni.spec.version import (
    CURRENT_VERSION,
    VERB_MINIMUM_VERSION,
    VersionError,
    greater_than_or_equal,
    supports_verb,
)

if TYPE_CHECKING:
    from pycni.skel.plugin import Plugin

log = logging.getLogger(__name__)

VERBS = ("ADD", "CHECK", "DEL", "GC", "STATUS", "VERSION")

# Which variables each verb requires (``skel.getCmdArgsFromEnv``).
REQUIRED: dict[str, tuple[str, ...]] = {
    "CNI_CONTAINERID": ("ADD", "CHECK", "DEL"),
    "CNI_NETNS": ("ADD", "CHECK"),
    "CNI_IFNAME": ("ADD", "CHECK", "DEL"),
    "CNI_PATH": ("ADD", "CHECK", "DEL", "GC", "STATUS"),
}


def dispatch(
    plugin: Plugin,
    env: Mapping[str, str],
    stdin: bytes,
    netns_fd: int | None = None,
    deferred: list[Deferred] | None = None,
) -> Reply:
    command = env.get("CNI_COMMAND", "")
    config_version: str | None = None
    try:
        if command == "" and plugin.about:
            return Reply(0, stderr=f"{plugin.about}\nCNI protocol versions supported: {', '.join(plugin.versions)}\n")
        _require_env(command, env)
        if command == "VERSION":
            info = {"cniVersion": CURRENT_VERSION, "supportedVersions": list(plugin.versions)}
            return Reply(0, stdout=json.dumps(info, separators=(",", ":")) + "\n")
        if command not in VERBS:
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"unknown CNI_COMMAND: {command}")
        config = _decode_config(stdin)
        config_version = _config_version(config)
        args = CmdArgs(
            command=command,
            container_id=env.get("CNI_CONTAINERID", ""),
            netns=env.get("CNI_NETNS", ""),
            ifname=env.get("CNI_IFNAME", ""),
            args=env.get("CNI_ARGS", ""),
            path=[p for p in env.get("CNI_PATH", "").split(os.pathsep) if p],
            stdin=stdin,
            config=config,
            env=env,
            netns_fd=netns_fd,
            deferred=deferred if deferred is not None else [],
        )
        _check_version(plugin, command, config_version)
        return _call(plugin, args, env)
    except CNIError as error:
        return Reply(1, stdout=error.to_json(config_version or CURRENT_VERSION) + "\n")
    except Exception as exc:  # noqa: BLE001 - the contract is: never a traceback on stdout
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        stderr = traceback.format_exc() if env.get("PYCNI_DEBUG") else ""
        internal = CNIError(ErrorCode.INTERNAL, message)
        return Reply(1, stdout=internal.to_json(config_version or CURRENT_VERSION) + "\n", stderr=stderr)


def run_deferred(work: list[Deferred]) -> None:
    """Run the work handlers left for after the reply; a failure is logged, never raised:
    the reply has been decided, and deferred work is clean-up the next call or GC repeats."""
    while work:
        job = work.pop(0)
        try:
            job()
        except Exception:  # deferred clean-up must not turn into a reply (logged with its traceback)
            log.warning("deferred clean-up %s failed", getattr(job, "__qualname__", job), exc_info=True)


def _require_env(command: str, env: Mapping[str, str]) -> None:
    if not command:
        missing = ["CNI_COMMAND"]  # reported alone: without a command nothing else is known to be required
    else:
        missing = [name for name, verbs in REQUIRED.items() if command in verbs and not env.get(name)]
    if missing:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"required env variables [{','.join(missing)}] missing")
    if command in ("ADD", "CHECK", "DEL"):
        validate_container_id(env.get("CNI_CONTAINERID", ""))
        validate_interface_name(env.get("CNI_IFNAME", ""))


def _decode_config(stdin: bytes) -> dict[str, object]:
    try:
        config = jsonutil.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"error unmarshall network config: {exc}") from None
    if not isinstance(config, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE, "error unmarshall network config: expected a JSON object")
    name = config.get("name")
    if not name:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "missing network name")
    if not isinstance(name, str):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "network name must be a string")
    validate_network_name(name)
    return config


def _config_version(config: dict[str, object]) -> str:
    version = config.get("cniVersion", "")
    if not isinstance(version, str):
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"decoding version from network config: invalid cniVersion {version!r}"
        )
    return version or "0.1.0"


def _check_version(plugin: Plugin, command: str, config_version: str) -> None:
    try:
        if not supports_verb(command, config_version):
            raise CNIError(ErrorCode.INCOMPATIBLE_CNI_VERSION, f"config version does not allow {command}")
        if command in VERB_MINIMUM_VERSION and not any(
            greater_than_or_equal(v, config_version) for v in plugin.versions
        ):
            raise CNIError(ErrorCode.INCOMPATIBLE_CNI_VERSION, f"plugin version does not allow {command}")
    except VersionError as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, str(exc)) from None
    if config_version not in plugin.versions:
        supported = " ".join(f'"{v}"' for v in plugin.versions)
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            "incompatible CNI versions",
            f'config is "{config_version}", plugin supports [{supported}]',
        )


def _call(plugin: Plugin, args: CmdArgs, env: Mapping[str, str]) -> Reply:
    handlers = plugin.handlers
    if args.command == "ADD":
        _refuse_own_netns(args, env)
        if handlers.add is None:
            raise CNIError(ErrorCode.INTERNAL, f"plugin {plugin.name} does not implement ADD")
        result = handlers.add(args)
        return Reply(0, stdout=result.to_json(args.cni_version) + "\n")
    if args.command == "DEL":
        _refuse_own_netns(args, env)
    handler = {"CHECK": handlers.check, "DEL": handlers.delete, "GC": handlers.gc, "STATUS": handlers.status}[
        args.command
    ]
    if handler is not None:
        handler(args)
    return Reply(0)


def _refuse_own_netns(args: CmdArgs, env: Mapping[str, str]) -> None:
    """Code 8 if CNI_NETNS is the namespace the plugin itself runs in."""
    override = env.get("CNI_NETNS_OVERRIDE", "")
    if override.upper() == "TRUE" or override == "1" or not args.netns:
        return
    try:
        target = os.fstat(args.netns_fd) if args.netns_fd is not None else os.stat(args.netns)
        own = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return  # a netns that cannot be opened is the plugin's to report (DEL tolerates it)
    if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
        raise CNIError(ErrorCode.INVALID_NETNS, "plugin's netns and netns from CNI_NETNS should not be the same")
