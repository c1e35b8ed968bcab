"""The result and attachment cache, in libcni's on-disk format.

``<cache_dir>/results/<network>-<containerID>-<ifname>`` holds a
``cniCacheV1`` object (the config bytes base64-encoded, as Go marshals
``[]byte``), so Go runtimes sharing ``/var/lib/cni`` read ours and we read
theirs. Unlike libcni, writes are atomic (temp file, fsync, rename): a cache
truncated by a crash is a known source of stuck pods.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

from pycni.fsutil import write_atomic
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.result import Result

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
            write_atomic(path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"failed to write result cache {path}: {exc.strerror}") from None

    def load_result(self, network: str, container_id: str, ifname: str, version: str) -> Result | None:
        """The cached result at ``version``; ``None`` if nothing is cached.

        A file that is not a ``cniCacheV1`` object is read as a bare result
        (the legacy format). Undecodable content raises.
        """
        raw = self._read(self.path(network, container_id, ifname))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            data = None
        payload = data.get("result") if isinstance(data, dict) and data.get("kind") == CACHE_KIND else data
        if payload is None:
            raise CNIError(
                ErrorCode.DECODING_FAILURE, f"cached result for {network}/{container_id}/{ifname} is not JSON"
            )
        try:
            return Result.from_dict(payload).as_version(version)
        except CNIError as error:
            raise CNIError(
                error.code, f"failed to convert cached result to config version {version!r}: {error.msg}"
            ) from None

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        try:
            os.unlink(self.path(network, container_id, ifname))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"failed to remove result cache: {exc.strerror}") from None

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
            if container_id:
                part = f"-{container_id}-"
                pos = name.find(part)
                if pos <= 0 or pos + len(part) >= len(name):
                    continue
            raw = self._read(os.path.join(self.results_dir, name))
            attachment = _decode_attachment(raw) if raw is not None else None
            if attachment is None or (container_id and attachment.container_id != container_id):
                continue
            found.append(attachment)
        return found

    @staticmethod
    def _read(path: str) -> bytes | None:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError:
            return None


def _decode_attachment(raw: bytes) -> Attachment | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("kind") != CACHE_KIND:
        return None
    ifname, network = data.get("ifName"), data.get("networkName")
    if not ifname or not network:
        return None
    try:
        config = base64.b64decode(data.get("config") or "", validate=True)
    except (ValueError, TypeError):
        return None
    pairs = data.get("cniArgs") or []
    cap_args = data.get("capabilityArgs") or {}
    return Attachment(
        container_id=str(data.get("containerId", "")),
        network=str(network),
        ifname=str(ifname),
        config=config,
        netns=str(data.get("netns") or ""),
        cni_args=[(str(p[0]), str(p[1])) for p in pairs if isinstance(p, list) and len(p) == 2],
        capability_args=cap_args if isinstance(cap_args, dict) else {},
        result=data.get("result") if isinstance(data.get("result"), dict) else None,
    )
