"""Racks of a datacenter as resources of the Pulumi program.

Each rack is one `RackBootstrap` dynamic resource whose inputs are the rack's inventory fingerprint
(everything in the rendered inventory that a bootstrap of that rack depends on) and the playbook
fingerprint (playbook, roles, ansible.cfg). `pulumi up` then

- creates a rack resource for a new rack: bootstraps its hosts (`--limit` that rack);
- updates one whose fingerprints changed: bootstraps that rack again (the roles are idempotent, so
  only what changed is changed on the hosts);
- leaves the others alone: `diff` reports no change when both fingerprints are equal, so `pulumi up`
  does not even connect to their hosts.

Racks are chained with `depends_on` in spec order, so a rollout is rolling per rack like the
playbook's own batches: a rack that fails (any host failed) stops the racks after it, and the failed
rack is retried by the next `pulumi up` because its resource was not created or updated.
Deleting a rack resource (rack removed from the spec) does nothing to its hosts: decommissioning is
not a bootstrap.

    from datacenter.pulumi_racks import DatacenterBootstrap, DatacenterBootstrapArgs
    DatacenterBootstrap("dc-local", DatacenterBootstrapArgs(inventory=build_inventory(env, "dc-local", overrides)))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

from datacenter.driver import BootstrapError
from datacenter.inventory import Inventory

#: Inputs whose change means "bootstrap this rack again".
FINGERPRINTS = ("inventory_hash", "playbook_hash")


def rack_changes(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """The fingerprint inputs that differ between the stored and the new inputs (pure)."""
    return [key for key in FINGERPRINTS if olds.get(key) != news.get(key)]


def rack_replaces(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """A rack moved to another datacenter or renamed is another rack: replace, never update in place."""
    return [key for key in ("datacenter", "rack") if olds.get(key) is not None and olds.get(key) != news.get(key)]


class RackBootstrapProvider(pulumi.dynamic.ResourceProvider):
    """Runs the bootstrap playbook for one rack. Its state: the fingerprints and the last result."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changes = rack_changes(olds, news)
        replaces = rack_replaces(olds, news)
        return pulumi.dynamic.DiffResult(changes=bool(changes or replaces), replaces=replaces,
                                         stables=["datacenter", "rack"] if not replaces else [],
                                         delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        outs = self._bootstrap(props)
        return pulumi.dynamic.CreateResult(id_=f"{props['datacenter']}/{props['rack']}", outs=outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=self._bootstrap(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # The hosts stay as they are: removing a rack from the spec does not wipe machines.
        return None

    @staticmethod
    def _bootstrap(props: dict[str, Any]) -> dict[str, Any]:
        # Ansible runs in a child process of its own: this provider lives in a gRPC server, whose
        # threads do not mix with forking ansible-playbook from the same process.
        import json
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        rack = props["rack"]
        with tempfile.TemporaryDirectory(prefix="hybridml-rack-") as tmp:
            inventory_file, result_file = Path(tmp) / "inventory.json", Path(tmp) / "result.json"
            inventory_file.write_text(json.dumps(props["inventory"]))
            group = Inventory.from_data(props["inventory"]).rack(rack).group
            cmd = [sys.executable, "-m", "datacenter.driver", str(inventory_file), str(result_file), "--limit", group]
            if props.get("check"):
                cmd.append("--check")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if not result_file.exists():
                raise BootstrapError(f"bootstrap of rack {rack} of {props['datacenter']} could not run: "
                                f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
            result = json.loads(result_file.read_text())
        hosts = {name: {"status": h["status"], "changed": h["changed"], "failed_task": h["failed_task"],
                        "message": h["message"]} for name, h in result["hosts"].items()}
        bad = {name: h for name, h in hosts.items() if h["status"] not in ("ok", "changed")}
        if bad:
            detail = "; ".join(f"{name}: {h['status']}" + (f" at {h['failed_task']!r}: {h['message']}"
                                                           if h["failed_task"] else f" ({h['message']})")
                               for name, h in bad.items())
            raise BootstrapError(f"bootstrap of rack {rack} of {props['datacenter']} failed for {len(bad)}/{len(hosts)} "
                            f"host(s): {detail}" + (f" (Ansible artifacts: {result['artifacts_dir']})"
                                                     if result.get("artifacts_dir") else ""))
        return {**props, "hosts": hosts,
                "changed_hosts": sorted(name for name, h in hosts.items() if h["status"] == "changed"),
                "duration_s": round(result["duration_s"], 1)}


class RackBootstrap(pulumi.dynamic.Resource):
    """One rack, bootstrapped when created or when its fingerprints change."""

    inventory_hash: pulumi.Output[str]
    playbook_hash: pulumi.Output[str]
    hosts: pulumi.Output[dict]
    changed_hosts: pulumi.Output[list]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(RackBootstrapProvider(), name,
                         {**props, "hosts": None, "changed_hosts": None, "duration_s": None}, opts)


@dataclass
class DatacenterBootstrapArgs:
    inventory: Inventory  # rendered from the spec (datacenter.inventory.build_inventory)
    playbook_hash: str | None = None  # default: datacenter.files.playbook_hash()
    check: bool = False  # run the playbooks with --check (a preview that connects to the hosts)


class DatacenterBootstrap(pulumi.ComponentResource):
    """Every rack of one datacenter, one `RackBootstrap` child each, rolled out rack after rack."""

    racks: dict[str, RackBootstrap]

    def __init__(self, name: str, args: DatacenterBootstrapArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:datacenter:DatacenterBootstrap", name, None, opts)
        from datacenter.files import playbook_hash

        plan = rack_plan(args.inventory, args.playbook_hash or playbook_hash(), check=args.check)
        self.racks = {}
        previous: RackBootstrap | None = None
        for rack_name, props in plan:
            child = pulumi.ResourceOptions(parent=self, depends_on=[previous] if previous else None,
                                           additional_secret_outputs=["inventory"])
            # the inventory may hold join tokens and key paths: keep it out of previews and state in clear
            props = {**props, "inventory": pulumi.Output.secret(props["inventory"])}
            previous = RackBootstrap(f"{name}-{rack_name}", props, child)
            self.racks[rack_name] = previous
        self.register_outputs({"racks": {r: res.id for r, res in self.racks.items()}})


def rack_plan(inventory: Inventory, playbook_hash: str, *, check: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(rack, resource inputs) per rack in spec order (pure: what the component turns into resources)."""
    data = inventory.to_data()
    return [(rack.name, {"datacenter": inventory.datacenter, "rack": rack.name,
                         "inventory_hash": inventory.rack_fingerprint(rack.name), "playbook_hash": playbook_hash,
                         "check": check, "inventory": data})
            for rack in inventory.racks]
