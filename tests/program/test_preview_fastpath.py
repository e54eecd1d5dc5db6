"""The offline preview's cheaper registration (hybridml/preview_fastpath.py) sends the same requests."""
from __future__ import annotations

import json

import pulumi
import pytest

from hybridml.ops.preview import resolved_exports, run_preview
from hybridml.ops.preview_fastpath import _NOT_PLAIN, plain_copy


def test_plain_trees_are_copied_as_the_sdk_serialises_them():
    tree = {"a": [1, 2.5, True, None, ("x", "y")], "b": {"c": "d"}}
    copied = plain_copy(tree)
    assert copied == {"a": [1, 2.5, True, None, ["x", "y"]], "b": {"c": "d"}}   # tuples become lists
    # numbers as a Struct carries them (doubles), so outputs read from the copy are what the engine returns
    assert type(copied["a"][0]) is float and copied["a"][2] is True
    assert copied is not tree and copied["b"] is not tree["b"]                    # a copy, not an alias


@pytest.mark.parametrize("make", [
    lambda: {"a": pulumi.Output.__new__(pulumi.Output)},    # an Output: awaited (secret or not) by the SDK
    lambda: {"a": ["04da6b54-80e4-46f7-96ec-b56ff0331ba9"]},  # the SDK's unknown marker
    lambda: {1: "non-string key"},
    lambda: {"a": {1, 2}},                                   # not JSON
    lambda: {"a": pulumi.StringAsset("x")},
])
def test_anything_else_is_left_to_the_sdk(make):
    assert plain_copy(make()) is _NOT_PLAIN


def _requests(result):
    return sorted((r.type, r.name, r.urn, r.id, r.provider, r.parent, tuple(sorted(r.dependencies)),
                   r._struct.SerializeToString(deterministic=True) if r._struct is not None else b"")
                  for r in result.resources)


@pytest.mark.parametrize("env,mode", [("dev", "cloud"), ("local", "local")])
def test_the_monitor_receives_the_same_requests_with_and_without_fast_paths(env, mode):
    fast = run_preview(env, mode=mode, stack=f"fast-{env}")
    fast_exports = resolved_exports(fast, tuple(sorted(fast.exports)))    # while its event loop is current
    stock = run_preview(env, mode=mode, stack=f"fast-{env}", fast_paths=False)
    stock_exports = resolved_exports(stock, tuple(sorted(stock.exports)))
    assert fast.count == stock.count > 100
    assert _requests(fast) == _requests(stock)            # types, names, URNs, providers, deps, property bytes
    assert fast_exports[0]["sites"]
    # compared as JSON: 8 and 8.0 are equal in Python but not in what a stack reference or a file shows
    assert json.dumps(fast_exports, sort_keys=True, default=str) == json.dumps(stock_exports, sort_keys=True, default=str)


def test_fast_paths_are_removed_after_a_run():
    from pulumi.runtime import rpc

    before = (rpc.serialize_property, rpc.serialize_properties, rpc.resolve_outputs)
    run_preview("dev", stack="fast-restore")
    assert (rpc.serialize_property, rpc.serialize_properties, rpc.resolve_outputs) == before
