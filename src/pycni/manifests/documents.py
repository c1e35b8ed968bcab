"""A manifest file's YAML documents, each knowing where it is, so every error can name it.

``kubectl apply -f`` takes a stream of documents separated by ``---``; empty
ones are skipped and a ``kind: List`` stands for its ``items``. Each document
here keeps its file, its position in the file (1-based, counting every
document of the stream) and its kind and name, so a message reads
``calico.yaml document 7 (ConfigMap kube-system/calico-config): ...``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml


class ManifestError(Exception):
    """A manifest pycni cannot use: the message is one line naming the file, the document and the key."""


@dataclass(frozen=True)
class Document:
    """One Kubernetes object of a manifest."""

    source: str  # the file it came from
    index: int  # 1-based position in the file's stream
    body: dict[str, Any]
    item: int | None = None  # position in a List's items (0-based), if it came from one

    @property
    def kind(self) -> str:
        return str(self.body.get("kind") or "")

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.body.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "")

    @property
    def label(self) -> str:
        """``Kind namespace/name`` (``Kind name`` for cluster-scoped objects)."""
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name or "(unnamed)"
        return f"{self.kind or '(no kind)'} {name}"

    @property
    def where(self) -> str:
        item = f" item {self.item}" if self.item is not None else ""
        return f"{self.source} document {self.index}{item} ({self.label})"

    def error(self, key: str, problem: str) -> ManifestError:
        """An error about ``key`` (a dotted path in this document) of this document."""
        return ManifestError(f"{self.where}: {key}: {problem}" if key else f"{self.where}: {problem}")

    def json_object(self, key: str, text: str, not_json: str = "not JSON") -> dict[str, Any]:
        """``text`` (the value at ``key``) parsed as a JSON object; else an error naming the key."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise self.error(key, f"{not_json}: {exc}") from None
        if not isinstance(raw, dict):
            raise self.error(key, "must be a JSON object")
        return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if mark is not None:
        text = f"line {mark.line + 1} column {mark.column + 1}: {text}"
    return " ".join(text.split())


def load_text(text: str, source: str) -> list[Document]:
    """The objects in ``text`` (a YAML stream); a document that is not an object is an error."""
    documents: list[Document] = []
    index = 0
    stream: Iterator[Any] = yaml.safe_load_all(text)
    while True:
        try:
            body = next(stream)
        except StopIteration:
            break
        except yaml.YAMLError as exc:
            raise ManifestError(f"{source} is not valid YAML (document {index + 1}): {_yaml_problem(exc)}") from None
        index += 1
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ManifestError(
                f"{source} document {index}: expected a Kubernetes object (a mapping with kind), "
                f"got {type(body).__name__}"
            )
        if body.get("kind") == "List" and isinstance(body.get("items"), list):
            for position, item in enumerate(body["items"]):
                if not isinstance(item, dict):
                    raise ManifestError(f"{source} document {index} item {position}: expected a Kubernetes object")
                documents.append(Document(source, index, item, position))
            continue
        documents.append(Document(source, index, body))
    return documents


def load_file(path: str) -> list[Document]:
    """The objects in the manifest file at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"the manifest {path} is not UTF-8 text") from None
    return load_text(text, path)


def load_files(paths: Iterable[str]) -> list[Document]:
    documents: list[Document] = []
    for path in paths:
        documents += load_file(path)
    return documents


def ignored(what: str, why: str) -> str:
    """The one-line note for a part of the manifest pycni does not use."""
    return f"ignored: {what} ({why})"


def find(documents: Iterable[Document], kind: str, name: str | None = None) -> list[Document]:
    """The documents of ``kind`` (and ``name``, if given), in manifest order."""
    return [d for d in documents if d.kind == kind and (name is None or d.name == name)]


def containers(document: Document, init: bool = False) -> list[dict[str, Any]]:
    """A workload's (DaemonSet, Deployment) pod template containers (or init containers)."""
    spec = document.body.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(pod, dict):
        return []
    items = pod.get("initContainers" if init else "containers")
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def words(document: Document, container: dict[str, Any], key: str) -> list[str]:
    """A container's ``command`` or ``args``: a list of strings (Kubernetes rejects anything else)."""
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(w, (str, int, float)) for w in value):
        raise document.error(f"containers[{container.get('name')}].{key}", "must be a list of strings")
    return [str(w) for w in value]


