"""Spec -> Ansible inventory for one datacenter. Pure: no files, no network, no Pulumi.

Layout of the inventory (YAML, deterministic: spec order for racks and hosts, sorted keys elsewhere):

    all:
      children:
        dc_local:                       # the datacenter: group vars hybridml_datacenter, ...
          vars: {...}
          children:
            dc_local_rack_r1:           # one group per rack, in spec order (= the rolling order)
              vars: {hybridml_rack: r1, hybridml_privacy_zone: internal}
              hosts:
                r1-h01: {ansible_host: 10.77.1.11, kubernetes_node_labels: {...}, ...}
        kube_node: {hosts: {...}}        # by role (kubespray's group names)
        kube_control_plane: {hosts: {...}}
        privacy_zone_pii: {hosts: {...}} # by privacy zone

Host vars carry everything a host needs (node labels and taints, node IP, kubelet reservations,
exporter listen address), so the kwok registration and the Pulumi fingerprints read the same values
Ansible uses. An overrides file (`parse_overrides`) adds connection settings, package sources and
extra hosts without touching the spec; its problems are `SpecError`s with field paths and lines.
"""
from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from infra.errors import SpecError, SpecIssue
from infra.spec import Datacenter, Environment, Host, PrivacyTier

# ---- the label and taint keys every bootstrapped node carries (also used for kwok nodes)
LABEL_REGION = "topology.kubernetes.io/region"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_DATACENTER = "hybridml.io/datacenter"
LABEL_RACK = "hybridml.io/rack"
LABEL_PRIVACY_ZONE = "hybridml.io/privacy-zone"
LABEL_NETWORK_ZONE = "hybridml.io/network-zone"
LABEL_GPU_TYPE = "hybridml.io/gpu-type"
LABEL_GPU_COUNT = "hybridml.io/gpu-count"
TAINT_PRIVACY_ZONE = "hybridml.io/privacy-zone"

ROLE_GROUPS = {"worker": "kube_node", "control-plane": "kube_control_plane"}
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def group_name(*parts: str) -> str:
    """Ansible group names may not contain '-': dc-local -> dc_local."""
    return "_".join(p.replace("-", "_") for p in parts)


# --------------------------------------------------------------------------- overrides file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostOverride(_Strict):
    address: ipaddress.IPv4Address | None = Field(
        default=None, description="Management address Ansible connects to (ansible_host). Default: the spec address.")
    ssh_port: int | None = Field(default=None, ge=1, le=65535, description="Default: the spec's ssh_port.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Host vars, over everything else.")


class RackOverride(_Strict):
    vars: dict[str, Any] = Field(default_factory=dict, description="Group vars of the rack group.")


