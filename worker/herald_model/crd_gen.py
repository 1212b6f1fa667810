"""Writes the spec schemas of the CRDs from the spec models, the way kubebuilder's
controller-gen writes them from Go types.

    python -m herald_model.crd_gen          # rewrite crds/*.yaml and the chart's copies
    python -m herald_model.crd_gen --check  # exit 1 if a file differs (CI, tests)

Each CRD's ``openAPIV3Schema.properties.spec`` comes from its model
(:data:`MODELS`: ``herald_model.target_spec.TargetSpec``, ``herald_model.replay_spec.ReplaySpec``);
everything else in the file (names, printer columns, subresources, the status schema,
comments) is kept as written, so edit those in the YAML and the spec only in Python.
tests/unit/test_crd_schemas.py fails while a file and its model disagree.

Adding a spec field is one change, in the model: declare it with its alias (the camelCase
manifest name), type (``Literal[...]`` for an enum; a ``SpecModel`` subclass for a
sub-object, its docstring the description), default, bounds (``Field(ge=, le=, gt=)``,
``min_length``/``max_length``) and ``description``; put what pydantic cannot say in
``json_schema_extra`` (``format``, ``x-kubernetes-list-type``, CEL rules through
``spec_model.rules((rule, message))``, with the same check in a validator that raises
``spec_model.problem(message)``). Then run this module and commit the model and the CRDs
together. The parser (``parse_spec``, the operator, ``herald targets apply``) and its error
messages follow from the model; a field the worker uses is read as an attribute of it.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import FoldedScalarString, SingleQuotedScalarString

from herald_model.replay_spec import ReplaySpec
from herald_model.spec_base import openapi_schema
from herald_model.target_spec import TargetSpec

ROOT = Path(__file__).resolve().parents[2]
CRD_DIRS = (ROOT / "crds", ROOT / "deploy" / "helm" / "herald" / "crds")
MODELS: Mapping[str, type[BaseModel]] = {
    "publishingtargets.yaml": TargetSpec,
    "deadletterreplays.yaml": ReplaySpec,
}
COMMAND = "python -m herald_model.crd_gen"
# Folded text ends by this column; the spec's keys start at this one (as written in crds/).
_WIDTH = 92
_SPEC_COLUMN = 14


def _yaml() -> YAML:
    yaml = YAML()
    yaml.width = 4096  # never re-wrap what is kept; folded strings carry their own breaks
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    return yaml


def render(source: str, model: type[BaseModel]) -> str:
    """The CRD ``source`` (YAML text) with its spec schema generated from ``model``."""
    yaml = _yaml()
    doc = yaml.load(source)
    [version] = doc["spec"]["versions"]
    properties = version["schema"]["openAPIV3Schema"]["properties"]
    properties["spec"] = _node(openapi_schema(model))
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _node(value: Any, key: str = "", column: int = _SPEC_COLUMN) -> Any:
    """``value`` for ruamel: long texts folded, patterns single-quoted, short lists of names
    in flow style. ``column``: where the keys of ``value`` start, if it is a mapping."""
    if isinstance(value, Mapping):
        node = CommentedMap()
        for k, v in value.items():
            node[k] = _node(v, k, column + 2)
        return node
    if isinstance(value, list):
        items = CommentedSeq(_node(v, "", column + 2) for v in value)
        if key in ("required", "enum"):
            items.fa.set_flow_style()
        return items
    if isinstance(value, str):
        if key == "pattern":
            return SingleQuotedScalarString(value)
        if len(value) > 60 and key in ("description", "message", "rule"):
            return _folded(value, _WIDTH - column)
    return value


def _folded(text: str, width: int) -> FoldedScalarString:
    """``text`` as a folded block scalar (``>-``), broken at spaces within ``width``."""
    folded: FoldedScalarString = FoldedScalarString(text)
    breaks: list[int] = []
    start = 0
    while len(text) - start > width:
        cut = text.rfind(" ", start, start + width + 1)
        if cut <= start:
            break
        breaks.append(cut)
        start = cut + 1
    folded.fold_pos = breaks  # type: ignore[attr-defined]  # ruamel reads it when dumping
    return folded


def stale(dirs: Sequence[Path] = CRD_DIRS) -> dict[Path, str]:
    """The CRD files that differ from their models' output, with the text they should hold."""
    out: dict[Path, str] = {}
    for name, model in MODELS.items():
        source = (dirs[0] / name).read_text("utf-8")
        wanted = render(source, model)
        for directory in dirs:
            path = directory / name
            if not path.is_file() or path.read_text("utf-8") != wanted:
                out[path] = wanted
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which files differ")
    args = parser.parse_args(argv)
    changed = stale()
    for path, text in changed.items():
        where = path.relative_to(ROOT)
        if args.check:
            print(f"{where}: differs from its spec model; run {COMMAND}", file=sys.stderr)
        else:
            path.write_text(text, "utf-8")
            print(f"wrote {where}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