def node_selector(document: Document) -> dict[str, str]:
    spec = document.body.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    selector = pod.get("nodeSelector") if isinstance(pod, dict) else None
    return {str(k): str(v) for k, v in selector.items()} if isinstance(selector, dict) else {}


def configmap_data(document: Document) -> dict[str, str]:
    """A ConfigMap's ``data`` (values as the strings Kubernetes keeps)."""
    data = document.body.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise document.error("data", "must be a mapping of keys to strings")
    return {str(k): _string(v) for k, v in data.items()}


def _string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class ResolvedEnv:
    """A container's environment as the kubelet would give it on this node; ``unresolved``: why some are not."""

    values: dict[str, str]
    unresolved: tuple[tuple[str, str], ...]  # (variable, why)


def container_env(
    document: Document, container: dict[str, Any], configmaps: dict[str, Document], node: str
) -> ResolvedEnv:
    """``env`` (``value``, ``configMapKeyRef`` into the manifest's ConfigMaps, ``fieldRef spec.nodeName``).

    What needs the running cluster (secrets, the pod's own name or IP, resource
    limits) cannot be known here and is listed in ``unresolved``.
    """
    where = f"containers[{container.get('name')}].env"
    values: dict[str, str] = {}
    unresolved: list[tuple[str, str]] = []
    entries = container.get("env") or []
    if not isinstance(entries, list):
        raise document.error(where, "must be a list")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise document.error(where, f"{entry!r} is not a {{name, value}} entry")
        name = entry["name"]
        source = entry.get("valueFrom")
        if source is None:
            values[name] = _string(entry.get("value"))
            continue
        if not isinstance(source, dict):
            raise document.error(f"{where}[{name}].valueFrom", "must be a mapping")
        ref = source.get("configMapKeyRef")
        field = source.get("fieldRef")
        if isinstance(ref, dict):
            configmap = configmaps.get(str(ref.get("name")))
            key = str(ref.get("key"))
            data = configmap_data(configmap) if configmap is not None else None
            if data is not None and key in data:
                values[name] = data[key]
            elif ref.get("optional") is True:
                continue
            elif configmap is None:
                raise document.error(
                    f"{where}[{name}].valueFrom.configMapKeyRef",
                    f"ConfigMap {ref.get('name')!r} is not in the manifest",
                )
            else:
                raise ManifestError(f"{configmap.where}: data: no key {key!r} (wanted by {document.label} env {name})")
        elif isinstance(field, dict) and field.get("fieldPath") == "spec.nodeName":
            values[name] = node
        elif isinstance(field, dict):
            unresolved.append((name, f"the pod's {field.get('fieldPath')}; pycni runs no pod"))
        else:
            kinds = ", ".join(str(k) for k in source) or "nothing"
            unresolved.append((name, f"from {kinds}, known only in a cluster"))
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef") if isinstance(source, dict) else None
        if not isinstance(ref, dict):
            unresolved.append((f"envFrom {source!r}", "known only in a cluster"))
            continue
        configmap = configmaps.get(str(ref.get("name")))
        if configmap is not None:
            prefix = str(source.get("prefix") or "")
            for key, value in configmap_data(configmap).items():
                values.setdefault(prefix + key, value)  # env entries win over envFrom
        elif ref.get("optional") is not True:
            raise document.error(
                f"containers[{container.get('name')}].envFrom", f"ConfigMap {ref.get('name')!r} is not in the manifest"
            )
    return ResolvedEnv(values, tuple(unresolved))


def configmaps_by_name(documents: Iterable[Document]) -> dict[str, Document]:
    """The manifest's ConfigMaps by name (a later one of the same name wins, as a later apply replaces it)."""
    return {document.name: document for document in find(documents, "ConfigMap")}
