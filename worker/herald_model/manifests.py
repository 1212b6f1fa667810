"""PublishingTarget and Secret manifests from files, as ``kubectl apply -f`` takes them:
a file or a directory of ``.yaml``/``.yml``/``.json`` files, several documents per file,
``kind: List`` wrappers allowed. Other kinds are reported and skipped.

The one loader of manifests (``herald targets apply``, ``herald worker --targets``): every
file is read within bounds (its size, its YAML aliases expanded, its depth) and every
document checked by shape, a problem being one line naming the file and the document."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from herald_core.errors import InvalidTarget
from herald_core.json_depth import deeper_than
from herald_core.secret_data import decode_secret_data
from herald_model.target_spec import API_VERSION, KIND, PublishingTarget, parse_target

SUFFIXES = (".yaml", ".yml", ".json")


class AddressRule(Protocol):
    """What ``load`` asks of the egress policy (``herald_delivery.egress.EgressPolicy``)."""

    def url_problem(self, url: str | None) -> str | None:
        """Why a delivery to ``url`` would be refused, or None."""


@dataclasses.dataclass(frozen=True)
class Manifests:
    targets: list[PublishingTarget]
    secrets: dict[tuple[str, str], dict[str, str]]
    """(namespace, name) -> decoded Secret data."""
    skipped: list[str]
    """Documents of other kinds, described for the user."""


def _files(path: Path, recursive: bool) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        return sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix in SUFFIXES)
    raise InvalidTarget(f"{path}: no such file or directory")


MAX_FILE_BYTES = 3 * 1024 * 1024
"""The largest manifest file read (3 MiB, the Kubernetes API's largest request); a larger
one is refused without reading past the bound."""
MAX_NODES = 100_000
"""The most YAML nodes a file may hold once its aliases are expanded: a few aliases can
otherwise stand for billions of nodes (the "billion laughs")."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and lists a manifest may have (a PublishingTarget is
five levels deep)."""


def _read(file: Path) -> str:
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidTarget(f"{file}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidTarget(
            f"{file}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the most a manifest "
            "file may be (nothing past that was read)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTarget(
            f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}): manifests are UTF-8 YAML or JSON"
        ) from None


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """The nodes ``root`` stands for with every alias expanded, and its depth, counted over
    the composed graph (an alias is a shared node) without expanding anything; both capped
    just past their bounds. :class:`ValueError` for an alias inside itself."""
    sizes: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if done:
            open_.discard(id(node))
            size = min(1 + sum(sizes[id(c)][0] for c in children), MAX_NODES + 1)
            depth = min(1 + max((sizes[id(c)][1] for c in children), default=0), MAX_DEPTH + 1)
            sizes[id(node)] = (size, depth)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_:
            raise ValueError("a YAML alias refers to a node that contains it")
        open_.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_:
                raise ValueError("a YAML alias refers to a node that contains it")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _yaml_documents(file: Path, text: str) -> list[Any]:
    """The documents of a YAML text, each checked before it is built: its nodes with aliases
    expanded (at most MAX_NODES) and its depth (at most MAX_DEPTH)."""
    loader = yaml.SafeLoader(text)
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            try:
                size, depth = _expanded_size(node)
            except ValueError as exc:
                raise InvalidTarget(f"{file} (document {len(docs) + 1}): {exc}") from None
            if size > MAX_NODES:
                raise InvalidTarget(
                    f"{file} (document {len(docs) + 1}): more than {MAX_NODES} YAML nodes once "
                    "its aliases (*name) are expanded: refused (a manifest is a few dozen)"
                )
            if depth > MAX_DEPTH:
                raise InvalidTarget(
                    f"{file} (document {len(docs) + 1}): nested more than {MAX_DEPTH} levels "
                    "deep (a manifest is a few levels deep)"
                )
            docs.append(loader.construct_document(node))
    finally:
        loader.dispose()
    return docs


def _too_deep(file: Path) -> InvalidTarget:
    return InvalidTarget(f"{file}: nested too deeply to read (a manifest is a few levels deep)")


def _json_document(file: Path, text: str) -> Any:
    if deeper_than(text, MAX_DEPTH) is not None:  # before decoding: decoding recurses
        raise _too_deep(file)
    return json.loads(text)


def _documents(file: Path) -> Iterator[tuple[str, Any]]:
    text = _read(file)
    try:
        if file.suffix == ".json":
            docs: list[Any] = [_json_document(file, text)]
        else:
            docs = _yaml_documents(file, text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InvalidTarget(f"{file}: not valid YAML/JSON: {_one_line(exc)}") from None
    except RecursionError:
        raise _too_deep(file) from None
    for index, doc in enumerate(docs):
        where = f"{file} (document {index + 1})"
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            items = doc.get("items")
            if items is None:
                continue
            if not isinstance(items, list):
                raise InvalidTarget(
                    f"{where}: a List's items must be a list of objects, got {_kind_of(items)}"
                )
            for item_index, item in enumerate(items):
                yield f"{where} item {item_index + 1}", item
        else:
            yield where, doc


def _kind_of(value: Any) -> str:
    """A YAML/JSON value's kind, in the words of an error (never the value: it may be a
    secret)."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _one_line(exc: Exception) -> str:
    """PyYAML's message spans lines (it quotes the source); its problem and place do not."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or type(exc).__name__
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _string_map(where: str, doc: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    """A Secret's ``data`` or ``stringData``: a mapping of names to strings (as Kubernetes
    has it; a value is never turned into text: ``['a']`` is refused, not ``"['a']"``).
    The values are not shown in errors."""
    value = doc.get(field)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidTarget(
            f"{where}: Secret {field} must be a mapping of keys to strings, got {_kind_of(value)}"
        )
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidTarget(f"{where}: Secret {field} has a key that is not a string")
        if not isinstance(item, str):
            raise InvalidTarget(
                f"{where}: Secret {field}.{key} must be a string, got {_kind_of(item)} (quote "
                "it: a Secret's values are text)"
            )
    return value


def _secret_data(where: str, doc: Mapping[str, Any]) -> dict[str, str]:
    data, undecodable = decode_secret_data(_string_map(where, doc, "data"))
    if undecodable:
        raise InvalidTarget(
            f"{where}: Secret data.{undecodable[0]} is not base64 of UTF-8 text (use "
            "stringData for plain text)"
        )
    data.update(_string_map(where, doc, "stringData"))
    return data


def load(
    path: str | Path,
    *,
    egress: AddressRule,
    default_namespace: str = "default",
    recursive: bool = False,
) -> Manifests:
    """Every PublishingTarget and Secret under ``path``. All problems are collected and
    raised together, so nothing is applied from a set of files with a mistake in it. A
    target whose URL names an address ``egress`` refuses is one of them (the workers
    would refuse every delivery)."""
    targets: list[PublishingTarget] = []
    secrets: dict[tuple[str, str], dict[str, str]] = {}
    skipped: list[str] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for file in _files(Path(path), recursive):
        for where, doc in _documents(file):
            if not isinstance(doc, Mapping):
                problems.append(f"{where}: expected a Kubernetes object, got {type(doc).__name__}")
                continue
            kind, api = doc.get("kind"), doc.get("apiVersion")
            meta = doc.get("metadata") or {}
            if not isinstance(meta, Mapping):
                problems.append(f"{where}: metadata must be a mapping, got {_kind_of(meta)}")
                continue
            if kind == KIND and api == API_VERSION:
                try:
                    target = parse_target(doc, default_namespace=default_namespace)
                except InvalidTarget as exc:
                    problems.append(f"{where}: {exc}")
                    continue
                if (why := egress.url_problem(target.spec.url)) is not None:
                    problems.append(f"{where}: PublishingTarget {target.ref}: spec.url: {why}")
                    continue
                if target.ref in seen:
                    problems.append(
                        f"{where}: PublishingTarget {target.ref} is also defined in "
                        f"{seen[target.ref]}"
                    )
                    continue
                seen[target.ref] = where
                targets.append(target)
            elif kind == "Secret" and api == "v1":
                name = meta.get("name")
                if not isinstance(name, str) or not name:
                    problems.append(f"{where}: Secret without metadata.name")
                    continue
                namespace = meta.get("namespace") or default_namespace
                if not isinstance(namespace, str):
                    problems.append(f"{where}: Secret metadata.namespace must be a string")
                    continue
                try:
                    secrets[(namespace, name)] = _secret_data(where, doc)
                except InvalidTarget as exc:
                    problems.append(str(exc))
            else:
                name = meta.get("name")
                skipped.append(f"{where}: {api}/{kind} {name if isinstance(name, str) else '?'}")
    for target in targets:
        secret = secrets.get((target.namespace, target.spec.secret_name or ""), {})
        if egress.url_problem((secret.get("url") or "").strip()):
            problems.append(
                f"PublishingTarget {target.ref}: Secret {target.namespace}/"
                f"{target.spec.secret_name} key url names an address the egress policy "
                "refuses (the value is not shown): the workers would refuse every delivery. "
                "Point it elsewhere, or allow the address (HERALD_EGRESS_ALLOW, "
                "HERALD_EGRESS_ALLOW_LOOPBACK)."
            )
    if problems:
        raise InvalidTarget("\n".join(problems))
    return Manifests(targets=targets, secrets=secrets, skipped=skipped)
