"""Datacenter bootstrap: the spec's racks of hosts made into Kubernetes nodes with Ansible.

- `datacenter.inventory`: spec (+ an overrides file) -> Ansible inventory. Pure.
- `datacenter.driver`: runs playbooks/bootstrap.yml with ansible-runner, per-host results, live events.
- `datacenter.kwok`: registers simulated hosts as kwok nodes of a cluster.
- `datacenter.pulumi_racks`: racks as Pulumi resources (bootstrapped when new or changed).

The test hosts the bootstrap is tested against live in tools/testhosts (not part of the package).
See datacenter/README.md.
"""
