"""Secrets never in plaintext: not in stack config, not in container env, not in ConfigMaps."""
from __future__ import annotations

import re
from collections.abc import Iterable

from policies.rules.base import Context, Enforcement, ResourceView, Rule, Severity
from policies.rules.podspec import containers, pod_specs

SECRET_NAME = re.compile(r"(password|passwd|secret|token|api[_-]?key|private[_-]?key|credentials?|auth)", re.I)
NOT_SECRET = re.compile(r"(_FILE|_PATH|_REF|_NAME|_ENABLED)$", re.I)


def env_literals(r: ResourceView, ctx: Context) -> Iterable[str]:
    if not r.is_kubernetes:
        return
    for where, _, spec in pod_specs(r.kind, r.props):
        for cw, c in containers(spec):
            for e in c.get("env") or []:
                name = str(e.get("name", ""))
                if SECRET_NAME.search(name) and not NOT_SECRET.search(name) and e.get("value") not in (None, ""):
                    yield f"{where}.{cw} env {name} is a literal value; use valueFrom.secretKeyRef"
            for arg in (c.get("args") or []) + (c.get("command") or []):
                if re.search(r"--(password|token|api-key|secret)[= ]\S+", str(arg), re.I):
                    yield f"{where}.{cw} passes a secret on the command line"


def configmap_secrets(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type != "kubernetes:core/v1:ConfigMap":
        return
    for key, value in (r.props.get("data") or {}).items():
        if SECRET_NAME.search(key) and not NOT_SECRET.search(key) and value:
            yield f"ConfigMap key {key!r} looks like a secret; use a Secret"


def config_plaintext(config: dict[str, object]) -> list[str]:
    """Stack config (Pulumi.<stack>.yaml `config:`) keys that look secret but are not `secure:` values."""
    bad = []
    for key, value in config.items():
        short = key.split(":", 1)[-1]
        if SECRET_NAME.search(short) and not (isinstance(value, dict) and "secure" in value):
            bad.append(key)
    return bad


RULES = [
    Rule("secrets-not-in-env", "Secret-looking env vars come from Secrets, not literals.", Severity.critical,
         Enforcement.mandatory, "use env[].valueFrom.secretKeyRef (and a Pulumi secret for the value)",
         check=env_literals, group="secrets"),
    Rule("secrets-not-in-configmaps", "ConfigMaps do not carry secrets.", Severity.critical, Enforcement.mandatory,
         "move the value to a Secret built from a Pulumi secret", check=configmap_secrets, group="secrets"),
]
