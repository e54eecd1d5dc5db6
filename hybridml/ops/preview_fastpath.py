"""Cheaper registration for the offline preview: plain inputs skip the SDK's async serialiser.

Under the mock monitor most of the preview's time is the Pulumi SDK's per-resource bookkeeping,
not the program: `rpc.serialize_property` is a coroutine per value of every manifest (about 46 per
Kubernetes object), and the response's property struct is decoded back, field by field, into the
outputs the program never reads. For a value tree made only of plain JSON data (dict with str
keys, list, tuple, str, int, float, bool, None), with no type metadata or key translation in play,
the SDK's serialisation is a structural copy (tuples become lists). So, while `patched()` is
active:

- `serialize_property` copies such a tree synchronously and hands anything else (Outputs,
  resources, assets, input types, enums, the unknown marker, translated keys) to the SDK as before;
- `serialize_properties` remembers, for the struct it returns, the plain copy of each top-level
  property it could make;
- `resolve_outputs`, when the monitor returned no properties (the RecordingMonitor's "outputs are
  the inputs", which the SDK then takes from the inputs as it does outside a dry run), reads the
  inputs from that plain copy instead of decoding the struct again.

The wire format the monitor receives is unchanged (tests compare the recorded requests with and
without these paths, byte for byte) and the outputs the program sees are the same values.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from google.protobuf import struct_pb2
from pulumi import Resource
from pulumi.runtime import rpc

_NOT_PLAIN = object()
_UNKNOWN = rpc.UNKNOWN


def plain_copy(value: Any) -> Any:
    """A copy of a plain JSON value tree as it travels in a protobuf Struct, or `_NOT_PLAIN`."""
    kind = type(value)
    if kind is str:
        # the SDK's marker of an unknown value decodes to Unknown; leave it to the SDK
        return _NOT_PLAIN if value == _UNKNOWN else value
    if kind is int:
        # a protobuf Struct holds every number as a double: the engine's answer decodes 8 as 8.0, and so
        # does this copy, which stands in for that answer
        return float(value)
    if value is None or kind is float or kind is bool:
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                return _NOT_PLAIN
            copied = plain_copy(item)
            if copied is _NOT_PLAIN:
                return _NOT_PLAIN
            out[key] = copied
        return out
    if kind is list or kind is tuple:
        out_list = []
        for item in value:
            copied = plain_copy(item)
            if copied is _NOT_PLAIN:
                return _NOT_PLAIN
            out_list.append(copied)
        return out_list
    return _NOT_PLAIN


def _untranslated(input_transformer) -> bool:
    """True when keys pass through unchanged: no translator, or Resource's identity default."""
    return input_transformer is None or getattr(input_transformer, "__func__", None) is Resource.translate_input_property


class _Patches:
    def __init__(self) -> None:
        self.serialize_property = rpc.serialize_property
        self.serialize_properties = rpc.serialize_properties
        self.resolve_outputs = rpc.resolve_outputs
        # id(struct) -> (struct, {key: plain value}); holding the struct keeps its id unique
        self.plain_inputs: dict[int, tuple[Any, dict[str, Any]]] = {}

    async def fast_serialize_property(self, value, deps, property_key, resource_obj=None, input_transformer=None,
                                      typ=None, keep_output_values=False, exclude_resource_refs_from_deps=False,
                                      return_protobuf_value=False):
        if not return_protobuf_value and (typ is None or typ is Any) and _untranslated(input_transformer):
            copied = plain_copy(value)
            if copied is not _NOT_PLAIN:
                return copied
        return await self.serialize_property(value, deps, property_key, resource_obj, input_transformer, typ,
                                             keep_output_values, exclude_resource_refs_from_deps,
                                             return_protobuf_value)

    async def remembering_serialize_properties(self, inputs, property_deps, resource_obj=None,
                                               input_transformer=None, typ=None, keep_output_values=False,
                                               exclude_resource_refs_from_deps=False):
        if typ is None and resource_obj is not None and type(inputs) is dict and _untranslated(input_transformer):
            plain = plain_copy(inputs)
            if plain is not _NOT_PLAIN:
                # what the SDK's loop makes of plain inputs: None-valued properties dropped, no dependencies
                kept = {key: value for key, value in plain.items() if value is not None}
                struct = struct_pb2.Struct()
                struct.update(kept)
                for key in kept:
                    property_deps[key] = []
                self.plain_inputs[id(struct)] = (struct, kept)
                return struct
        return await self.serialize_properties(inputs, property_deps, resource_obj, input_transformer, typ,
                                               keep_output_values, exclude_resource_refs_from_deps)

    def resolve_from_plain_inputs(self, res, serialized_props, outputs, *args, **kwargs):
        remembered = self.plain_inputs.pop(id(serialized_props), None)
        if remembered is not None and remembered[0] is serialized_props and not outputs.fields:
            serialized_props = remembered[1]
        return self.resolve_outputs(res, serialized_props, outputs, *args, **kwargs)


@contextlib.contextmanager
def patched() -> Iterator[_Patches]:
    """Install the fast paths for the duration of one preview run (the SDK is process-global)."""
    patches = _Patches()
    rpc.serialize_property = patches.fast_serialize_property
    rpc.serialize_properties = patches.remembering_serialize_properties
    rpc.resolve_outputs = patches.resolve_from_plain_inputs
    try:
        yield patches
    finally:
        rpc.serialize_property = patches.serialize_property
        rpc.serialize_properties = patches.serialize_properties
        rpc.resolve_outputs = patches.resolve_outputs
        patches.plain_inputs.clear()
