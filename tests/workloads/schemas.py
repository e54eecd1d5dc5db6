"""Schema validation of rendered objects.

- Custom resources: the OpenAPI v3 schema of the upstream CRD (../shared/crds), converted to JSON Schema:
  `x-kubernetes-int-or-string` -> integer or string, `nullable` -> also null, `x-kubernetes-embedded-resource`
  -> apiVersion/kind/metadata allowed, and unknown fields rejected wherever the schema lists properties and
  does not say `x-kubernetes-preserve-unknown-fields` (what the API server's strict field validation does).
  Required fields, enums, patterns, bounds and list sizes are checked as written. CEL rules
  (`x-kubernetes-validations`) are not evaluated here.
- Core objects: the Kubernetes OpenAPI schema of the target minor, strict, from the kubernetes-validate
  package's bundled schemas (validators cached per kind: its own `validate` re-reads the definitions file
  on every call).
- Object metadata: DNS names and label syntax, for both.
"""
from __future__ import annotations

import copy
import json
import os
import re
from functools import cache
from pathlib import Path

import jsonschema
import yaml
from referencing import Registry, Resource

from tests.conftest import REPO

CRD_DIR = Path(os.environ.get("HYBRIDML_CRD_DIR", REPO.parent / "shared" / "crds"))
KUBERNETES_MINOR = "1.33"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def convert(schema: dict) -> dict:
    """Kubernetes structural schema -> JSON Schema (see module docstring)."""
    s = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-validations")}
    if s.pop("x-kubernetes-int-or-string", False):
        s.pop("type", None)
        s = {"anyOf": [{"type": "integer"}, {"type": "string"}], **{k: v for k, v in s.items() if k != "anyOf"}}
    preserve = s.pop("x-kubernetes-preserve-unknown-fields", False)
    embedded = s.pop("x-kubernetes-embedded-resource", False)
    for key in list(s):
        if key.startswith("x-kubernetes-"):
            s.pop(key)
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    if "properties" in s:
        s["properties"] = {k: convert(v) for k, v in s["properties"].items()}
    if embedded:
        s.setdefault("properties", {})
        for k in ("apiVersion", "kind"):
            s["properties"].setdefault(k, {"type": "string"})
        s["properties"].setdefault("metadata", {"type": "object"})
    if "items" in s and isinstance(s["items"], dict):
        s["items"] = convert(s["items"])
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = convert(s["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            s[key] = [convert(x) for x in s[key]]
    if "not" in s:
        s["not"] = convert(s["not"])
    if "properties" in s and "additionalProperties" not in s and not preserve:
        s["additionalProperties"] = False
    s.pop("format", None) if s.get("format") in ("int32", "int64", "double", "float") else None
    return s


@cache
def crd_index() -> dict[tuple[str, str], tuple[str, dict, bool]]:
    """(apiVersion, kind) -> (CRD file, converted schema, namespaced)."""
    out = {}
    # more/: the CRDs the local control planes install beyond the top level (hybridml/local/sites.py EXTRA_CRD_FILES)
    for path in (sorted(CRD_DIR.glob("*.yaml")) + sorted(CRD_DIR.glob("more/cert-manager.*.yaml"))
                 + sorted(CRD_DIR.glob("more/kuberay.*.yaml"))):
        for doc in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for v in spec["versions"]:
                if not v.get("served", True):
                    continue
                schema = convert(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
                props = schema.setdefault("properties", {})
                props["metadata"] = {"type": "object"}
                props.setdefault("apiVersion", {"type": "string"})
                props.setdefault("kind", {"type": "string"})
                out[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = (
                    path.name, schema, spec.get("scope", "Namespaced") == "Namespaced")
    return out


@cache
def _crd_validator(api_version: str, kind: str):
    _, schema, _ = crd_index()[(api_version, kind)]
    return jsonschema.Draft7Validator(schema)


def _k8s_schema_dir() -> Path:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    dirs = sorted(d for d in base.iterdir() if d.name.startswith(f"v{KUBERNETES_MINOR}.") and d.name.endswith("-local-strict"))
    if not dirs:
        raise RuntimeError(f"kubernetes-validate has no schemas for {KUBERNETES_MINOR}")
    return dirs[-1]


@cache
def _k8s_registry() -> Registry:
    defs = json.loads((_k8s_schema_dir() / "_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


@cache
def _core_validator(api_version: str, kind: str):
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _k8s_schema_dir() / f"{kind.lower()}-{group}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    registry = Resource.from_contents(schema) @ _k8s_registry()
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def is_custom(api_version: str, kind: str) -> bool:
    return (api_version, kind) in crd_index()


def metadata_errors(manifest: dict) -> list[str]:
    meta = manifest.get("metadata") or {}
    errs = []
    name = meta.get("name", "")
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errs.append(f"metadata.name {name!r} is not a DNS subdomain")
    ns = meta.get("namespace")
    if ns is not None and (len(ns) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", ns)):
        errs.append(f"metadata.namespace {ns!r} is not a DNS label")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or len(label) > 63 \
                or not _LABEL_NAME.match(label):
            errs.append(f"label key {key!r} invalid")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            errs.append(f"label {key}={value!r}: invalid value")
    return errs


def validate(manifest: dict) -> list[str]:
    """Every problem with one object (empty when valid)."""
    api_version, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
    errs = metadata_errors(manifest)
    if is_custom(api_version, kind):
        validator = _crd_validator(api_version, kind)
        _, _, namespaced = crd_index()[(api_version, kind)]
        if namespaced != ("namespace" in manifest.get("metadata", {})):
            errs.append(f"{kind} is {'namespaced' if namespaced else 'cluster-scoped'}: metadata.namespace "
                        f"{'missing' if namespaced else 'must not be set'}")
    else:
        validator = _core_validator(api_version, kind)
        if validator is None:
            return errs + [f"no schema for {api_version} {kind} (Kubernetes {KUBERNETES_MINOR} or shared/crds)"]
    for e in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in e.absolute_path)
        errs.append(f"{path or '<root>'}: {e.message[:300]}")
    return errs
