"""Executing network configurations: what Go's ``libcni`` does.

:class:`CNIRuntime` runs a :class:`NetworkConfigList` against an attachment
(container ID, netns, interface): ADD forward with ``prevResult`` chained,
DEL in reverse with the cached final result, CHECK forward, STATUS, GC (DEL
of stale cached attachments, then ``GC`` with ``cni.dev/valid-attachments``
to every plugin), and VERSION probing. Results are cached in libcni's format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pycni.runtime.cache import DEFAULT_CACHE_DIR, Attachment, ResultCache
from pycni.runtime.invoke import (
    Executor,
    PluginRequest,
    SubprocessExecutor,
    VersionInfo,
    decode_result,
    find_in_path,
    get_version_info,
)
from pycni.spec.config import NetworkConfigList, PluginConfig
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.result import Result
from pycni.spec.validate import validate_container_id, validate_interface_name, validate_network_name
from pycni.spec.version import greater_than_or_equal, supports_verb


@dataclass
class RuntimeConf:
    """One attachment's parameters (libcni ``RuntimeConf``)."""

    container_id: str
    netns: str = ""
    ifname: str = "eth0"
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)


class PluginFailed(CNIError):
    """A plugin of a chain failed; keeps the plugin's own code."""

    def __init__(self, network: NetworkConfigList, plugin: PluginConfig, verb: str, error: CNIError) -> None:
        name = network.name
        super().__init__(
            error.code, f'plugin type="{plugin.type}" name="{name}" failed ({verb}): {error.msg}', error.details
        )
        self.cause = error


class MultipleErrors(CNIError):
    """Every error a best-effort operation met (GC, cleanup DEL); it goes on after each one."""

    def __init__(self, errors: list[CNIError]) -> None:
        super().__init__(errors[0].code, "; ".join(str(e) for e in errors))
        self.errors = errors


