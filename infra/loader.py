"""Load an environment spec from YAML with errors that point at file, line and field.

PyYAML's node tree keeps the line of every key, so pydantic's error locations
(and our cross-reference paths) can be mapped back to a line in the file.

Every malformed input ends in a SpecError (exit code 2 at the CLI), never in another exception: a file that
is too large or not UTF-8, control characters, an empty file, YAML that nests too deep or expands without
bound through aliases (counted while composing, before anything is built), duplicate keys, values a model
refuses, and the checks across the file. The limits are in infra/limits.py (README "Input limits").
"""
from __future__ import annotations

import functools
import re
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingEndEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent
from yaml.resolver import Resolver

from infra import limits
from infra.errors import SpecError, SpecIssue
from infra.spec import Environment

M = TypeVar("M", bound=BaseModel)
# A key path into a YAML document: mapping keys and sequence indexes.
KeyPath = tuple[str | int, ...]

ENVIRONMENTS_DIR = FsPath(__file__).parent / "environments"
# What a validator or a check may raise besides ValueError (which pydantic turns into an error of its own).
_UNEXPECTED = (TypeError, ArithmeticError, LookupError, AttributeError, RecursionError, AssertionError)


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


def read_input(path: str | FsPath, what: str = "") -> str:
    """The text of an input file (`what` it is, for the message): at most limits.MAX_INPUT_BYTES, UTF-8.
    Raises SpecError otherwise."""
    file = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limits.MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise SpecError(file, [SpecIssue((), f"cannot read{' ' + what if what else ''}: {exc.strerror or exc}")]) from None
    if len(data) > limits.MAX_INPUT_BYTES:
        raise SpecError(file, [SpecIssue((), f"the file is larger than {limits.fmt_bytes(limits.MAX_INPUT_BYTES)}, "
                                             "the limit for an input file")])
    return decode_input(data, file)


