"""Load an environment spec from YAML with errors that point at file, line and field.

PyYAML's node tree keeps the line of every key, so pydantic's error locations
(and our cross-reference paths) can be mapped back to a line in the file.
"""
from __future__ import annotations

import functools
from pathlib import Path as FsPath
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from infra.errors import SpecError, SpecIssue
from infra.references import check_references
from infra.spec import Environment

M = TypeVar("M", bound=BaseModel)
# A key path into a YAML document: mapping keys and sequence indexes.
KeyPath = tuple[str | int, ...]

ENVIRONMENTS_DIR = FsPath(__file__).parent / "environments"


def resolve_spec_path(spec: str | FsPath) -> FsPath:
    """A path to a YAML file, or the bare name of a shipped environment (local, dev, prod)."""
    path = FsPath(spec)
    if path.exists():
        return path
    shipped = ENVIRONMENTS_DIR / f"{spec}.yaml"
    if not path.suffix and shipped.exists():
        return shipped
    raise SpecError(str(spec), [SpecIssue((), "no such file (and no shipped environment of that name; "
                                             f"shipped: {', '.join(sorted(p.stem for p in ENVIRONMENTS_DIR.glob('*.yaml')))})")])


# libyaml when present: the prod spec parses in a fraction of a second instead of seconds.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """One parse that yields both the node tree (for line numbers) and the data."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def _line_index(node: yaml.Node, path: KeyPath = (), out: dict[KeyPath, int] | None = None) -> dict[KeyPath, int]:
    """Map every key path in the document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _line_index(item, path + (i,), out)
    return out


def _normalise_loc(loc: KeyPath, data: Any) -> KeyPath:
    """Drop the union-tag parts pydantic adds to a location (e.g. 'cloud', 'vllm') and keep real keys."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part not in node and not out[-1:] == [part]:
            # a missing required field, or a union tag: keep field names, skip tags
            if part.startswith(("function-", "tagged-union")) or _is_tag(node, part):
                continue
            out.append(part)
            node = None
        else:
            continue
    return tuple(out)


def _is_tag(node: dict[str, Any], part: str) -> bool:
    return node.get("kind") == part


def line_for(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def load_environment(spec: str | FsPath) -> Environment:
    """Parse and fully validate a spec file. Raises SpecError listing every problem."""
    path = resolve_spec_path(spec)
    file = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(file, [SpecIssue((), f"cannot read: {exc.strerror}")]) from None
    return parse_environment(text, file)


def parse_model(text: str, file: str, model: type[M], what: str, *, empty_ok: bool = False) -> tuple[M, dict[KeyPath, int]]:
    """Parse YAML into a pydantic model; errors name file, line, field path and reason.

    Returns the model and the line index (key path -> line) for checks that follow.
    """
    try:
        node, data = _parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError(file, [SpecIssue((), f"not valid YAML: {getattr(exc, 'problem', exc)}", line)]) from None
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(file, [SpecIssue((), f"{what} must be a YAML mapping", 1)])
    lines = _line_index(node) if node is not None else {}
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            loc = _normalise_loc(tuple(err["loc"]), data)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown field {loc[-1]!r}" + _suggest_field(model, err)
            elif err["type"] == "missing":
                msg = f"required field {loc[-1]!r} is missing"
            elif "input" in err and err["type"] not in ("model_type",):
                msg = f"{msg} (got {err['input']!r})" if not isinstance(err["input"], (dict, list)) else msg
            issues.append(SpecIssue(loc, msg, line_for(lines, loc)))
        raise SpecError(file, _dedupe(issues)) from None


def parse_environment(text: str, file: str = "<spec>") -> Environment:
    return _parse_environment(text, file)


# A program run reads its spec more than once (stack config, the program; the sharded preview once per
# stack), and the prod spec takes ~0.15 s to validate. The models are frozen, so equal text can share one.
@functools.lru_cache(maxsize=8)
def _parse_environment(text: str, file: str) -> Environment:
    env, lines = parse_model(text, file, Environment, "the spec (name, user_regions, sites, ...)")
    ref_issues = [SpecIssue(i.path, i.message, line_for(lines, i.path)) for i in check_references(env)]
    if ref_issues:
        raise SpecError(file, ref_issues)
    return env


def _known_fields(model: type[BaseModel]) -> set[str]:
    """Field names of every model defined in the module of `model` (where a typo's intended field lives)."""
    import sys

    names: set[str] = set()
    for obj in vars(sys.modules[model.__module__]).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
            names |= set(obj.model_fields)
    return names


def _suggest_field(model: type[BaseModel], err: ErrorDetails) -> str:
    import difflib

    close = difflib.get_close_matches(str(err["loc"][-1]), sorted(_known_fields(model)), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else " (not a field of this section)"


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen, out = set(), []
    for i in issues:
        key = (i.path, i.message)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out
