"""Network configuration lists and plugin configuration objects.

Parsing follows libcni's ``NetworkConfFromBytes``: ``name`` required,
``cniVersion``/``cniVersions`` select the highest version not above the one
this library implements, the three booleans accept true/false or the strings
"true"/"false" in any case, and every plugin needs a ``type``. Plugin objects
keep every key they came with: runtimes must pass unknown keys through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.jsonutil import loads, type_name
from pycni.spec.version import CURRENT_VERSION, VersionError, greater_than, highest


def _config_error(message: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, message)


def decode_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Decode JSON that must be an object; code 6 with the parser's message if not."""
    try:
        decoded = loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"error parsing {what}: {exc}") from None
    if not isinstance(decoded, dict):
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"error parsing {what}: expected a JSON object, got {type_name(decoded)}"
        )
    return decoded


@dataclass
class PluginConfig:
    """One plugin object of a list, with every key it was written with."""

    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, raw: object, where: str = "plugin configuration") -> PluginConfig:
        if not isinstance(raw, dict):
            raise _config_error(f"error parsing {where}: expected an object, got {type_name(raw)}")
        plugin_type = raw.get("type")
        if not plugin_type:
            raise _config_error(f"error parsing {where}: missing 'type'")
        if not isinstance(plugin_type, str):
            raise _config_error(f"error parsing {where}: 'type' must be a string, got {type_name(plugin_type)}")
        capabilities = raw.get("capabilities", {})
        if capabilities is not None and not (
            isinstance(capabilities, dict) and all(isinstance(v, bool) for v in capabilities.values())
        ):
            raise _config_error(f"error parsing {where}: 'capabilities' must map names to true/false")
        return cls(raw=raw)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "plugin configuration") -> PluginConfig:
        return cls.from_dict(decode_json_object(data, where), where)

    @property
    def type(self) -> str:
        return str(self.raw["type"])

    @property
    def capabilities(self) -> dict[str, bool]:
        return dict(self.raw.get("capabilities") or {})


@dataclass
class NetworkConfigList:
    """A network configuration: name, selected version and its plugin chain."""

    name: str
    cni_version: str
    plugins: list[PluginConfig] = field(default_factory=list)
    disable_check: bool = False
    disable_gc: bool = False
    load_only_inlined_plugins: bool = False
    source: bytes = b""  # the original bytes, cached beside results as libcni does

    @classmethod
    def from_bytes(cls, data: bytes) -> NetworkConfigList:
        raw = decode_json_object(data, "configuration list")
        return cls.from_dict(raw, data)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: bytes | None = None) -> NetworkConfigList:
        if "name" not in raw:
            raise _config_error("error parsing configuration list: no name")
        name = raw["name"]
        if not isinstance(name, str):
            raise _config_error(f"error parsing configuration list: invalid name type {type_name(name)}")
        load_only_inlined = _read_bool(raw, "loadOnlyInlinedPlugins")
        config = cls(
            name=name,
            cni_version=select_version(raw),
            disable_check=_read_bool(raw, "disableCheck"),
            disable_gc=_read_bool(raw, "disableGC"),
            load_only_inlined_plugins=load_only_inlined,
            source=source if source is not None else json.dumps(raw).encode(),
        )
        if "plugins" not in raw:
            if load_only_inlined:
                raise _config_error(
                    "error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key"
                )
            return config
        plugins = raw["plugins"]
        if not isinstance(plugins, list):
            raise _config_error(f"error parsing configuration list: invalid 'plugins' type {type_name(plugins)}")
        if not plugins:
            raise _config_error("error parsing configuration list: no plugins in list")
        config.plugins = [
            PluginConfig.from_dict(plugin, f"plugin config {index}") for index, plugin in enumerate(plugins)
        ]
        return config

    @classmethod
    def from_single(cls, plugin: PluginConfig) -> NetworkConfigList:
        """Up-convert a legacy single-plugin ``.conf`` (libcni ``ConfListFromConf``)."""
        raw = plugin.raw
        name = raw.get("name", "")
        version = raw.get("cniVersion", "")
        wrapped = {"name": name, "cniVersion": version, "plugins": [raw]}
        return cls.from_dict(wrapped, json.dumps(wrapped, separators=(",", ":")).encode())


def select_version(raw: dict[str, Any]) -> str:
    """The highest of ``cniVersion`` and ``cniVersions`` not above 1.1.0."""
    version = raw.get("cniVersion", "")
    if not isinstance(version, str):
        raise _config_error(f"error parsing configuration list: invalid cniVersion type {type_name(version)}")
    if "cniVersions" not in raw:
        return version
    versions = raw["cniVersions"]
    if not isinstance(versions, list):
        raise _config_error(f"error parsing configuration list: invalid type for cniVersions: {type_name(versions)}")
    candidates: list[str] = []
    for index, entry in enumerate(versions):
        if not isinstance(entry, str):
            raise _config_error(
                f"error parsing configuration list: invalid type for cniVersions index {index}: {type_name(entry)}"
            )
        try:
            if not greater_than(entry, CURRENT_VERSION):
                candidates.append(entry)
        except VersionError as exc:
            raise _config_error(
                f"error parsing configuration list: invalid cniVersions entry {entry} at index {index}: {exc}"
            ) from None
    if version:
        try:
            if not greater_than(version, CURRENT_VERSION):
                candidates.append(version)
        except VersionError as exc:
            raise _config_error(f"error parsing configuration list: invalid cniVersion {version}: {exc}") from None
    return highest(candidates) if candidates else version


def _read_bool(raw: dict[str, Any], key: str) -> bool:
    if key not in raw:
        return False
    value = raw[key]
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise _config_error(f"error parsing configuration list: invalid type {type_name(value)} for {key}")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise _config_error(f"error parsing configuration list: invalid value {lowered!r} for {key}")
