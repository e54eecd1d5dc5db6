"""Which flows a set of NetworkPolicies lets through, by the Kubernetes semantics (networking.k8s.io/v1). Pure.

Given the NetworkPolicies, the namespaces' labels and the pods (namespace, name, labels, container ports, IP),
`Network.flow(src, dst, port)` says whether traffic from ``src`` to ``dst`` on ``port`` is allowed, and why:

- a flow needs both ends to allow it: the source pod's egress and the destination pod's ingress;
- a pod selected by no policy of a type (Ingress / Egress) is not isolated for that type: everything is allowed;
  one that is selected by any is isolated, and allowed exactly what the union of those policies' rules admits
  (policies are additive, none ever denies);
- ``policyTypes`` missing: Ingress, plus Egress when the policy has an ``egress`` section;
- a rule with no ``from``/``to`` admits every peer, one with no ``ports`` every port; a peer is a
  ``podSelector`` (pods of the policy's namespace), a ``namespaceSelector`` (every pod of those namespaces), both
  (those pods of those namespaces) or an ``ipBlock`` (a CIDR minus its ``except`` ranges);
- a port is a number (with ``endPort``: the range) or a container port NAME, which matches the destination pod's
  container port of that name (number and protocol); the protocol defaults to TCP;
- selectors: ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists, DoesNotExist), ANDed; ``{}`` selects all;
- every namespace carries ``kubernetes.io/metadata.name: <name>`` (the API server sets it).

The port of a flow is the destination POD's port: a policy is enforced on the pod, after a Service has translated
its port to the ``targetPort`` (`service_targets` does that translation). Outside the model, as implementations
differ or the API leaves it open: traffic of host-network pods and from the node to its pods (kubelet probes),
whether an ``ipBlock`` matches pod IPs (here: it matches the pod's IP when one is known), and SCTP specifics.

Malformed input raises `infra.errors.InvalidValue` naming the policy and the field.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.errors import InvalidValue

NS_NAME_LABEL = "kubernetes.io/metadata.name"
INGRESS, EGRESS = "Ingress", "Egress"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


# --------------------------------------------------------------------------- the things flows run between


@dataclass(frozen=True)
class ContainerPort:
    number: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ContainerPort, ...] = ()
    ip: str | None = None

    @property
    def ref(self) -> str:
        return f"pod {self.namespace}/{self.name}"

    @classmethod
    def from_manifest(cls, pod: Mapping[str, Any]) -> Pod:
        """A Pod object as the API returns it (its containers' ports, ``status.podIP``)."""
        meta = pod.get("metadata") or {}
        ports = tuple(ContainerPort(int(p["containerPort"]), str(p.get("name") or ""), str(p.get("protocol") or "TCP"))
                      for c in (pod.get("spec") or {}).get("containers") or [] for p in c.get("ports") or [])
        return cls(str(meta.get("namespace") or ""), str(meta.get("name") or ""), dict(meta.get("labels") or {}), ports,
                   (pod.get("status") or {}).get("podIP") or None)


@dataclass(frozen=True)
class External:
    """A peer outside the cluster (a client on the Internet, another site), known by its IP."""

    ip: str

    @property
    def ref(self) -> str:
        return f"{self.ip} (outside the cluster)"


Peer = Pod | External


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class Selector:
    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for key, op, values in self.expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for key, op, values in self.expressions:
            parts.append(f"{key} {op} ({', '.join(values)})" if values else f"{op}({key})")
        return ", ".join(parts) or "{} (every pod)"


def parse_selector(raw: Any, where: str) -> Selector:
    """A metav1.LabelSelector; InvalidValue naming ``where`` when malformed."""
    if raw is None:
        return Selector()
    if not isinstance(raw, Mapping):
        raise InvalidValue(f"{where}: a label selector must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise InvalidValue(f"{where}: unknown field(s) {', '.join(sorted(unknown))} (matchLabels, matchExpressions)")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise InvalidValue(f"{where}.matchLabels: must be a mapping of label to value")
    exprs = []
    for i, e in enumerate(raw.get("matchExpressions") or []):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(e, Mapping) or not e.get("key"):
            raise InvalidValue(f"{at}: needs a key")
        op, values = e.get("operator"), e.get("values") or []
        if op not in OPERATORS:
            raise InvalidValue(f"{at}: operator {op!r} is not one of {', '.join(OPERATORS)}")
        if op in ("In", "NotIn") and not values:
            raise InvalidValue(f"{at}: operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            raise InvalidValue(f"{at}: operator {op} takes no values")
        exprs.append((str(e["key"]), str(op), tuple(str(v) for v in values)))
    return Selector(tuple(sorted((str(k), str(v)) for k, v in labels.items())), tuple(exprs))


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class PeerRule:
    pod: Selector | None = None            # None: not given
    namespace: Selector | None = None      # None: not given (the policy's own namespace)
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    excepts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def describe(self) -> str:
        if self.cidr is not None:
            return f"ipBlock {self.cidr}" + (f" except {', '.join(map(str, self.excepts))}" if self.excepts else "")
        ns = f"namespaces [{self.namespace}]" if self.namespace is not None else "this namespace"
        return f"pods [{self.pod}] of {ns}" if self.pod is not None else f"every pod of {ns}"


@dataclass(frozen=True)
class PortRule:
    port: int | str | None                 # None: every port of the protocol
    protocol: str = "TCP"
    end_port: int | None = None

    def describe(self) -> str:
        if self.port is None:
            return f"any/{self.protocol}"
        return f"{self.port}{f'-{self.end_port}' if self.end_port else ''}/{self.protocol}"


@dataclass(frozen=True)
class Rule:
    peers: tuple[PeerRule, ...]            # empty: every peer
    ports: tuple[PortRule, ...]            # empty: every port


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pods: Selector
    types: frozenset[str]
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _network(text: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError as exc:
        raise InvalidValue(f"{where}: {text!r} is not a CIDR ({exc})") from None


def _peer(raw: Any, where: str) -> PeerRule:
    if not isinstance(raw, Mapping):
        raise InvalidValue(f"{where}: a peer must be a mapping (podSelector, namespaceSelector or ipBlock)")
    unknown = set(raw) - {"podSelector", "namespaceSelector", "ipBlock"}
    if unknown:
        raise InvalidValue(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if "ipBlock" in raw:
        if "podSelector" in raw or "namespaceSelector" in raw:
            raise InvalidValue(f"{where}: ipBlock cannot be combined with podSelector or namespaceSelector")
        block = raw["ipBlock"] or {}
        if not block.get("cidr"):
            raise InvalidValue(f"{where}.ipBlock: needs a cidr")
        cidr = _network(block["cidr"], f"{where}.ipBlock.cidr")
        excepts = tuple(_network(e, f"{where}.ipBlock.except[{i}]") for i, e in enumerate(block.get("except") or []))
        for i, e in enumerate(excepts):
            if e.version != cidr.version or not e.subnet_of(cidr):   # type: ignore[arg-type]
                raise InvalidValue(f"{where}.ipBlock.except[{i}]: {e} is not inside the cidr {cidr}")
        return PeerRule(cidr=cidr, excepts=excepts)
    if "podSelector" not in raw and "namespaceSelector" not in raw:
        raise InvalidValue(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    return PeerRule(pod=parse_selector(raw["podSelector"] or {}, f"{where}.podSelector") if "podSelector" in raw else None,
                    namespace=(parse_selector(raw["namespaceSelector"] or {}, f"{where}.namespaceSelector")
                               if "namespaceSelector" in raw else None))


def _port(raw: Any, where: str) -> PortRule:
    if not isinstance(raw, Mapping):
        raise InvalidValue(f"{where}: a port must be a mapping (protocol, port, endPort)")
    protocol = str(raw.get("protocol") or "TCP").upper()
    if protocol not in ("TCP", "UDP", "SCTP"):
        raise InvalidValue(f"{where}.protocol: {raw.get('protocol')!r} is not TCP, UDP or SCTP")
    port = raw.get("port")
    end = raw.get("endPort")
    if isinstance(port, bool) or (port is not None and not isinstance(port, int | str)):
        raise InvalidValue(f"{where}.port: {port!r} is neither a number nor a port name")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise InvalidValue(f"{where}.port: {port} is outside 1-65535")
    if end is not None:
        if not isinstance(port, int):
            raise InvalidValue(f"{where}.endPort: needs a numeric port")
        if not isinstance(end, int) or isinstance(end, bool) or not port <= end <= 65535:
            raise InvalidValue(f"{where}.endPort: {end!r} must be a number from port ({port}) to 65535")
    return PortRule(port, protocol, end)


def _rules(raw: Any, key: str, where: str) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidValue(f"{where}: must be a list of rules")
    peer_key = "from" if key == "ingress" else "to"
    out = []
    for i, r in enumerate(raw):
        at = f"{where}[{i}]"
        if r is None:
            r = {}
        if not isinstance(r, Mapping):
            raise InvalidValue(f"{at}: a rule must be a mapping ({peer_key}, ports)")
        unknown = set(r) - {peer_key, "ports"}
        if unknown:
            raise InvalidValue(f"{at}: unknown field(s) {', '.join(sorted(unknown))} ({peer_key}, ports)")
        peers = tuple(_peer(p, f"{at}.{peer_key}[{j}]") for j, p in enumerate(r.get(peer_key) or []))
        ports = tuple(_port(p, f"{at}.ports[{j}]") for j, p in enumerate(r.get("ports") or []))
        out.append(Rule(peers, ports))
    return tuple(out)


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    """A NetworkPolicy manifest (or an item of a list, which has no ``kind``); InvalidValue naming it and the field
    when malformed."""
    meta = obj.get("metadata") or {}
    name, ns = meta.get("name"), meta.get("namespace")
    if obj.get("kind", "NetworkPolicy") != "NetworkPolicy":
        raise InvalidValue(f"{obj.get('kind')} {ns}/{name}: not a NetworkPolicy")
    if not name or not ns:
        raise InvalidValue(f"NetworkPolicy {ns or '?'}/{name or '?'}: metadata.name and metadata.namespace are required")
    where = f"NetworkPolicy {ns}/{name}: spec"
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidValue(f"{where}: missing")
    types = spec.get("policyTypes")
    if types is None:
        types = [INGRESS] + ([EGRESS] if "egress" in spec else [])
    bad = [t for t in types if t not in (INGRESS, EGRESS)]
    if bad:
        raise InvalidValue(f"{where}.policyTypes: {', '.join(map(str, bad))} (Ingress, Egress)")
    return Policy(str(ns), str(name), parse_selector(spec.get("podSelector") or {}, f"{where}.podSelector"),
                  frozenset(types), _rules(spec.get("ingress"), "ingress", f"{where}.ingress"),
                  _rules(spec.get("egress"), "egress", f"{where}.egress"))


# --------------------------------------------------------------------------- verdicts


@dataclass
class Side:
    """One end's say on a flow: ``direction`` Egress (the source pod's) or Ingress (the destination pod's)."""

    direction: str
    pod: Pod
    isolating: list[str]            # the policies of this direction that select the pod
    admitted_by: list[str]          # "<ns>/<name> <direction>[i]" of the rules that admit the flow
    near_misses: list[str] = field(default_factory=list)   # policies whose rules would admit it but select other pods

    @property
    def allowed(self) -> bool:
        return not self.isolating or bool(self.admitted_by)

    def explain(self, other: str, port: str) -> str:
        verb = "to" if self.direction == EGRESS else "from"
        if not self.isolating:
            return f"{self.direction.lower()} of {self.pod.ref}: no {self.direction} policy selects it (not isolated)"
        if self.admitted_by:
            return f"{self.direction.lower()} of {self.pod.ref}: admitted by {', '.join(self.admitted_by)}"
        text = (f"{self.direction.lower()} of {self.pod.ref} is isolated by {', '.join(self.isolating)} and none of "
                f"their {self.direction.lower()} rules admits {verb} {other} on {port}")
        for miss in self.near_misses:
            text += f"; {miss}"
        return text


@dataclass
class Verdict:
    src: Peer
    dst: Peer
    port: int
    protocol: str
    egress: Side | None           # None: the source is outside the cluster
    ingress: Side | None          # None: the destination is outside the cluster

    @property
    def allowed(self) -> bool:
        return all(s.allowed for s in (self.egress, self.ingress) if s is not None)

    @property
    def flow(self) -> str:
        return f"{self.src.ref} -> {self.dst.ref} port {self.port}/{self.protocol}"

    def explain(self) -> str:
        port = f"{self.port}/{self.protocol}"
        parts = []
        if self.egress is not None:
            parts.append(self.egress.explain(self.dst.ref, port))
        if self.ingress is not None:
            parts.append(self.ingress.explain(self.src.ref, port))
        return f"{'allowed' if self.allowed else 'DENIED'}: {self.flow}: " + "; ".join(parts or ["no pod at either end"])


class Network:
    """NetworkPolicies over namespaces (name -> labels) and the pods that flows run between."""

    def __init__(self, policies: Iterable[Mapping[str, Any]], namespaces: Mapping[str, Mapping[str, str]] | None = None):
        self.policies = [parse_policy(p) for p in policies]
        self._ns_labels = {n: {**dict(labels), NS_NAME_LABEL: n} for n, labels in (namespaces or {}).items()}

    def namespace_labels(self, name: str) -> dict[str, str]:
        return self._ns_labels.get(name) or {NS_NAME_LABEL: name}

    def selecting(self, pod: Pod, direction: str) -> list[Policy]:
        """The policies of ``direction`` that select ``pod`` (it is isolated for that direction when any does)."""
        return [p for p in self.policies if p.namespace == pod.namespace and direction in p.types
                and p.pods.matches(pod.labels)]

    def _peer_matches(self, peer: PeerRule, policy_ns: str, other: Peer) -> bool:
        if peer.cidr is not None:
            ip = other.ip
            if not ip:
                return False
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                raise InvalidValue(f"{other.ref}: {ip!r} is not an IP address") from None
            return (addr.version == peer.cidr.version and addr in peer.cidr
                    and not any(addr in e for e in peer.excepts))
        if not isinstance(other, Pod):
            return False
        if peer.namespace is None:
            in_ns = other.namespace == policy_ns
        else:
            in_ns = peer.namespace.matches(self.namespace_labels(other.namespace))
        return in_ns and (peer.pod is None or peer.pod.matches(other.labels))

    @staticmethod
    def _port_matches(rule: PortRule, port: int, protocol: str, dst: Peer) -> bool:
        if rule.protocol != protocol:
            return False
        if rule.port is None:
            return True
        if isinstance(rule.port, str):   # a named port: the destination pod's container port of that name
            return isinstance(dst, Pod) and any(cp.name == rule.port and cp.number == port and cp.protocol == protocol
                                                for cp in dst.ports)
        return rule.port <= port <= (rule.end_port or rule.port)

    def _admits(self, policy: Policy, direction: str, other: Peer, port: int, protocol: str, dst: Peer) -> list[str]:
        rules = policy.ingress if direction == INGRESS else policy.egress
        key = "ingress" if direction == INGRESS else "egress"
        out = []
        for i, rule in enumerate(rules):
            peer_ok = not rule.peers or any(self._peer_matches(p, policy.namespace, other) for p in rule.peers)
            port_ok = not rule.ports or any(self._port_matches(r, port, protocol, dst) for r in rule.ports)
            if peer_ok and port_ok:
                out.append(f"{policy.ref} {key}[{i}]")
        return out

    def _side(self, pod: Pod, direction: str, other: Peer, port: int, protocol: str, dst: Peer) -> Side:
        isolating = self.selecting(pod, direction)
        admitted = [a for p in isolating for a in self._admits(p, direction, other, port, protocol, dst)]
        misses = []
        if isolating and not admitted:
            chosen = {p.ref for p in isolating}
            for p in self.policies:
                if p.namespace == pod.namespace and direction in p.types and p.ref not in chosen:
                    if self._admits(p, direction, other, port, protocol, dst):
                        misses.append(f"{p.ref} would admit it but its podSelector [{p.pods}] does not select "
                                      f"{pod.ref} (labels {dict(sorted(pod.labels.items()))})")
        return Side(direction, pod, [p.ref for p in isolating], admitted, misses)

    def flow(self, src: Peer, dst: Peer, port: int | str, protocol: str = "TCP") -> Verdict:
        """Whether ``src`` may open a connection to ``dst`` on ``port`` (a number, or a name of one of ``dst``'s
        container ports) over ``protocol``."""
        protocol = protocol.upper()
        if isinstance(port, str) and not port.isdigit():
            if not isinstance(dst, Pod):
                raise InvalidValue(f"port {port!r}: a port name needs a destination pod, not {dst.ref}")
            named = [cp.number for cp in dst.ports if cp.name == port and cp.protocol == protocol]
            if not named:
                have = ", ".join(f"{cp.name or '-'}={cp.number}/{cp.protocol}" for cp in dst.ports) or "none"
                raise InvalidValue(f"port {port!r}: {dst.ref} has no {protocol} container port of that name (it has {have})")
            number = named[0]
        else:
            number = int(port)
        egress = self._side(src, EGRESS, dst, number, protocol, dst) if isinstance(src, Pod) else None
        ingress = self._side(dst, INGRESS, src, number, protocol, dst) if isinstance(dst, Pod) else None
        return Verdict(src, dst, number, protocol, egress, ingress)


def service_targets(service: Mapping[str, Any], pods: Iterable[Pod], port: int | str) -> list[tuple[Pod, int]]:
    """The (pod, pod port) pairs a Service sends ``port`` (its port number or name) to: the pods its selector selects
    in its namespace, with its ``targetPort`` (a number, or a container port name resolved per pod)."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    where = f"Service {meta.get('namespace')}/{meta.get('name')}"
    found = [p for p in spec.get("ports") or [] if p.get("port") == port or (p.get("name") and p.get("name") == port)]
    if not found:
        raise InvalidValue(f"{where}: no port {port!r} (it has {', '.join(str(p.get('port')) for p in spec.get('ports') or [])})")
    sp = found[0]
    target, protocol = sp.get("targetPort", sp["port"]), str(sp.get("protocol") or "TCP")
    selector = spec.get("selector") or {}
    out = []
    for pod in pods:
        if pod.namespace != meta.get("namespace") or not selector or any(pod.labels.get(k) != v for k, v in selector.items()):
            continue
        if isinstance(target, str) and not target.isdigit():
            numbers = [cp.number for cp in pod.ports if cp.name == target and cp.protocol == protocol]
            if numbers:
                out.append((pod, numbers[0]))
        else:
            out.append((pod, int(target)))
    return out


__all__ = ["EGRESS", "INGRESS", "NS_NAME_LABEL", "ContainerPort", "External", "Network", "Peer", "Pod", "Policy", "Selector",
           "Side", "Verdict", "parse_policy", "parse_selector", "service_targets"]
