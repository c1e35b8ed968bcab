"""The result and attachment cache, in libcni's on-disk format.

``<cache_dir>/results/<network>-<containerID>-<ifname>`` holds a
``cniCacheV1`` object (the config bytes base64-encoded, as Go marshals
``[]byte``), so Go runtimes sharing ``/var/lib/cni`` read ours and we read
theirs. Unlike libcni, writes are atomic (temp file, fsync, rename): a cache
truncated by a crash is a known source of stuck pods.

Damage is expected (issue 9's corruption campaign): a cache path holding
anything but a decodable regular file (garbage, a directory, a symlink, which
is never followed, an unreadable file) makes :meth:`ResultCache.load_result`
raise a CNI error naming the file, is skipped by :meth:`ResultCache.attachments`
(as libcni skips it), and is replaced by the next save and removed by delete.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

from pycni.fsutil import read_state, remove, sweep, write_atomic
from pycni.spec import jsonutil
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.result import Result
from pycni.spec.validate import validate_container_id, validate_interface_name, validate_network_name

DEFAULT_CACHE_DIR = "/var/lib/cni"
CACHE_KIND = "cniCacheV1"


@dataclass
class Attachment:
    """One cached (network, container, interface) attachment."""

    container_id: str
    network: str
    ifname: str
    config: bytes = b""
    netns: str = ""
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None


class ResultCache:
    def __init__(self, cache_dir: str = DEFAULT_CACHE_DIR) -> None:
        self.cache_dir = cache_dir
        self.results_dir = os.path.join(cache_dir, "results")

    def path(self, network: str, container_id: str, ifname: str) -> str:
        if not (network and container_id and ifname):
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                f"cache file path requires network name ({network!r}), container ID ({container_id!r}), "
                f"and interface name ({ifname!r})",
            )
        return os.path.join(self.results_dir, f"{network}-{container_id}-{ifname}")

    def save(self, attachment: Attachment, result: Result) -> None:
        data: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": attachment.container_id,
            "config": base64.b64encode(attachment.config).decode(),
            "ifName": attachment.ifname,
            "networkName": attachment.network,
        }
        if attachment.netns:
            data["netns"] = attachment.netns
        if attachment.cni_args:
            data["cniArgs"] = [list(pair) for pair in attachment.cni_args]
        if attachment.capability_args:
            data["capabilityArgs"] = attachment.capability_args
        data["result"] = result.to_dict()
        path = self.path(attachment.network, attachment.container_id, attachment.ifname)
        try:
            os.makedirs(self.results_dir, mode=0o700, exist_ok=True)
            write_atomic(path, json.dumps(data, separators=(",", ":")).encode(), replace_directory=True)
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"failed to write result cache {path}: {exc.strerror}") from None

    def load_result(self, network: str, container_id: str, ifname: str, version: str) -> Result | None:
        """The cached result at ``version``; ``None`` if nothing is cached.

        A file that is not a ``cniCacheV1`` object is read as a bare result
        (the legacy format). Anything else at the path raises a CNI error
        naming the file (libcni takes an unreadable file for "nothing cached").
        """
        path = self.path(network, container_id, ifname)
        try:
            raw = read_state(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot read cached result {path}: {exc.strerror or exc}") from None
        try:
            data = jsonutil.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise CNIError(ErrorCode.DECODING_FAILURE, f"cached result {path} is not JSON") from None
        payload = data.get("result") if isinstance(data, dict) and data.get("kind") == CACHE_KIND else data
        if not isinstance(payload, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, f"cached result {path} holds no result object")
        try:
            result = Result.from_dict(payload)
        except CNIError as error:
            raise CNIError(error.code, f"cached result {path} is not a CNI result: {error.msg}") from None
        try:
            return result.as_version(version)
        except CNIError as error:
            raise CNIError(
                error.code, f"failed to convert cached result {path} to config version {version!r}: {error.msg}"
            ) from None

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        """Remove whatever is at the attachment's cache path (a symlink itself, a directory whole)."""
        path = self.path(network, container_id, ifname)
        try:
            remove(path)
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"failed to remove result cache {path}: {exc.strerror}") from None

    def sweep(self) -> None:
        """Remove the temporaries of cache writers that were killed before their rename (GC)."""
        sweep(self.results_dir)

    def attachments(self, container_id: str = "") -> list[Attachment]:
        """Every readable ``cniCacheV1`` attachment, optionally of one container."""
        try:
            names = sorted(os.listdir(self.results_dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot list {self.results_dir}: {exc.strerror}") from None
        found = []
        for name in names:
            if name.startswith("."):
                continue  # write_atomic's temporary files
            if container_id:
                part = f"-{container_id}-"
                pos = name.find(part)
                if pos <= 0 or pos + len(part) >= len(name):
                    continue
            try:
                raw = read_state(os.path.join(self.results_dir, name))
            except OSError:
                continue  # unreadable or not a file: no attachment can be read from it
            attachment = _decode_attachment(name, raw)
            if attachment is None or (container_id and attachment.container_id != container_id):
                continue
            found.append(attachment)
        return found


def _decode_attachment(name: str, raw: bytes) -> Attachment | None:
    """The attachment a cache file holds; ``None`` unless it is a whole, consistent one.

    Fields must have their Go types, the names must be valid and must give
    the file's own name: GC runs DEL with them, so a damaged file must not
    turn into a DEL of something else.
    """
    try:
        data = jsonutil.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("kind") != CACHE_KIND:
        return None
    container_id, ifname, network = data.get("containerId"), data.get("ifName"), data.get("networkName")
    if not (isinstance(container_id, str) and isinstance(ifname, str) and isinstance(network, str)):
        return None
    try:
        validate_container_id(container_id)
        validate_interface_name(ifname)
        validate_network_name(network)
    except CNIError:
        return None
    if name != f"{network}-{container_id}-{ifname}":
        return None
    # absent or null is Go's zero value; any other type would fail Go's unmarshalling
    config, netns = _or_zero(data, "config", ""), _or_zero(data, "netns", "")
    pairs, cap_args = _or_zero(data, "cniArgs", []), _or_zero(data, "capabilityArgs", {})
    if not (isinstance(config, str) and isinstance(netns, str) and isinstance(cap_args, dict)):
        return None
    if not (isinstance(pairs, list) and all(_is_pair(p) for p in pairs)):
        return None
    try:
        decoded_config = base64.b64decode(config, validate=True)
    except ValueError:
        return None
    result = data.get("result")
    return Attachment(
        container_id=container_id,
        network=network,
        ifname=ifname,
        config=decoded_config,
        netns=netns,
        cni_args=[(p[0], p[1]) for p in pairs],
        capability_args=cap_args,
        result=result if isinstance(result, dict) else None,
    )


def _or_zero(data: dict[str, Any], key: str, zero: object) -> Any:
    value = data.get(key)
    return zero if value is None else value


def _is_pair(value: object) -> bool:
    """A ``[2]string`` of Go's ``cniArgs``."""
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
