"""The file side of the datacenter package: where the playbook lives, reading overrides, hashing roles."""
from __future__ import annotations

import hashlib
from pathlib import Path

from datacenter.inventory import InventoryOverrides, parse_overrides
from infra.loader import read_input

DATACENTER_DIR = Path(__file__).resolve().parent
PLAYBOOK = DATACENTER_DIR / "playbooks" / "bootstrap.yml"
ROLES_DIR = DATACENTER_DIR / "roles"
ANSIBLE_CFG = DATACENTER_DIR / "ansible.cfg"


def load_overrides(path: str | Path | None) -> InventoryOverrides | None:
    """Read an inventory overrides file; None for no file. Raises SpecError (file, field path, line)."""
    if path is None:
        return None
    path = Path(path)
    return parse_overrides(read_input(path, "the overrides file"), str(path))


def playbook_hash() -> str:
    """sha256 over the playbook, the roles and ansible.cfg: what a bootstrap runs, apart from the inventory."""
    digest = hashlib.sha256()
    files = [PLAYBOOK, ANSIBLE_CFG] + sorted(p for p in ROLES_DIR.rglob("*") if p.is_file())
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(DATACENTER_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
