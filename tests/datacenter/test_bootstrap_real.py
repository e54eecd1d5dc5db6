"""Real bootstrap of 2 racks x 3 test hosts over SSH (network namespaces on this machine, needs root).

One module-scoped fleet (tools/testhosts/), used in order:
first bootstrap -> hosts checked over SSH -> second run changes nothing -> --check changes nothing
-> one host down: the others finish -> two hosts down: max_fail_percentage stops the later rack
-> teardown leaves nothing behind.
In CI (CI=true) missing prerequisites fail the module; elsewhere they skip it with the reason.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import IN_CI, require
from tests.datacenter import prerequisites

pytestmark = [pytest.mark.root, pytest.mark.slow]

HOSTS = [f"r{r}-h0{h}" for r in (1, 2) for h in (1, 2, 3)]
TIMINGS: dict[str, float] = {}
KERNEL_KEYS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "fs/inotify/max_user_watches",
               "fs/inotify/max_user_instances", "net/ipv4/ip_forward")
KERNEL_BEFORE: dict[str, str] = {}


def kernel_settings() -> dict[str, str]:
    return {key: open(f"/proc/sys/{key}").read().strip() for key in KERNEL_KEYS}


_missing_prerequisite = prerequisites.missing_for_test_hosts


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    reason = _missing_prerequisite()
    require(reason is None, reason or "")
    from tools import testhosts

    state = tmp_path_factory.mktemp("testhosts")
    KERNEL_BEFORE.update(kernel_settings())
    _, hosts = testhosts.hosts_from_spec("local", "dc-local")
    t0 = time.monotonic()
    try:
        # one fleet per machine: wait (up to 10 min) for another test session's fleet to go away
        made = testhosts.up(hosts, datacenter="dc-local", state_dir=state, log=print, owner_pid=os.getpid(),
                            wait_s=600)
    except testhosts.TestHostError as exc:
        testhosts.down(state)
        if IN_CI:
            pytest.fail(f"CI=true but the test hosts could not be created: {exc}", pytrace=False)
        pytest.skip(f"test hosts could not be created: {exc}")
    TIMINGS["hosts up (s)"] = time.monotonic() - t0
    yield made
    testhosts.down(state)


@pytest.fixture(scope="module")
def inventory(fleet, local_env):
    from datacenter.files import load_overrides
    from datacenter.inventory import build_inventory

    return build_inventory(local_env, "dc-local", load_overrides(fleet.overrides_file))


def bootstrap(inventory, label: str, **kwargs):
    from datacenter.driver import run_bootstrap

    t0 = time.monotonic()
    result = run_bootstrap(inventory, connect_timeout=5, **kwargs)
    TIMINGS[label] = time.monotonic() - t0
    if result.artifacts_dir:  # kept by the driver after a failure: expected failures here, drop them
        shutil.rmtree(result.artifacts_dir, ignore_errors=True)
    return result


def statuses(result) -> dict[str, str]:
    return {name: h.status for name, h in result.hosts.items()}


def explain(result) -> str:
    return "\n".join(f"{h.name}: {h.status} failed_task={h.failed_task!r} message={h.message!r} "
                     f"changed={h.changed_tasks}" for h in result.hosts.values()) + \
        f"\nartifacts: {result.artifacts_dir}"


@pytest.fixture(scope="module")
def first_run(inventory):
    return bootstrap(inventory, "first bootstrap, 6 hosts (s)")


def test_first_bootstrap_finishes_every_host_rack_after_rack(first_run):
    assert statuses(first_run) == {h: "changed" for h in HOSTS}, explain(first_run)
    assert first_run.rc == 0
    assert first_run.batches == [HOSTS[:3], HOSTS[3:]]
    r1_done = max(first_run.hosts[h].finished for h in HOSTS[:3])
    r2_start = min(first_run.hosts[h].started for h in HOSTS[3:])
    assert r1_done <= r2_start, "rack r2 started before rack r1 finished: serial per rack is broken"


CHECK_SCRIPT = r"""
set -u
out() { printf '%s=%s\n' "$1" "$2"; }
for p in containerd runc chrony prometheus-node-exporter kubelet kubeadm kmod sudo; do
    out "pkg.$p" "$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null)"
done
out held "$(apt-mark showhold | sort | tr '\n' ' ')"
for s in ssh chrony containerd prometheus-node-exporter; do
    service "$s" status >/dev/null 2>&1; out "svc.$s" "$?"
