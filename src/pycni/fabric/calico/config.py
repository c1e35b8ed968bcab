"""Which datastore the Calico tools talk to: a CalicoAPIConfig file, the environment, or pycni's own file.

As calicoctl (``calicoctl/commands/clientmgr``, docs "configure calicoctl"):
a config file given with ``-c`` (or ``/etc/calico/calicoctl.cfg`` if it
exists) is a ``CalicoAPIConfig`` in YAML or JSON whose ``spec`` has
``datastoreType`` and ``etcdEndpoints``; otherwise the environment:
``DATASTORE_TYPE=etcdv3`` and ``ETCD_ENDPOINTS`` (comma-separated), each also
accepted with a ``CALICO_`` prefix. ``ETCD_ENDPOINTS`` alone also means etcd.

pycni adds the embedded store for one-machine users: with no datastore
configured (or ``DATASTORE_TYPE=pycni``), the sqlite file at
``$PYCNI_CALICO_STORE`` or :data:`DEFAULT_STORE_PATH` holds the same keys an
etcd would. Calico's default, the Kubernetes API datastore, is not available
here and says so. etcd TLS settings are refused with a clear message (pycni's
etcd client speaks plain HTTP to etcd's gateway).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from pycni.datastore import Datastore, open_datastore
from pycni.fabric.calico.errors import CalicoError, DecodeError
from pycni.spec.errors import ErrorCode

DEFAULT_CONFIG_PATH = "/etc/calico/calicoctl.cfg"
DEFAULT_STORE_PATH = "/var/lib/pycni/calico.db"
STORE_ENV = "PYCNI_CALICO_STORE"
_TLS = ("etcdKeyFile", "etcdCertFile", "etcdCACertFile", "etcdKey", "etcdCert", "etcdCACert")
_ENV_NAMES = {
    "datastoreType": "DATASTORE_TYPE",
    "etcdEndpoints": "ETCD_ENDPOINTS",
    "etcdDiscoverySrv": "ETCD_DISCOVERY_SRV",
    "etcdUsername": "ETCD_USERNAME",
    "etcdPassword": "ETCD_PASSWORD",
    "etcdKeyFile": "ETCD_KEY_FILE",
    "etcdCertFile": "ETCD_CERT_FILE",
    "etcdCACertFile": "ETCD_CA_CERT_FILE",
}


class ConfigError(CalicoError):
    code_for_class = ErrorCode.INVALID_NETWORK_CONFIG


@dataclass(frozen=True)
class StoreConfig:
    """``datastore_type`` is ``etcdv3`` (``endpoints``) or ``pycni`` (the sqlite file at ``path``)."""

    datastore_type: str
    endpoints: tuple[str, ...] = ()
    path: str = ""
    source: str = field(default="the environment", compare=False)

    def describe(self) -> str:
        if self.datastore_type == "etcdv3":
            return f"etcd at {','.join(self.endpoints)}"
        return f"the embedded store {self.path}"


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name) or env.get("CALICO_" + name) or ""


def _from_spec(spec: Mapping[str, str], source: str, store_path: str) -> StoreConfig:
    kind = (spec.get("datastoreType") or "").strip()
    endpoints = tuple(e.strip() for e in (spec.get("etcdEndpoints") or "").split(",") if e.strip())
    if not kind:
        kind = "etcdv3" if endpoints else "pycni"
    if kind == "kubernetes":
        raise ConfigError(
            f"datastoreType kubernetes (from {source}) is not supported by pycni: "
            "use DATASTORE_TYPE=etcdv3 with ETCD_ENDPOINTS, or the embedded store (unset DATASTORE_TYPE)"
        )
    if kind == "etcdv3":
        if spec.get("etcdDiscoverySrv"):
            raise ConfigError(f"etcdDiscoverySrv (from {source}) is not supported by pycni: list etcdEndpoints")
        tls = [k for k in _TLS if spec.get(k)]
        if tls:
            raise ConfigError(f"etcd TLS ({', '.join(tls)} from {source}) is not supported by pycni yet: use http://")
        if not endpoints:
            raise ConfigError(f"datastoreType etcdv3 (from {source}) needs etcdEndpoints / ETCD_ENDPOINTS")
        return StoreConfig("etcdv3", endpoints, source=source)
    if kind in ("pycni", "sqlite", "embedded"):
        return StoreConfig("pycni", path=store_path, source=source)
    raise ConfigError(f"unknown datastoreType {kind!r} (from {source}): use etcdv3, or pycni for the embedded store")


def load_config(
    config_path: str | None = None, env: Mapping[str, str] | None = None, store_path: str | None = None
) -> StoreConfig:
    """The datastore to use, as calicoctl decides it (see the module docstring)."""
    env = os.environ if env is None else env
    path_for_store = store_path or env.get(STORE_ENV) or DEFAULT_STORE_PATH
    explicit = config_path is not None and config_path != DEFAULT_CONFIG_PATH
    path = config_path or DEFAULT_CONFIG_PATH
    if explicit or os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as handle:
                document = yaml.safe_load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise DecodeError(f"the config file {path} is not YAML or JSON: {exc}".replace("\n", " ")) from None
        if not isinstance(document, dict) or document.get("kind") != "CalicoAPIConfig":
            raise ConfigError(
                f"{path} is not a CalicoAPIConfig (apiVersion projectcalico.org/v3, kind CalicoAPIConfig)"
            )
        spec = document.get("spec") or {}
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: spec must be a mapping")
        return _from_spec({k: str(v) for k, v in spec.items() if v is not None}, path, path_for_store)
    spec = {key: _env(env, name) for key, name in _ENV_NAMES.items() if _env(env, name)}
    return _from_spec(spec, "the environment", path_for_store)


def open_store(config: StoreConfig, timeout: float = 5.0) -> Datastore:
    """Open the configured datastore (the sqlite file's directory is created)."""
    if config.datastore_type == "etcdv3":
        return open_datastore(list(config.endpoints), timeout=timeout)
    directory = os.path.dirname(config.path)
    if directory:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {directory} for the embedded store: {exc.strerror}") from None
    return open_datastore(path=config.path)