def build_plugin_config(
    network: NetworkConfigList,
    plugin: PluginConfig,
    prev_result: Result | None = None,
    rt: RuntimeConf | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The stdin of one plugin (libcni ``buildOneConfig``).

    ``name`` and ``cniVersion`` come from the list, ``prevResult`` is the
    previous result at the list's version, and ``runtimeConfig`` holds the
    capability arguments the plugin declared (matched ignoring case).
    Every other key passes through unaltered.
    """
    config = dict(plugin.raw)
    config["name"] = network.name
    config["cniVersion"] = network.cni_version
    if prev_result is not None:
        config["prevResult"] = prev_result.to_dict(network.cni_version)
    if rt is not None:
        runtime_config = _runtime_config(plugin, rt.capability_args)
        if runtime_config:
            config["runtimeConfig"] = runtime_config
    if extra:
        config.update(extra)
    return json.dumps(config, sort_keys=True).encode()


def _runtime_config(plugin: PluginConfig, capability_args: dict[str, Any]) -> dict[str, Any]:
    provided = {key.casefold(): value for key, value in capability_args.items()}
    return {
        name: provided[name.casefold()]
        for name, enabled in plugin.capabilities.items()
        if enabled and name.casefold() in provided
    }


class CNIRuntime:
    """The runtime side of CNI: find, build, execute, chain and cache."""

    def __init__(
        self,
        path: Sequence[str],
        cache_dir: str = DEFAULT_CACHE_DIR,
        executor: Executor | None = None,
    ) -> None:
        self.path = list(path)
        self.cache = ResultCache(cache_dir)
        self.executor: Executor = executor or SubprocessExecutor()

    # -- single plugin execution --------------------------------------------

    def _request(self, command: str, rt: RuntimeConf | None) -> PluginRequest:
        if rt is None:
            return PluginRequest(command=command, path=self.path)
        return PluginRequest(command, rt.container_id, rt.netns, rt.ifname, rt.args, self.path)

    def _exec(
        self, network: NetworkConfigList, plugin: PluginConfig, verb: str, stdin: bytes, rt: RuntimeConf | None
    ) -> bytes:
        label = {"ADD": "add", "DEL": "delete", "CHECK": "check", "GC": "gc", "STATUS": "status"}[verb]
        try:
            plugin_path = find_in_path(plugin.type, self.path)
            return self.executor.run(plugin_path, stdin, self._request(verb, rt).as_env())
        except CNIError as error:
            raise PluginFailed(network, plugin, label, error) from None

    # -- list operations ------------------------------------------------------

    def add(self, network: NetworkConfigList, rt: RuntimeConf) -> Result:
        """ADD every plugin in order; cache and return the final result.

        On failure nothing is rolled back here: as the spec requires, the
        caller issues DEL (the ``pycni add`` command does so itself).
        """
        validate_container_id(rt.container_id)
        validate_network_name(network.name)
        validate_interface_name(rt.ifname)
        result: Result | None = None
        for plugin in network.plugins:
            stdin = build_plugin_config(network, plugin, result, rt)
            stdout = self._exec(network, plugin, "ADD", stdin, rt)
            try:
                result = decode_result(stdout, network.cni_version)
            except CNIError as error:
                raise PluginFailed(network, plugin, "add", error) from None
        if result is None:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"network {network.name!r} has no plugins")
        self.cache.save(self._attachment(network, rt), result)
        return result

    def check(self, network: NetworkConfigList, rt: RuntimeConf) -> None:
        if not supports_verb("CHECK", network.cni_version):
            raise CNIError(
                ErrorCode.INCOMPATIBLE_CNI_VERSION,
                f'configuration version "{network.cni_version}" does not support the CHECK command',
            )
        if network.disable_check:
            return
        cached = self.cached_result(network, rt)
        for plugin in network.plugins:
            self._exec(network, plugin, "CHECK", build_plugin_config(network, plugin, cached, rt), rt)

    def delete(self, network: NetworkConfigList, rt: RuntimeConf, best_effort: bool = False) -> None:
        """DEL every plugin in reverse with the cached result; then drop the cache.

        An unreadable cache (garbage, a directory, a symlink, mode 000) is
        removed and DEL goes on without ``prevResult`` (libcni's "tolerate
        invalid cni cache"); plugins then find their state by container ID and
        interface. On a plugin failure the cache is kept so DEL can be retried. ``best_effort`` (cleaning up after a
        failed ADD) goes on past a failing plugin and raises the errors at the end.
        """
        cached: Result | None = None
        if greater_than_or_equal(network.cni_version, "0.4.0"):
            try:
                cached = self.cached_result(network, rt)
            except CNIError:
                self.cache.delete(network.name, rt.container_id, rt.ifname)
        errors: list[CNIError] = []
        for plugin in reversed(network.plugins):
            try:
                self._exec(network, plugin, "DEL", build_plugin_config(network, plugin, cached, rt), rt)
            except CNIError as error:
                if not best_effort:
                    raise
                errors.append(error)
        if errors:
            raise MultipleErrors(errors)
        self.cache.delete(network.name, rt.container_id, rt.ifname)

    def status(self, network: NetworkConfigList) -> None:
        """STATUS each plugin in order; stop at the first error (config ≥ 1.1.0)."""
        if not supports_verb("STATUS", network.cni_version):
            return
        for plugin in network.plugins:
            self._exec(network, plugin, "STATUS", build_plugin_config(network, plugin), None)

    def gc(self, network: NetworkConfigList, valid: Sequence[tuple[str, str]] | None = None) -> None:
        """Remove stale attachments, then tell every plugin which ones are valid.

        ``valid is None`` means every cached attachment of this network is
        stale, as ``cnitool gc`` does. Errors do not stop GC; all are raised
        together at the end.
        """
        if network.disable_gc:
            return
        errors: list[CNIError] = []
        keep = set(valid or ())
        self.cache.sweep()
        try:
            attachments = self.cache.attachments()
        except CNIError as error:  # the plugins' GC below still runs
            attachments = []
            errors.append(error)
        for attachment in attachments:
            if attachment.network != network.name:
                continue
            if valid is not None and (attachment.container_id, attachment.ifname) in keep:
                continue
            try:
                self.delete(network, self._cached_rt(attachment))
            except CNIError as error:
                errors.append(
                    CNIError(
                        error.code,
                        f"failed to delete stale attachment {attachment.container_id} {attachment.ifname}: {error.msg}",
                        error.details,
                    )
                )
        if supports_verb("GC", network.cni_version):
            extra: dict[str, Any] = {}
            if valid is not None:
                listed = [{"containerID": cid, "ifname": ifname} for cid, ifname in valid]
                extra = {"cni.dev/valid-attachments": listed, "cni.dev/attachments": listed}
            for plugin in network.plugins:
                try:
                    self._exec(network, plugin, "GC", build_plugin_config(network, plugin, extra=extra), None)
                except CNIError as error:
                    errors.append(error)
        if errors:
            raise MultipleErrors(errors)

    def validate(self, network: NetworkConfigList) -> list[str]:
        """Check every plugin exists and supports the list's version; return the capabilities."""
        errors: list[str] = []
        capabilities: set[str] = set()
        for plugin in network.plugins:
            try:
                info = self.version_info(plugin.type)
            except CNIError as error:
                errors.append(f"{plugin.type}: {error}")
                continue
            wanted = network.cni_version or "0.1.0"
            if wanted not in info.supported_versions:
                errors.append(f"plugin {plugin.type} does not support config version {wanted!r}")
            capabilities.update(name for name, enabled in plugin.capabilities.items() if enabled)
        if errors:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "; ".join(errors))
        return sorted(capabilities)

    def version_info(self, plugin_type: str) -> VersionInfo:
        return get_version_info(self.executor, find_in_path(plugin_type, self.path))

    def cached_result(self, network: NetworkConfigList, rt: RuntimeConf) -> Result | None:
        return self.cache.load_result(network.name, rt.container_id, rt.ifname, network.cni_version)

    # -- helpers --------------------------------------------------------------

    @staticmethod
    def _attachment(network: NetworkConfigList, rt: RuntimeConf) -> Attachment:
        return Attachment(
            container_id=rt.container_id,
            network=network.name,
            ifname=rt.ifname,
            config=network.source,
            netns=rt.netns,
            cni_args=list(rt.args),
            capability_args=dict(rt.capability_args),
        )

    @staticmethod
    def _cached_rt(attachment: Attachment) -> RuntimeConf:
        return RuntimeConf(
            container_id=attachment.container_id,
            netns=attachment.netns,
            ifname=attachment.ifname,
            args=list(attachment.cni_args),
            capability_args=dict(attachment.capability_args),
        )