class ExtraHost(_Strict):
    """A host the spec does not list (e.g. a control-plane node bootstrapped with the racks)."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    rack: str
    address: ipaddress.IPv4Address
    cores: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    role: str = Field(default="worker", pattern=r"^(worker|control-plane)$")
    ssh_port: int = Field(default=22, ge=1, le=65535)
    vars: dict[str, Any] = Field(default_factory=dict)


class InventoryOverrides(_Strict):
    """An inventory overrides file: everything the spec does not say about reaching and configuring hosts."""

    datacenter: str | None = Field(default=None, description="If set, must name the datacenter being bootstrapped.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Group vars of the datacenter group.")
    racks: dict[str, RackOverride] = Field(default_factory=dict)
    hosts: dict[str, HostOverride] = Field(default_factory=dict)
    add_hosts: list[ExtraHost] = Field(default_factory=list)
    # where it came from, so that checks against the spec can point at file and line
    _file: str = PrivateAttr("<overrides>")
    _lines: dict = PrivateAttr(default_factory=dict)


def parse_overrides(text: str, file: str = "<overrides>") -> InventoryOverrides:
    """Parse an overrides document. Raises SpecError with field paths and lines."""
    from infra.loader import line_for, parse_model

    overrides, lines = parse_model(text, file, InventoryOverrides,
                                   "an overrides file (vars, racks, hosts, add_hosts)", empty_ok=True)
    issues = []
    for path, names in [(("vars",), overrides.vars)] + \
            [(("racks", r, "vars"), o.vars) for r, o in overrides.racks.items()] + \
            [(("hosts", h, "vars"), o.vars) for h, o in overrides.hosts.items()] + \
            [(("add_hosts", i, "vars"), o.vars) for i, o in enumerate(overrides.add_hosts)]:
        for name in names:
            if not _VAR_NAME.match(str(name)):
                issues.append(SpecIssue(path + (name,), f"{name!r} is not a valid Ansible variable name",
                                        line_for(lines, path + (name,))))
    if issues:
        raise SpecError(file, issues)
    overrides._file = file
    overrides._lines = lines
    return overrides


# --------------------------------------------------------------------------- the inventory


@dataclass(frozen=True)
class InventoryHost:
    name: str
    rack: str
    address: str  # what Ansible connects to
    node_ip: str  # the spec address: kubelet --node-ip
    port: int
    role: str
    privacy_zone: str
    labels: dict[str, str]
    taints: tuple[str, ...]
    vars: dict[str, Any]  # every host var, the above included
    cores: int = 1
    memory_gib: float = 1.0


@dataclass(frozen=True)
class RackInventory:
    name: str
    group: str
    privacy_zone: str
    hosts: tuple[str, ...]
    vars: dict[str, Any]


@dataclass(frozen=True)
class Inventory:
    datacenter: str
    group: str
    max_fail_percentage: int
    racks: tuple[RackInventory, ...]
    hosts: tuple[InventoryHost, ...]
    vars: dict[str, Any] = field(default_factory=dict)

    # ---- lookups

    def host(self, name: str) -> InventoryHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def rack(self, name: str) -> RackInventory:
        for r in self.racks:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def host_names(self) -> list[str]:
        return [h.name for h in self.hosts]

    # ---- Ansible forms

    def to_ansible(self) -> dict[str, Any]:
        racks = {}
        for rack in self.racks:
            racks[rack.group] = {
                "vars": _sorted(rack.vars),
                "hosts": {name: _sorted(self.host(name).vars) for name in rack.hosts},
            }
        children: dict[str, Any] = {self.group: {"vars": _sorted(self.vars), "children": racks}}
        for role in ("control-plane", "worker"):
            members = [h.name for h in self.hosts if h.role == role]
            children[ROLE_GROUPS[role]] = {"hosts": {m: None for m in members}} if members else {}
        for tier in PrivacyTier:
            members = [h.name for h in self.hosts if h.privacy_zone == tier.value]
            if members:
                children[f"privacy_zone_{tier.value}"] = {"hosts": {m: None for m in members}}
        return {"all": {"children": children}}

    def to_yaml(self) -> str:
        header = (f"# Ansible inventory of datacenter {self.datacenter}, generated by hybridml from the spec.\n"
                  "# Do not edit: change the spec or the inventory overrides file and render again.\n")
        return header + yaml.safe_dump(self.to_ansible(), sort_keys=False, default_flow_style=False, width=120)

    # ---- rolling order

    def select(self, limit: list[str] | str | None) -> list[str]:
        """Host names a --limit selects, in inventory order.

        Items (comma separated or a list): host name, rack name, group name (datacenter, rack, role or
        privacy-zone group), a glob over host names (`r1-*`), `all`; `!item` removes. An item that
        matches nothing is a SpecError (`limit`), so a typo never bootstraps nothing quietly.
        """
        if limit is None or limit == [] or limit == "":
            return self.host_names
        items = [i.strip() for part in ([limit] if isinstance(limit, str) else limit)
                 for i in re.split(r"[,:]", part) if i.strip()]
        groups = self._groups()
        chosen: set[str] = set()
        issues = []
        if all(i.startswith("!") for i in items):
            chosen = set(self.host_names)
        for i, item in enumerate(items):
            negate = item.startswith("!")
            key = item[1:] if negate else item
            matched = self._match(key, groups)
            if not matched:
                issues.append(SpecIssue(("limit", i), f"{key!r} matches no host, rack or group of {self.datacenter} "
                                        f"(racks: {', '.join(r.name for r in self.racks)}; groups: "
                                        f"{', '.join(sorted(groups))})"))
            chosen = chosen - matched if negate else chosen | matched
        if issues:
            raise SpecError("--limit", issues)
        return [h for h in self.host_names if h in chosen]

    def _groups(self) -> dict[str, set[str]]:
        out = {"all": set(self.host_names), self.group: set(self.host_names)}
        for rack in self.racks:
            out[rack.group] = set(rack.hosts)
        for role, group in ROLE_GROUPS.items():
            out[group] = {h.name for h in self.hosts if h.role == role}
        for tier in PrivacyTier:
            out[f"privacy_zone_{tier.value}"] = {h.name for h in self.hosts if h.privacy_zone == tier.value}
        return out

    def _match(self, key: str, groups: dict[str, set[str]]) -> set[str]:
        if key in self.host_names:
            return {key}
        for rack in self.racks:
            if key == rack.name:
                return set(rack.hosts)
        if key in groups:
            return set(groups[key])
        if any(c in key for c in "*?["):
            return {h for h in self.host_names if fnmatch.fnmatchcase(h, key)}
        return set()

    def batches(self, selected: list[str] | None = None) -> list[list[str]]:
        """Rolling batches: one per rack, in spec order, holding the selected hosts of that rack."""
        chosen = set(self.host_names if selected is None else selected)
        return [[h for h in rack.hosts if h in chosen] for rack in self.racks if any(h in chosen for h in rack.hosts)]

    def play_vars(self, selected: list[str] | None = None) -> dict[str, Any]:
        """Extra vars for bootstrap.yml: play keywords cannot read inventory vars, so these carry them."""
        return {
            "hybridml_bootstrap_hosts": self.group,
            "hybridml_serial": [len(b) for b in self.batches(selected)] or [1],
            "hybridml_max_fail_percentage": self.max_fail_percentage,
        }

    # ---- plain data (Pulumi resource inputs), and back

    def to_data(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Inventory:
        return cls(datacenter=data["datacenter"], group=data["group"],
                   max_fail_percentage=int(data["max_fail_percentage"]),
                   racks=tuple(RackInventory(**{**r, "hosts": tuple(r["hosts"])}) for r in data["racks"]),
                   hosts=tuple(InventoryHost(**{**h, "taints": tuple(h["taints"])}) for h in data["hosts"]),
                   vars=dict(data.get("vars") or {}))

    # ---- change detection (Pulumi)

    def rack_fingerprint(self, rack: str) -> str:
        """sha256 of everything that a bootstrap of this rack depends on in the inventory."""
        r = self.rack(rack)
        material = {"datacenter": self.datacenter, "vars": self.vars, "rack": r.vars,
                    "hosts": [self.host(h).vars for h in r.hosts],
                    "control_plane": [h.name for h in self.hosts if h.role == "control-plane"]}
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _sorted(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: mapping[k] for k in sorted(mapping)}


def find_datacenter(env: Environment, name: str) -> tuple[int, Datacenter]:
    for i, site in enumerate(env.sites):
        if isinstance(site, Datacenter) and site.name == name:
            return i, site
    known = [d.name for d in env.datacenters]
    raise SpecError("--datacenter", [SpecIssue(("datacenter",), f"no datacenter {name!r} in environment "
                                               f"{env.name!r} (datacenters: {', '.join(known) or 'none'})")])


def node_labels(dc: Datacenter, rack_name: str, privacy_zone: str, host: Host | ExtraHost) -> dict[str, str]:
    labels = {
        LABEL_REGION: dc.name,
        LABEL_ZONE: rack_name,
        LABEL_DATACENTER: dc.name,
        LABEL_RACK: rack_name,
        LABEL_PRIVACY_ZONE: privacy_zone,
        LABEL_NETWORK_ZONE: dc.network_zone,
    }
    gpu = getattr(host, "gpu", None)
    if gpu:
        labels[LABEL_GPU_TYPE] = gpu.type
        labels[LABEL_GPU_COUNT] = str(gpu.count)
    return dict(sorted(labels.items()))


def node_taints(privacy_zone: str) -> list[str]:
    """pii and restricted racks only take pods that tolerate their zone."""
    if PrivacyTier(privacy_zone).is_sensitive:
        return [f"{TAINT_PRIVACY_ZONE}={privacy_zone}:NoSchedule"]
    return []


def system_reserved(cores: int, memory_gib: float, fraction: float) -> dict[str, str]:
    """kubelet systemReserved: the spec's share of each host kept for the OS and daemons."""
    return {"cpu": f"{max(100, round(cores * 1000 * fraction))}m",
            "memory": f"{max(256, round(memory_gib * 1024 * fraction))}Mi"}


