"""Pod Security Standards, `restricted` profile: every control of the official standard, one rule each.

Follows kubernetes.io/docs/concepts/security/pod-security-standards (baseline + restricted
controls, latest version). Verdicts are checked against the real PodSecurity admission of a
local kube-apiserver in tests/e2e. A documented exemption: objects labelled
`hybridml.io/pss-exemption: <reason>` whose namespace is a known exempt namespace
(the NVIDIA GPU stack needs host access) are skipped.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from policies.rules.base import Check, Context, Enforcement, ResourceView, Rule, Severity
from policies.rules.podspec import containers, pod_specs

EXEMPT_NAMESPACES = {"gpu-operator", "kube-system", "karpenter"}
EXEMPTION_LABEL = "hybridml.io/pss-exemption"

BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
# The safe sysctl set of the Pod Security Standards, by the Kubernetes minor that added each group
# (k8s.io/pod-security-admission policy/check_sysctls.go, v0.37.2): a cluster admits the union up to its version.
SAFE_SYSCTLS_SINCE: dict[tuple[int, int], frozenset[str]] = {
    (1, 0): frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                       "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"}),
    (1, 27): frozenset({"net.ipv4.ip_local_reserved_ports"}),
    (1, 29): frozenset({"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                        "net.ipv4.tcp_keepalive_probes"}),
    (1, 32): frozenset({"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}),
    (1, 37): frozenset({"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}),
}


def safe_sysctls(version: tuple[int, int]) -> frozenset[str]:
    """The sysctls the `restricted` (and `baseline`) profile of Kubernetes `version` allows."""
    return frozenset().union(*(names for since, names in SAFE_SYSCTLS_SINCE.items() if since <= version))


SAFE_SYSCTLS = safe_sysctls(max(SAFE_SYSCTLS_SINCE))   # the latest level
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _exempt(r: ResourceView) -> bool:
    return bool(r.labels.get(EXEMPTION_LABEL)) and r.metadata.get("namespace") in EXEMPT_NAMESPACES


def _pods(r: ResourceView) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    if not r.is_kubernetes or _exempt(r):
        return []
    return list(pod_specs(r.kind, r.props))


def _sc(obj: dict[str, Any]) -> dict[str, Any]:
    sc: dict[str, Any] = obj.get("securityContext") or {}
    return sc


def _linux(spec: dict[str, Any]) -> bool:
    """Seccomp, capabilities and privilege escalation are Linux-only controls (exempt: spec.os.name=windows)."""
    return ((spec.get("os") or {}).get("name")) != "windows"


def host_namespaces(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                yield f"{where}.{key} is true"


def privileged(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        for cw, c in containers(spec):
            if _sc(c).get("privileged"):
                yield f"{where}.{cw} is privileged"


def capabilities(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        if not _linux(spec):
            continue
        for cw, c in containers(spec):
            caps = _sc(c).get("capabilities") or {}
            # Capability names are case-sensitive: `drop: [all]` does not drop ALL.
            drop = {str(x) for x in caps.get("drop") or []}
            add = {str(x) for x in caps.get("add") or []}
            if "ALL" not in drop:
                yield f"{where}.{cw} does not drop ALL capabilities"
            extra = sorted(add - {"NET_BIND_SERVICE"})
            if extra:
                yield f"{where}.{cw} adds capabilities {', '.join(extra)}"


def host_path_and_volume_types(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        for vol in spec.get("volumes") or []:
            kinds = [k for k in vol if k != "name"]
            for k in kinds:
                if k not in RESTRICTED_VOLUMES:
                    yield f"{where} volume {vol.get('name')!r} of type {k} is not allowed (restricted allows " \
                          f"{', '.join(sorted(RESTRICTED_VOLUMES))})"


def host_ports(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        for cw, c in containers(spec):
            for port in c.get("ports") or []:
                if port.get("hostPort") not in (None, 0):
                    yield f"{where}.{cw} uses hostPort {port.get('hostPort')}"


def apparmor_selinux_procmount(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, meta, spec in _pods(r):
        for key, value in (meta.get("annotations") or {}).items():
            if key.startswith("container.apparmor.security.beta.kubernetes.io/") and \
                    value not in ("runtime/default",) and not str(value).startswith("localhost/"):
                yield f"{where} AppArmor profile {value!r}"
        objs = [("pod", spec)] + list(containers(spec))
        for cw, obj in objs:
            sc = _sc(obj)
            app = (sc.get("appArmorProfile") or {}).get("type")
            if app not in (None, "RuntimeDefault", "Localhost"):
                yield f"{where}.{cw} appArmorProfile.type {app}"
            se = sc.get("seLinuxOptions") or {}
            if se.get("type", "") not in SELINUX_TYPES:
                yield f"{where}.{cw} seLinuxOptions.type {se.get('type')}"
            if se.get("user") or se.get("role"):
                yield f"{where}.{cw} sets seLinuxOptions user/role"
            if cw != "pod" and sc.get("procMount") not in (None, "Default"):
                yield f"{where}.{cw} procMount {sc.get('procMount')}"
            if cw != "pod" and (sc.get("windowsOptions") or {}).get("hostProcess"):
                yield f"{where}.{cw} is a Windows hostProcess container"
        if (_sc(spec).get("windowsOptions") or {}).get("hostProcess"):
            yield f"{where} is a Windows hostProcess pod"


def sysctls(r: ResourceView, ctx: Context) -> Iterable[str]:
    facts = ctx.sites.get(r.cluster) if r.cluster else None
    version = (facts.kubernetes_version if facts else None) or ctx.pss_version
    allowed = safe_sysctls(version)
    for where, _, spec in _pods(r):
        for s in _sc(spec).get("sysctls") or []:
            if s.get("name") not in allowed:
                yield f"{where} sets sysctl {s.get('name')}, not safe on Kubernetes {version[0]}.{version[1]}"


def privilege_escalation(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        if not _linux(spec):
            continue
        for cw, c in containers(spec):
            if _sc(c).get("allowPrivilegeEscalation") is not False:
                yield f"{where}.{cw} does not set allowPrivilegeEscalation: false"


def run_as_non_root(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        pod_level = _sc(spec).get("runAsNonRoot")
        if pod_level is False:
            yield f"{where} sets runAsNonRoot: false"
        for cw, c in containers(spec):
            value = _sc(c).get("runAsNonRoot")
            if value is False or (value is None and pod_level is not True):
                yield f"{where}.{cw} may run as root (set runAsNonRoot: true)"


def run_as_user(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        if _sc(spec).get("runAsUser") == 0:
            yield f"{where} runs as UID 0"
        for cw, c in containers(spec):
            if _sc(c).get("runAsUser") == 0:
                yield f"{where}.{cw} runs as UID 0"


def seccomp(r: ResourceView, ctx: Context) -> Iterable[str]:
    ok = ("RuntimeDefault", "Localhost")
    for where, _, spec in _pods(r):
        if not _linux(spec):
            continue
        pod_type = (_sc(spec).get("seccompProfile") or {}).get("type")
        if pod_type is not None and pod_type not in ok:
            yield f"{where} seccompProfile {pod_type}"
        for cw, c in containers(spec):
            t = (_sc(c).get("seccompProfile") or {}).get("type")
            if t is not None and t not in ok:
                yield f"{where}.{cw} seccompProfile {t}"
            elif t is None and pod_type is None:
                yield f"{where}.{cw} has no seccompProfile (RuntimeDefault or Localhost)"


def probe_host(r: ResourceView, ctx: Context) -> Iterable[str]:
    """Host Probes / Lifecycle Hooks (baseline, 1.34+): probes and hooks may not target another host."""
    for where, _, spec in _pods(r):
        for cw, c in containers(spec):
            handlers = [(p, c.get(p)) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
            lifecycle = c.get("lifecycle") or {}
            handlers += [(f"lifecycle.{h}", lifecycle.get(h)) for h in ("postStart", "preStop")]
            for name, handler in handlers:
                for kind in ("httpGet", "tcpSocket"):
                    host = ((handler or {}).get(kind) or {}).get("host")
                    if host not in (None, ""):
                        yield f"{where}.{cw} {name}.{kind}.host is {host!r}"


def _rule(name: str, description: str, check: Check, fix: str, severity: Severity = Severity.high) -> Rule:
    return Rule(name=name, description=description, severity=severity, enforcement=Enforcement.mandatory,
                fix=fix, check=check, group="pod-security")


RULES = [
    _rule("pss-host-namespaces", "Pods must not share the host's network, PID or IPC namespace.", host_namespaces,
          "remove hostNetwork/hostPID/hostIPC", Severity.critical),
    _rule("pss-privileged", "Containers must not run privileged.", privileged,
          "remove securityContext.privileged", Severity.critical),
    _rule("pss-capabilities", "Containers drop ALL capabilities and add at most NET_BIND_SERVICE.", capabilities,
          "set securityContext.capabilities: {drop: [ALL]}"),
    _rule("pss-volume-types", "Only restricted volume types (no hostPath).", host_path_and_volume_types,
          "use emptyDir, PVC, configMap, secret or projected volumes"),
    _rule("pss-host-ports", "Containers must not bind host ports.", host_ports,
          "remove ports[].hostPort; expose through a Service"),
    _rule("pss-apparmor-selinux-procmount", "No custom AppArmor/SELinux types, default /proc mount, no hostProcess.",
          apparmor_selinux_procmount, "remove the custom AppArmor/SELinux/procMount settings", Severity.medium),
    _rule("pss-probe-host", "Probes and lifecycle hooks do not target another host.", probe_host,
          "remove httpGet.host / tcpSocket.host from probes and lifecycle hooks", Severity.medium),
    _rule("pss-sysctls", "Only the safe sysctl set.", sysctls, "remove unsafe securityContext.sysctls", Severity.medium),
    _rule("pss-privilege-escalation", "Containers set allowPrivilegeEscalation: false.", privilege_escalation,
          "set securityContext.allowPrivilegeEscalation: false on every container"),
    _rule("pss-run-as-non-root", "Pods run as non-root (runAsNonRoot: true).", run_as_non_root,
          "set securityContext.runAsNonRoot: true on the pod"),
    _rule("pss-run-as-user", "No container runs as UID 0.", run_as_user, "set runAsUser to a non-zero UID"),
    _rule("pss-seccomp", "Seccomp profile RuntimeDefault or Localhost.", seccomp,
          "set securityContext.seccompProfile.type: RuntimeDefault on the pod"),
]
