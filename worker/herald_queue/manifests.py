"""PublishingTarget and Secret manifests from files, as ``kubectl apply -f`` takes them:
a file or a directory of ``.yaml``/``.yml``/``.json`` files, several documents per file,
``kind: List`` wrappers allowed. Other kinds are reported and skipped."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from herald_queue.egress import EgressPolicy
from herald_queue.errors import InvalidTarget
from herald_queue.secret_data import decode_secret_data
from herald_queue.spec import API_VERSION, KIND, PublishingTarget, parse_target

SUFFIXES = (".yaml", ".yml", ".json")


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


def _documents(file: Path) -> Iterator[tuple[str, Any]]:
    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        raise InvalidTarget(f"{file}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InvalidTarget(
            f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}): manifests are UTF-8 YAML or JSON"
        ) from None
    try:
        if file.suffix == ".json":
            docs: list[Any] = [json.loads(text)]
        else:
            docs = list(yaml.safe_load_all(text))
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InvalidTarget(f"{file}: not valid YAML/JSON: {_one_line(exc)}") from None
    except RecursionError:
        raise InvalidTarget(
            f"{file}: nested too deeply to read (a manifest is a few levels deep)"
        ) from None
    for index, doc in enumerate(docs):
        where = f"{file} (document {index + 1})"
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            for item_index, item in enumerate(doc.get("items") or []):
                yield f"{where} item {item_index + 1}", item
        else:
            yield where, doc


def _one_line(exc: Exception) -> str:
    """PyYAML's message spans lines (it quotes the source); its problem and place do not."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or type(exc).__name__
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _secret_data(where: str, doc: Mapping[str, Any]) -> dict[str, str]:
    data, undecodable = decode_secret_data(doc.get("data"))
    if undecodable:
        raise InvalidTarget(
            f"{where}: Secret data.{undecodable[0]} is not base64 of UTF-8 text (use "
            "stringData for plain text)"
        )
    for key, value in (doc.get("stringData") or {}).items():
        data[str(key)] = str(value)
    return data


def load(
    path: str | Path,
    *,
    egress: EgressPolicy,
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
                try:
                    secrets[(namespace, name)] = _secret_data(where, doc)
                except InvalidTarget as exc:
                    problems.append(str(exc))
            else:
                skipped.append(f"{where}: {api}/{kind} {meta.get('name', '?')}")
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