def decode_input(data: bytes, file: str) -> str:
    """UTF-8 (a byte-order mark is fine), or a SpecError naming the byte offset, line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        off = exc.start
        line = data.count(b"\n", 0, off) + 1
        column = off - (data.rfind(b"\n", 0, off) + 1) + 1
        hint = " (the file starts with a UTF-16 byte-order mark: save it as UTF-8)" \
            if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ": save the file as UTF-8"
        raise SpecError(file, [SpecIssue((), f"not UTF-8: byte 0x{data[off]:02x} at byte offset {off} (line {line}, "
                                             f"column {column}) is {exc.reason}{hint}", line)]) from None


# --------------------------------------------------------------------------- YAML, bounded

# What YAML 1.1 allows in a stream (PyYAML's Reader.NON_PRINTABLE); found here, the error has a line.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

try:  # libyaml when present: the prod spec parses in a fraction of a second instead of seconds.
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class InputTooLarge(yaml.MarkedYAMLError):
    """The YAML nests or expands past a limit (infra/limits.py); raised while composing, before any data exists.
    `path`: where in the document (the node being composed)."""

    path: KeyPath = ()


class _BoundedComposer(Composer):
    """PyYAML's composer, counting as it goes: nesting depth, and nodes with every alias counted as the nodes it
    stands for (so 'billion laughs' stops at limits.MAX_YAML_NODES, having built only the few distinct nodes).

    On the way it records the line of every key path and refuses duplicate keys. An alias's contents are
    recorded where its anchor is: a problem under an alias points at the alias's key. No path resolvers
    (PyYAML's SafeLoader has none), so a scalar's tag depends on its text only and is cached."""

    def __init__(self) -> None:
        super().__init__()
        self.expanded = 0
        self.anchor_sizes: dict[str, int] = {}
        self.lines: dict[KeyPath, int] = {}
        self.duplicates: list[SpecIssue] = []
        self._tags: dict[tuple[str, Any], str] = {}

    if TYPE_CHECKING:  # from the parser and the resolver this is mixed with (see _Loader)
        def get_event(self) -> Any: ...
        def peek_event(self) -> Any: ...
        def check_event(self, *choices: type[Any]) -> bool: ...
        def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str: ...

    def compose_document(self) -> yaml.Node | None:
        self.get_event()  # DocumentStartEvent
        self.lines[()] = self.peek_event().start_mark.line + 1
        node = self._node((), 0)
        self.get_event()  # DocumentEndEvent
        self.anchors = {}
        return node

    def _count(self, n: int, event: Any, path: KeyPath | None) -> None:
        self.expanded += n
        if self.expanded > limits.MAX_YAML_NODES:
            raise self._too_large(f"the YAML expands to more than {limits.MAX_YAML_NODES:,} nodes (aliases counted as "
                                  "what they stand for; the limit for an input file)", event, path)

    def _too_large(self, message: str, event: Any, path: KeyPath | None) -> InputTooLarge:
        exc = InputTooLarge(None, None, message, event.start_mark)
        exc.path = path if path is not None else next(reversed(self.lines), ())
        return exc

    def _node(self, path: KeyPath | None, depth: int) -> yaml.Node:
        """One node and what it holds; `path` is where it sits (None inside a complex key: not recorded)."""
        event = self.get_event()
        kind = event.__class__
        anchor = event.anchor
        if kind is AliasEvent:
            target = self.anchors.get(anchor)
            if target is None:
                raise ComposerError(None, None, f"found undefined alias {anchor!r}", event.start_mark)
            size = self.anchor_sizes.get(anchor)
            if size is None:
                raise ComposerError(None, None, f"alias *{anchor} is part of the node it names (a recursive alias)",
                                    event.start_mark)
            self._count(size, event, path)
            return target
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(f"found duplicate anchor {anchor!r}; first occurrence", self.anchors[anchor].start_mark,
                                "second occurrence", event.start_mark)
        before = self.expanded
        tag = event.tag
        node: yaml.Node
        if kind is ScalarEvent:
            if tag is None or tag == "!":
                key = (event.value, event.implicit)
                tag = self._tags.get(key)
                if tag is None:
                    tag = self._tags[key] = self.resolve(yaml.ScalarNode, event.value, event.implicit)
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
            if anchor is not None:
                self.anchors[anchor] = node
        else:
            if depth >= limits.MAX_YAML_DEPTH:
                raise self._too_large(f"the YAML nests more than {limits.MAX_YAML_DEPTH} levels deep (the limit for an "
                                      "input file)", event, path)
            if kind is SequenceStartEvent:
                node = self._sequence(event, tag, anchor, path, depth)
            else:
                node = self._mapping(event, tag, anchor, path, depth)
        self._count(1, event, path)
        if anchor is not None:
            self.anchor_sizes[anchor] = self.expanded - before
        return node

    def _sequence(self, start: Any, tag: str | None, anchor: str | None, path: KeyPath | None, depth: int) -> yaml.Node:
        if tag is None or tag == "!":
            tag = self.resolve(yaml.SequenceNode, None, start.implicit)
        node = yaml.SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        items: list[yaml.Node] = node.value
        while not self.check_event(SequenceEndEvent):
            sub = None if path is None else path + (len(items),)
            if sub is not None:
                self.lines[sub] = self.peek_event().start_mark.line + 1
            items.append(self._node(sub, depth + 1))
        node.end_mark = self.get_event().end_mark
        return node

    def _mapping(self, start: Any, tag: str | None, anchor: str | None, path: KeyPath | None, depth: int) -> yaml.Node:
        if tag is None or tag == "!":
            tag = self.resolve(yaml.MappingNode, None, start.implicit)
        node = yaml.MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        first: dict[str, int] = {}
        while not self.check_event(MappingEndEvent):
            key_node = self._node(None, depth + 1)
            sub: KeyPath | None = None
            if path is not None and isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in first:
                    self.duplicates.append(SpecIssue(path + (key,), f"duplicate key {key!r} (first at line {first[key]}, "
                                                                    f"again at line {line}): a key may appear once in a mapping",
                                                     line))
                else:
                    first[key] = line
                    sub = path + (key,)
                    self.lines[sub] = line
            node.value.append((key_node, self._node(sub, depth + 1)))
        node.end_mark = self.get_event().end_mark
        return node


_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"


class _Loader(_BoundedComposer, _Parser, SafeConstructor, Resolver):
    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        _BoundedComposer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # Most nodes are plain strings, which SafeConstructor would return as they are after its bookkeeping.
        if node.__class__ is yaml.ScalarNode and node.tag == _STR:
            return node.value
        return super().construct_object(node, deep)


def _safe_int(loader: _Loader, node: yaml.ScalarNode) -> Any:
    """PyYAML's int and timestamp, with a bad value (more than 4,300 digits, month 13) a YAML error with a line."""
    try:
        return SafeConstructor.construct_yaml_int(loader, node)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(None, None, f"cannot read {node.value[:40]!r}: {exc}", node.start_mark) from None


def _safe_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    try:
        return SafeConstructor.construct_yaml_timestamp(loader, node)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(None, None, f"cannot read {node.value[:40]!r} as a date: {exc}",
                                                node.start_mark) from None


def _refused(loader: _Loader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(None, None, f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is "
                                            "not allowed here: use strings, numbers, booleans, lists and mappings",
                                            node.start_mark)


_CONSTRUCTORS: dict[str, Any] = {"int": _safe_int, "timestamp": _safe_timestamp, "binary": _refused, "set": _refused,
                                 "omap": _refused, "pairs": _refused}
for _tag, _constructor in _CONSTRUCTORS.items():  # (typed Any: the stubs know only PyYAML's own loader classes)
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _constructor)


def _yaml_issue(exc: yaml.YAMLError, lines: dict[KeyPath, int]) -> SpecIssue:
    """A YAML error as an issue at its line, and at a key path recorded on that line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    # a value that cannot be constructed: the outermost path on its line (the node's own, or one holding it);
    # a syntax error: the innermost path recorded there, the last one read before the problem
    order = lines if isinstance(exc, yaml.constructor.ConstructorError) else reversed(lines)
    at = next((p for p in order if lines[p] == line), ())
    if isinstance(exc, InputTooLarge):
        return SpecIssue(exc.path, str(exc.problem), line)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "maximum nesting depth" in problem:  # libyaml's own limit, met while scanning ahead
        return SpecIssue(at, f"the YAML nests more than {limits.MAX_YAML_DEPTH} levels deep (the limit for an input file)", line)
    context = getattr(exc, "context", None)
    return SpecIssue(at, f"not valid YAML: {context + ': ' if context else ''}{problem}", line)


def _compose(text: str, file: str) -> tuple[yaml.Node | None, _Loader]:
    """The node tree of a one-document stream, within the limits; the loader, to construct it."""
    loader = _Loader(text)
    try:
        return loader.get_single_node(), loader
    except yaml.YAMLError as exc:
        loader.dispose()
        raise SpecError(file, [_yaml_issue(exc, loader.lines)]) from None
    except RecursionError:  # the pure-Python parser, on a deep document: MAX_YAML_DEPTH stops the composer first
        loader.dispose()
        raise SpecError(file, [SpecIssue((), f"the YAML nests more than {limits.MAX_YAML_DEPTH} levels deep")]) from None


def _parse_yaml(text: str, file: str) -> tuple[Any, dict[KeyPath, int]]:
    """Checked text -> bounded node tree -> line index (duplicates refused) -> data. None for no document."""
    size = len(text) if len(text) * 4 <= limits.MAX_INPUT_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > limits.MAX_INPUT_BYTES:
        raise SpecError(file, [SpecIssue((), f"the input is larger than {limits.fmt_bytes(limits.MAX_INPUT_BYTES)}, "
                                             "the limit for an input file")])
    bad = _NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        hint = " (is the file UTF-16 or UTF-32? save it as UTF-8)" if bad.group() == "\x00" else ""
        raise SpecError(file, [SpecIssue((), f"control character U+{ord(bad.group()):04X} at line {line}, column {column}: "
                                             f"YAML allows only printable characters{hint}", line)])
    node, loader = _compose(text, file)
    try:
        if node is None:
            return None, {}
        if loader.duplicates:
            raise SpecError(file, loader.duplicates)
        try:
            return loader.construct_document(node), loader.lines
        except yaml.YAMLError as exc:
            raise SpecError(file, [_yaml_issue(exc, loader.lines)]) from None
        except (ValueError, *_UNEXPECTED) as exc:
            raise SpecError(file, [SpecIssue((), f"not valid YAML: {type(exc).__name__}: {exc}")]) from None
    finally:
        loader.dispose()


def line_for(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def load_environment(spec: str | FsPath) -> Environment:
    """Parse and fully validate a spec file. Raises SpecError listing every problem."""
    path = resolve_spec_path(spec)
    return parse_environment(read_input(path), str(path))


def parse_model(text: str, file: str, model: type[M], what: str, *, empty_ok: bool = False) -> tuple[M, dict[KeyPath, int]]:
    """Parse YAML into a pydantic model; errors name file, line, field path and reason.

    Returns the model and the line index (key path -> line) for checks that follow.
    """
    data, lines = _parse_yaml(text, file)
    if data is None and empty_ok:
        data = {}
    elif data is None:
        empty = "is empty" if not text.strip() else "holds no YAML document (only comments)"
        raise SpecError(file, [SpecIssue((), f"the file {empty}: expected {what}", 1)])
    if not isinstance(data, dict):
        raise SpecError(file, [SpecIssue((), f"{what} must be a YAML mapping (got {_kind(data)})", 1)])
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        issues = [_issue(err, data, lines, model) for err in exc.errors(include_url=False)]
        raise SpecError(file, _dedupe(issues)) from None
    except _UNEXPECTED as exc:  # a validator that raised something pydantic does not catch
        raise SpecError(file, [SpecIssue((), f"could not be validated: {type(exc).__name__}: {exc}", 1)]) from None


def _issue(err: ErrorDetails, data: Any, lines: dict[KeyPath, int], model: type[BaseModel]) -> SpecIssue:
    raw = tuple(err["loc"])
    key_error = raw[-1:] == ("[key]",)
    loc = _normalise_loc(raw[:-1] if key_error else raw, data)
    last = loc[-1] if loc else raw[-1] if raw else "?"
    msg = err["msg"]
    if key_error or err["type"] == "invalid_key":
        msg = f"key {last} is not valid: {msg}"
    elif err["type"] == "extra_forbidden":
        msg = f"unknown field {last!r}" + _suggest_field(model, err)
    elif err["type"] == "missing":
        msg = f"required field {last!r} is missing"
    elif "input" in err:
        msg = msg.removeprefix("Value error, ")
        got = err["input"]
        if not isinstance(got, (dict, list, set, tuple)):
            msg = f"{msg} (got {_short(got)})"
        elif err["type"].endswith("_type"):  # a mapping where a list belongs, ...; a model's own errors need no echo
            msg = f"{msg} (got {_kind(got)})"
    return SpecIssue(loc, msg, line_for(lines, loc))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}: {_short(value)}"


def _short(value: Any, width: int = 60) -> str:
    """repr() of an input value, cut to `width` (and safe for an int too long to print)."""
    if isinstance(value, bool) or value is None:
        return _key_text(value)
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length():,} bits"
    text = repr(value)
    return text if len(text) <= width else text[: width - 5] + "...'" + f" ({len(text):,} characters)"


def parse_environment(text: str, file: str = "<spec>") -> Environment:
    return _parse_environment(text, file)


# A program run reads its spec more than once (stack config, the program; the sharded preview once per
# stack), and the prod spec takes ~0.15 s to validate. The models are frozen, so equal text can share one.
@functools.lru_cache(maxsize=8)
def _parse_environment(text: str, file: str) -> Environment:
    from infra.bounds import check_addresses, check_sizes
    from infra.names import check_names
    from infra.references import check_references

    env, lines = parse_model(text, file, Environment, "the spec (name, user_regions, sites, ...)")
    try:
        # sizes first: the other checks expand host pools
        found = check_sizes(env)
        if not found:
            found = check_references(env) + check_addresses(env) + check_names(env)
    except _UNEXPECTED as exc:
        found = [SpecIssue((), f"could not be checked: {type(exc).__name__}: {exc}")]
    if found:
        raise SpecError(file, _dedupe([SpecIssue(i.path, i.message, line_for(lines, i.path)) for i in found]))
    return env


def _normalise_loc(loc: KeyPath, data: Any) -> KeyPath:
    """Drop the union-tag parts pydantic adds to a location (e.g. 'cloud', 'vllm') and keep real keys; a mapping
    key that is not a string (5, true) becomes its text, so that it reads as a key and not as a list index."""
    out: list[str | int] = []
    node = data
    for part in loc:
        key = _find_key(node, part) if isinstance(node, dict) else _NOT_FOUND
        if key is not _NOT_FOUND:
            out.append(key if isinstance(key, str) else _key_text(key))
            node = node[key]
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


_NOT_FOUND = object()


def _find_key(node: dict[Any, Any], part: str | int) -> Any:
    """The key of `node` that pydantic's location part stands for: itself, an equal key (true for 1), or a
    non-string key it printed (None for 'None')."""
    if part in node:
        return next((k for k in node if k == part), part)
    if isinstance(part, str):
        return next((k for k in node if not isinstance(k, str) and str(k) == part), _NOT_FOUND)
    return _NOT_FOUND


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def _is_tag(node: dict[str, Any], part: str) -> bool:
    return node.get("kind") == part


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

    close = difflib.get_close_matches(str(err["loc"][-1])[:100], sorted(_known_fields(model)), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else " (not a field of this section)"


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen, out = set(), []
    for i in issues:
        key = (i.path, i.message)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out
