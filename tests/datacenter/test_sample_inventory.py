"""The sample overrides file stays in step with the role defaults, and stays valid input."""
from __future__ import annotations

from pathlib import Path

import yaml

from datacenter.inventory import build_inventory, parse_overrides

DC = Path(__file__).resolve().parents[2] / "datacenter"
SAMPLE = DC / "inventory" / "sample" / "overrides.yml"
#: Set per host from the spec by hybridml (datacenter/inventory.py); never a knob of the sample.
FROM_SPEC = {"kubernetes_node_ip", "kubernetes_node_labels", "kubernetes_node_taints",
             "kubernetes_node_system_reserved", "node_exporter_listen_address", "kubernetes_node_api_endpoint"}


def role_defaults() -> dict:
    out = {}
    for path in sorted(DC.glob("roles/*/defaults/main.yml")):
        if path.parts[-3] == "validate_inventory":
            continue  # checks, not knobs
        out.update(yaml.safe_load(path.read_text()) or {})
    return out


def uncommented(text: str) -> dict:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("##")]
    lines = [line.replace("# ", "", 1) if line.lstrip().startswith("# ") else line for line in lines]
    return yaml.safe_load("\n".join(lines))


def test_every_role_default_is_a_knob_with_the_default_value():
    knobs = uncommented(SAMPLE.read_text())["vars"]
    defaults = role_defaults()
    missing = sorted(set(defaults) - set(knobs) - FROM_SPEC)
    assert not missing, f"role defaults missing from {SAMPLE.name}: {missing}"
    unknown = sorted(k for k in knobs if not k.startswith("ansible_") and k not in defaults)
    assert not unknown, f"{SAMPLE.name} has knobs no role defines: {unknown}"
    drift = {k: (knobs[k], defaults[k]) for k in defaults if k in knobs and knobs[k] != defaults[k]}
    assert not drift, f"sample value != role default: {drift}"


def test_each_variable_is_defined_once_across_roles():
    seen: dict[str, str] = {}
    for path in sorted(DC.glob("roles/*/defaults/main.yml")):
        for key in yaml.safe_load(path.read_text()) or {}:
            assert key not in seen, f"{key} defined in {seen.get(key)} and {path}"
            assert key.startswith(path.parts[-3] + "_"), f"{key} in {path} lacks the role prefix"
            seen[key] = str(path)


def test_sample_is_valid_overrides_input_as_is_and_uncommented(local_env):
    for text in (SAMPLE.read_text(), yaml.safe_dump(uncommented(SAMPLE.read_text()))):
        inventory = build_inventory(local_env, "dc-local", parse_overrides(text, str(SAMPLE)))
        assert inventory.vars["ansible_user"] == "root"
