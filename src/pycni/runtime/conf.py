"""Loading network configurations from a directory (``libcni/conf.go``).

``.conflist`` files are searched first, in sorted order, for one whose
``name`` matches; then legacy ``.conf``/``.json`` single-plugin files, which
are up-converted to a one-plugin list. Unless ``loadOnlyInlinedPlugins`` is
set, ``<dir>/<name>/*.conf`` plugin objects are appended to a list (spec 1.1).
"""

from __future__ import annotations

import os

from pycni.spec.config import NetworkConfigList, PluginConfig
from pycni.spec.errors import CNIError, ErrorCode

DEFAULT_CONF_DIR = "/etc/cni/net.d"


class NoConfigsFound(CNIError):
    def __init__(self, directory: str) -> None:
        super().__init__(ErrorCode.INVALID_NETWORK_CONFIG, f"no net configurations found in {directory}")


class NetworkNotFound(CNIError):
    def __init__(self, directory: str, name: str) -> None:
        super().__init__(ErrorCode.INVALID_NETWORK_CONFIG, f'no net configuration with name "{name}" in {directory}')


def conf_files(directory: str, extensions: tuple[str, ...]) -> list[str]:
    """Regular files in ``directory`` with one of ``extensions``, sorted; none if it is missing."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot read config directory {directory}: {exc.strerror}") from None
    files = [
        os.path.join(directory, entry.name)
        for entry in entries
        if not entry.is_dir() and os.path.splitext(entry.name)[1] in extensions
    ]
    return sorted(files)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"error reading {path}: {exc.strerror}") from None


def _in_file(path: str, error: CNIError) -> CNIError:
    return CNIError(error.code, f"{path}: {error.msg}", error.details)


def load_conflist_file(path: str) -> NetworkConfigList:
    """One ``.conflist`` plus the plugin objects of its sibling folder."""
    try:
        config = NetworkConfigList.from_bytes(_read(path))
    except CNIError as error:
        raise _in_file(path, error) from None
    if not config.load_only_inlined_plugins:
        config.plugins.extend(load_sibling_plugins(os.path.dirname(path), config.name))
    if not config.plugins:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{path}: no plugin configs found")
    return config


def load_sibling_plugins(directory: str, network_name: str) -> list[PluginConfig]:
    folder = os.path.join(directory, network_name)
    plugins = []
    for path in conf_files(folder, (".conf",)):
        try:
            plugins.append(PluginConfig.from_bytes(_read(path), path))
        except CNIError as error:
            raise _in_file(path, error) from None
    return plugins


def load_single_conf(directory: str, name: str) -> NetworkConfigList:
    files = conf_files(directory, (".conf", ".json"))
    if not files:
        raise NoConfigsFound(directory)
    for path in files:
        try:
            plugin = PluginConfig.from_bytes(_read(path), "configuration")
        except CNIError as error:
            raise _in_file(path, error) from None
        if plugin.raw.get("name") == name:
            return NetworkConfigList.from_single(plugin)
    raise NetworkNotFound(directory, name)


def load_network(directory: str, name: str) -> NetworkConfigList:
    """The network called ``name`` in ``directory`` (``libcni.LoadNetworkConf``)."""
    conflists = conf_files(directory, (".conflist",))
    for path in conflists:
        config = load_conflist_file(path)
        if config.name == name:
            return config
    try:
        return load_single_conf(directory, name)
    except NoConfigsFound:
        if conflists:
            raise NetworkNotFound(directory, name) from None
        raise