done
out enabled "$(ls /etc/rc2.d | sed 's/^S[0-9]*//' | sort | tr '\n' ' ')"
out ctr "$(ctr version 2>/dev/null | grep -c Version)"
out kubelet "$(kubelet --version)"
out ip_forward "$(cat /proc/sys/net/ipv4/ip_forward)"
out sysctl_file "$(grep -c -E '^(vm.overcommit_memory = 1|net.ipv4.ip_forward = 1|kernel.panic = 10)$' /etc/sysctl.d/90-hybridml.conf)"
out modules "$(grep -v '^#' /etc/modules-load.d/90-hybridml.conf | tr '\n' ' ')"
out sshd_password "$(sshd -T 2>/dev/null | grep -i '^passwordauthentication')"
out sshd_root "$(sshd -T 2>/dev/null | grep -i '^permitrootlogin')"
out sudoers "$(visudo -cf /etc/sudoers.d/90-hybridml-admins >/dev/null && cat /etc/sudoers.d/90-hybridml-admins | grep -v '^#')"
out admin "$(id -nG hybridml)"
out admin_keys "$(wc -l < /home/hybridml/.ssh/authorized_keys) $(stat -c %a /home/hybridml/.ssh/authorized_keys)"
out chrony_opts "$(grep ^DAEMON_OPTS /etc/default/chrony)"
out chronyd "$(pgrep -c chronyd)"
out kubelet_args "$(cat /etc/default/kubelet | grep -v '^#')"
out join_labels "$(grep -A1 'name: node-labels' /etc/kubernetes/kubeadm-join.yaml | tail -1)"
out join_taint "$(grep -c 'key: "hybridml.io/privacy-zone"' /etc/kubernetes/kubeadm-join.yaml)"
out join_mode "$(stat -c %a /etc/kubernetes/kubeadm-join.yaml)"
out kubelet_patch "$(grep -E 'cgroupDriver|cpu:' /etc/kubernetes/patches/kubeletconfiguration+strategic.yaml | tr -s ' ' | tr '\n' ' ')"
out kube_sources "$(grep ^URIs /etc/apt/sources.list.d/kubernetes.sources)"
out joined "$(test -e /etc/kubernetes/kubelet.conf && echo yes || echo no)"
out containerd_cgroup "$(grep SystemdCgroup /etc/containerd/config.toml | tr -d ' ')"
out stamp "$(python3 -c 'import json;print(json.dumps(json.load(open("/etc/hybridml/bootstrap.json"))))')"
"""


def read_host(fleet, name: str) -> dict[str, str]:
    proc = fleet.ssh(name, CHECK_SCRIPT)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def test_hosts_have_packages_services_files_and_sysctls(fleet, first_run, inventory):
    from tools.testhosts import KUBERNETES_VERSION

    for name in HOSTS:
        facts = read_host(fleet, name)
        host = inventory.host(name)
        where = f"host {name}: {facts}"
        for pkg in ("containerd", "runc", "chrony", "prometheus-node-exporter", "kubelet", "kubeadm", "kmod", "sudo"):
            assert re.match(r"(install|hold) ok installed ", facts[f"pkg.{pkg}"]), where
        assert facts["pkg.kubelet"] == f"hold ok installed {KUBERNETES_VERSION}-1.1", where
        assert facts["held"].split() == ["kubeadm", "kubelet"], where
        for svc in ("ssh", "chrony", "containerd", "prometheus-node-exporter"):
            assert facts[f"svc.{svc}"] == "0", f"{svc} not running on {name}: {facts}"
            assert svc in facts["enabled"].split(), f"{svc} not enabled at boot on {name}: {facts}"
        assert facts["ctr"] == "2", f"containerd does not answer on its socket: {where}"
        assert facts["kubelet"] == f"Kubernetes v{KUBERNETES_VERSION}", where  # the toolchain's real kubelet
        assert facts["ip_forward"] == "1", where  # namespaced sysctl applied live
        assert facts["sysctl_file"] == "3", where  # kernel-wide ones persisted for a real boot
        assert facts["modules"].split() == ["overlay", "br_netfilter"], where
        assert facts["sshd_password"] == "passwordauthentication no", where
        assert facts["sshd_root"] == "permitrootlogin without-password", where
        assert "%hybridml-admins ALL=(ALL:ALL) NOPASSWD: ALL" in facts["sudoers"], where
        assert "hybridml-admins" in facts["admin"].split() and facts["admin_keys"] == "1 600", where
        assert facts["chrony_opts"] == 'DAEMON_OPTS="-F 1 -x"' and int(facts["chronyd"]) >= 1, where
        assert facts["kubelet_args"] == f'KUBELET_EXTRA_ARGS="--node-ip={host.node_ip}"', where
        assert f"topology.kubernetes.io/zone={host.rack}" in facts["join_labels"], where
        assert facts["join_taint"] == ("1" if host.rack == "r2" else "0"), where
        assert facts["join_mode"] == "600", where
        assert "cgroupDriver: cgroupfs" in facts["kubelet_patch"] and 'cpu: "1600m"' in facts["kubelet_patch"], where
        assert facts["kube_sources"] == f"URIs: {fleet.repo_url}/kubernetes/v{KUBERNETES_VERSION.rsplit('.', 1)[0]}/deb/", where
        assert facts["joined"] == "no", where  # simulated: everything but `kubeadm join`
        assert facts["containerd_cgroup"] == "SystemdCgroup=false", where
        stamp = json.loads(facts["stamp"])
        assert stamp["node_labels"] == host.labels and stamp["simulated"] is True, where
        metrics = urllib.request.urlopen(f"http://{host.node_ip}:9100/metrics", timeout=10).read().decode()
        assert re.search(r"^node_exporter_build_info\{", metrics, re.M), f"no node exporter metrics from {name}"


def test_kernel_of_this_machine_was_not_touched(fleet, first_run):
    """Kernel-wide sysctls were persisted on the hosts (base_os_kernel_shared), never written to this kernel."""
    assert kernel_settings() == KERNEL_BEFORE


def test_second_run_changes_nothing(inventory, first_run):
    result = bootstrap(inventory, "second run, 6 hosts (s)")
    assert statuses(result) == {h: "ok" for h in HOSTS}, explain(result)
    assert all(h.changed == 0 for h in result.hosts.values()), explain(result)


def test_check_mode_on_the_bootstrapped_fleet_reports_no_changes(inventory, first_run):
    result = bootstrap(inventory, "--check, 6 hosts (s)", check=True)
    assert statuses(result) == {h: "ok" for h in HOSTS}, explain(result)
    assert all(h.changed == 0 for h in result.hosts.values()), explain(result)


def test_a_failed_host_is_reported_and_the_others_finish(fleet, inventory, first_run):
    from datacenter.driver import CONNECT_TASK, max_fail_exceeded

    assert fleet.stop_sshd("r1-h02"), "no sshd process was stopped"
    # 1 of 3 is 33 %, not above the spec's 34 %: rack r2 must still be bootstrapped
    assert not max_fail_exceeded(1, 3, inventory.max_fail_percentage)
    result = bootstrap(inventory, "one host down (s)")
    assert statuses(result) == {**{h: "ok" for h in HOSTS}, "r1-h02": "failed"}, explain(result)
    failed = result.hosts["r1-h02"]
    assert failed.failed_task == CONNECT_TASK
    assert "10.77.1.12" in failed.message and "refused" in failed.message, failed.message
    assert result.rc != 0 and not result.ok


def test_max_fail_percentage_stops_the_later_rack(fleet, inventory, first_run):
    from datacenter.driver import max_fail_exceeded

    fleet.stop_sshd("r1-h02")  # idempotent: still down from the previous test
    assert fleet.stop_sshd("r1-h01")
    assert max_fail_exceeded(2, 3, inventory.max_fail_percentage)  # 67 % > 34 %
    result = bootstrap(inventory, "two hosts down (s)")
    assert statuses(result) == {"r1-h01": "failed", "r1-h02": "failed", "r1-h03": "aborted",
                                "r2-h01": "not_run", "r2-h02": "not_run", "r2-h03": "not_run"}, explain(result)
    assert all(result.hosts[h].started is None for h in HOSTS[3:]), "a host of rack r2 was touched"
    assert "max_fail_percentage" in result.hosts["r1-h03"].message
    assert result.aborted_after_batch == 0


def test_cli_exits_1_naming_host_and_task(fleet, inventory, first_run):
    import typer
    from typer.testing import CliRunner

    from hybridml.cli.bootstrap import bootstrap as command

    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["bootstrap", "local", "--datacenter", "dc-local",
                                      "--overrides", str(fleet.overrides_file)])
    TIMINGS["cli, two hosts down (s)"] = time.monotonic() - t0
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "failed: r1-h01 (rack r1) at task 'Bootstrap | Wait for the host to answer over SSH'" in text
    assert "failed: r1-h02 (rack r1) at task" in text
    assert "stopped by max_fail_percentage (34%): r1-h03, r2-h01, r2-h02, r2-h03" in text
    for name in ("r1-h01", "r1-h02"):
        fleet.start_sshd(name)


def test_teardown_removes_everything(fleet):
    from tools import testhosts

    removed = testhosts.down(fleet.state_dir)
    assert any(r.startswith("netns hml-") for r in removed)
    assert testhosts.down(fleet.state_dir) == []  # idempotent
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith("hml-")]
    assert subprocess.run(["ip", "link", "show", testhosts.BRIDGE], capture_output=True).returncode != 0
    assert str(fleet.state_dir) not in open("/proc/mounts").read()
    print("\nreal bootstrap timings: " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))