def build_inventory(env: Environment, datacenter: str, overrides: InventoryOverrides | None = None) -> Inventory:
    """The inventory of one datacenter. Raises SpecError (field paths) for bad overrides or labels."""
    site_index, dc = find_datacenter(env, datacenter)
    overrides = overrides or InventoryOverrides()
    ofile = overrides._file
    olines = overrides._lines
    issues: list[SpecIssue] = []

    def problem(path: tuple, message: str) -> None:
        from infra.loader import line_for
        issues.append(SpecIssue(path, message, line_for(olines, path) if olines else None))

    if overrides.datacenter is not None and overrides.datacenter != dc.name:
        problem(("datacenter",), f"the overrides are for datacenter {overrides.datacenter!r}, "
                                 f"not {dc.name!r}: pass the matching file or fix the name")

    rack_names = [r.name for r in dc.racks]
    for rname in overrides.racks:
        if rname not in rack_names:
            problem(("racks", rname), f"unknown rack {rname!r} in datacenter {dc.name!r} "
                                      f"(racks: {', '.join(rack_names)})")

    # spec hosts + added hosts, checking names and addresses across both
    entries: list[tuple[str, str, Host | ExtraHost, tuple]] = []  # (rack, privacy_zone, host, path)
    zones = {r.name: r.privacy_zone.value for r in dc.racks}
    for ri, rack in enumerate(dc.racks):
        for hi, spec_host in enumerate(rack.all_hosts()):
            entries.append((rack.name, rack.privacy_zone.value, spec_host, ("sites", site_index, "racks", ri, "hosts", hi)))
    # every host of the environment, other datacenters included: an added host must clash with none
    spec_names = {h.name: rack.name for d in env.datacenters for rack, h in d.all_hosts()}
    spec_addresses = {str(h.address): h.name for d in env.datacenters for _, h in d.all_hosts()}
    added_names: dict[str, int] = {}
    for i, extra in enumerate(overrides.add_hosts):
        path = ("add_hosts", i)
        if extra.rack not in rack_names:
            problem(path + ("rack",), f"unknown rack {extra.rack!r} for added host {extra.name!r} "
                                      f"(racks of {dc.name}: {', '.join(rack_names)})")
            continue
        if extra.name in spec_names:
            problem(path + ("name",), f"duplicate host {extra.name!r}: the spec already has it "
                                      f"(rack {spec_names[extra.name]}); override it under hosts instead")
            continue
        if extra.name in added_names:
            problem(path + ("name",), f"duplicate host {extra.name!r} (also add_hosts[{added_names[extra.name]}])")
            continue
        added_names[extra.name] = i
        entries.append((extra.rack, zones[extra.rack], extra, path))

    names = [e[2].name for e in entries]
    for hname in overrides.hosts:
        if hname not in names:
            problem(("hosts", hname), f"unknown host {hname!r} in datacenter {dc.name!r}"
                                      + _close(hname, names))

    # connection addresses after overrides must be unique (a clash would bootstrap one box twice);
    # the blame goes to what the overrides file moved or added, never to an untouched spec host
    by_address: dict[str, list[tuple[str, tuple | None]]] = {}
    where: tuple[str | int, ...] | None
    for _, _, host, path in entries:
        ov = overrides.hosts.get(host.name)
        if ov and ov.address:
            address, where = str(ov.address), ("hosts", host.name, "address")
        elif path[0] == "add_hosts":
            address, where = str(host.address), path + ("address",)
        else:
            address, where = str(host.address), None
        by_address.setdefault(address, []).append((host.name, where))
    for address, owners in by_address.items():
        if len(owners) > 1:
            for i, (name, where) in enumerate(owners):
                if where is None:
                    continue
                other = next(n for j, (n, _) in enumerate(owners) if j != i)
                problem(where, f"address {address} of host {name!r} clashes with host {other!r}")
    for i, extra in enumerate(overrides.add_hosts):
        owner = spec_addresses.get(str(extra.address))
        if owner is not None and owner not in names and extra.rack in rack_names:
            problem(("add_hosts", i, "address"), f"address {extra.address} of host {extra.name!r} clashes with "
                                                 f"host {owner!r} of another datacenter")

    if issues:
        raise SpecError(ofile, issues)
    # label values must be valid Kubernetes label values (the spec checks names, not this)
    if len(dc.network_zone) > 63 or not _LABEL_VALUE.match(dc.network_zone):
        raise SpecError("<spec>", [SpecIssue(("sites", site_index, "network_zone"),
                                             f"{dc.network_zone!r} is not a valid Kubernetes label value for "
                                             f"{LABEL_NETWORK_ZONE} (<= 63 characters: letters, digits, '-', '_', '.')")])

    dc_group = group_name(dc.name)
    dc_vars: dict[str, Any] = {
        "hybridml_datacenter": dc.name,
        "hybridml_jurisdiction": dc.jurisdiction,
        "hybridml_country": dc.country,
        "hybridml_network_zone": dc.network_zone,
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    if dc.kubernetes_api:
        dc_vars["kubernetes_node_api_endpoint"] = re.sub(r"^https?://", "", dc.kubernetes_api).rstrip("/")
    dc_vars.update(overrides.vars)

    racks: list[RackInventory] = []
    hosts: list[InventoryHost] = []
    for rack in dc.racks:
        rack_vars = {"hybridml_rack": rack.name, "hybridml_privacy_zone": rack.privacy_zone.value}
        if rack.name in overrides.racks:
            rack_vars.update(overrides.racks[rack.name].vars)
        members = []
        for rack_name, zone, host, _ in entries:
            if rack_name != rack.name:
                continue
            ov = overrides.hosts.get(host.name)
            address = str(ov.address) if ov and ov.address else str(host.address)
            port = (ov.ssh_port if ov and ov.ssh_port else host.ssh_port)
            labels = node_labels(dc, rack.name, zone, host)
            taints = node_taints(zone)
            hvars: dict[str, Any] = {
                "ansible_host": address,
                "ansible_port": port,
                "kubernetes_node_ip": str(host.address),
                "kubernetes_node_labels": labels,
                "kubernetes_node_taints": taints,
                "kubernetes_node_system_reserved": system_reserved(host.cores, host.memory_gib,
                                                                   dc.system_reserved_fraction),
                "node_exporter_listen_address": f"{host.address}:9100",
            }
            if isinstance(host, ExtraHost):
                hvars.update(host.vars)
            if ov:
                hvars.update(ov.vars)
            members.append(host.name)
            hosts.append(InventoryHost(name=host.name, rack=rack.name, address=address, node_ip=str(host.address),
                                       port=port, role=host.role, privacy_zone=zone, labels=labels,
                                       taints=tuple(taints), vars=hvars, cores=host.cores,
                                       memory_gib=host.memory_gib))
        racks.append(RackInventory(name=rack.name, group=group_name(dc.name, "rack", rack.name),
                                   privacy_zone=rack.privacy_zone.value, hosts=tuple(members), vars=rack_vars))
    groups = [dc_group] + [r.group for r in racks]
    if len(set(groups)) != len(groups):
        raise SpecError("<spec>", [SpecIssue(("sites", site_index, "racks"),
                                             f"rack names of {dc.name!r} give clashing Ansible group names: {groups}")])
    return Inventory(datacenter=dc.name, group=dc_group, max_fail_percentage=dc.max_fail_percentage,
                     racks=tuple(racks), hosts=tuple(hosts), vars=dc_vars)


def _close(value: str, options: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(value, options, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
