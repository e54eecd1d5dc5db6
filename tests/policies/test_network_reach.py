"""policies/rules/network_reach.py: NetworkPolicy evaluation by the Kubernetes semantics (isolation per direction,
additive policies, peers, ports, selectors) and clear errors on malformed policies."""
from __future__ import annotations

import pytest

from infra.errors import InvalidValue
from policies.rules.network_reach import (
    ContainerPort,
    External,
    Network,
    Pod,
    parse_policy,
    parse_selector,
    service_targets,
)

WEB = Pod("shop", "web-0", {"app": "web", "tier": "front"}, (ContainerPort(8080, "http"), ContainerPort(9090, "metrics")),
          "10.244.0.5")
DB = Pod("shop", "db-0", {"app": "db"}, (ContainerPort(5432, "pg"), ContainerPort(53, "dns", "UDP")), "10.244.0.6")
PROM = Pod("monitoring", "prom-0", {"app": "prometheus"}, (), "10.244.1.7")
OTHER = Pod("other", "x-0", {"app": "web"}, (), "10.244.2.8")
CLIENT = External("203.0.113.10")


def np(name: str, spec: dict, ns: str = "shop") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


DENY_ALL = np("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
NAMESPACES = {"shop": {"team": "shop"}, "monitoring": {"team": "sre", "scrape": "yes"}, "other": {}}


def net(*policies: dict) -> Network:
    return Network(policies, NAMESPACES)


# --------------------------------------------------------------------------- isolation and additivity


def test_no_policy_leaves_every_flow_open():
    v = net().flow(OTHER, WEB, 8080)
    assert v.allowed
    assert "no Egress policy selects it" in v.explain() and "no Ingress policy selects it" in v.explain()


def test_default_deny_isolates_both_directions_and_names_the_policy():
    v = net(DENY_ALL).flow(WEB, DB, 5432)
    assert not v.allowed
    assert not v.egress.allowed and not v.ingress.allowed
    assert v.egress.isolating == ["shop/default-deny"] and v.ingress.isolating == ["shop/default-deny"]
    assert "DENIED: pod shop/web-0 -> pod shop/db-0 port 5432/TCP" in v.explain()
    assert "ingress of pod shop/db-0 is isolated by shop/default-deny" in v.explain()


def test_a_flow_needs_the_source_egress_and_the_destination_ingress():
    ingress_only = np("db-in", {"podSelector": {"matchLabels": {"app": "db"}},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})
    v = net(DENY_ALL, ingress_only).flow(WEB, DB, 5432)
    assert v.ingress.allowed and v.ingress.admitted_by == ["shop/db-in ingress[0]"]
    assert not v.egress.allowed and not v.allowed          # web's egress is still denied by default-deny
    egress = np("web-out", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]})
    assert net(DENY_ALL, ingress_only, egress).flow(WEB, DB, 5432).allowed


def test_policies_are_additive_and_never_deny():
    narrow = np("db-from-web", {"podSelector": {"matchLabels": {"app": "db"}},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                             "ports": [{"port": 5432}]}]})
    scrape = np("db-scrape", {"podSelector": {"matchLabels": {"app": "db"}},
                              "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "sre"}}}]}]})
    n = net(narrow, scrape)
    assert n.flow(PROM, DB, 5432).allowed                 # the second policy admits what the first does not
    assert n.flow(WEB, DB, 5432).allowed
    assert not n.flow(OTHER, DB, 5432).allowed
    assert n.flow(WEB, DB, 5432).ingress.admitted_by == ["shop/db-from-web ingress[0]"]


def test_policy_types_default_to_ingress_plus_egress_when_it_has_egress_rules():
    only_ingress = np("in", {"podSelector": {}, "ingress": []})
    assert parse_policy(only_ingress).types == {"Ingress"}
    n = net(only_ingress)
    assert not n.flow(WEB, DB, 5432).allowed              # ingress isolated, no rule: nothing comes in
    assert n.flow(WEB, External("198.51.100.1"), 443).allowed   # egress is not isolated
    with_egress = np("both", {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})
    assert parse_policy(with_egress).types == {"Ingress", "Egress"}
    assert not net(with_egress).flow(WEB, External("198.51.100.1"), 443).allowed
    assert net(with_egress).flow(WEB, External("198.51.100.1"), 53, "udp").egress.allowed


def test_an_empty_rule_admits_everything_and_a_rule_without_peers_every_peer():
    everything = np("all", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]})
    assert net(DENY_ALL, everything).flow(CLIENT, DB, 1).ingress.allowed
    port_only = np("pg", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 5432}]}]})
    n = net(port_only)
    assert n.flow(CLIENT, DB, 5432).allowed and n.flow(OTHER, DB, 5432).allowed
    assert not n.flow(OTHER, DB, 5433).allowed


def test_policies_select_only_pods_of_their_own_namespace():
    deny_other = np("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}, ns="other")
    assert net(deny_other).flow(WEB, DB, 5432).allowed
    assert not net(deny_other).flow(WEB, OTHER, 80).allowed


# --------------------------------------------------------------------------- peers


def _ingress_to_db(*peers: dict) -> Network:
    return net(np("p", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": list(peers)}]}))


def test_a_pod_selector_alone_means_pods_of_the_policy_namespace():
    n = _ingress_to_db({"podSelector": {"matchLabels": {"app": "web"}}})
    assert n.flow(WEB, DB, 5432).allowed
    assert not n.flow(OTHER, DB, 5432).allowed            # same labels, other namespace
    assert not n.flow(CLIENT, DB, 5432).allowed


def test_a_namespace_selector_alone_means_every_pod_there_and_both_together_mean_and():
    ns_only = _ingress_to_db({"namespaceSelector": {"matchLabels": {"team": "sre"}}})
    assert ns_only.flow(PROM, DB, 5432).allowed and not ns_only.flow(WEB, DB, 5432).allowed
    both = _ingress_to_db({"namespaceSelector": {"matchLabels": {"team": "sre"}},
                           "podSelector": {"matchLabels": {"app": "web"}}})
    assert not both.flow(PROM, DB, 5432).allowed          # right namespace, wrong pod
    two_peers = _ingress_to_db({"namespaceSelector": {"matchLabels": {"team": "sre"}}},
                               {"podSelector": {"matchLabels": {"app": "web"}}})
    assert two_peers.flow(PROM, DB, 5432).allowed and two_peers.flow(WEB, DB, 5432).allowed   # peers are ORed


def test_every_namespace_carries_its_name_label():
    by_name = _ingress_to_db({"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["other", "monitoring"]}]}})
    assert by_name.flow(OTHER, DB, 5432).allowed and by_name.flow(PROM, DB, 5432).allowed
    assert not by_name.flow(WEB, DB, 5432).allowed
    unknown_ns = Pod("elsewhere", "p", {}, (), None)      # a namespace not listed still has its name label
    n = _ingress_to_db({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}})
    assert n.flow(unknown_ns, DB, 5432).allowed


def test_ip_blocks_match_external_addresses_and_pod_ips_minus_their_excepts():
    n = _ingress_to_db({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["203.0.113.0/24"]}})
    assert n.flow(External("198.51.100.9"), DB, 5432).allowed
    assert not n.flow(CLIENT, DB, 5432).allowed           # in the except range
    assert n.flow(WEB, DB, 5432).allowed                  # the pod's IP is in 0.0.0.0/0
    assert not n.flow(Pod("shop", "no-ip", {}, (), None), DB, 5432).allowed
    assert not n.flow(External("2001:db8::1"), DB, 5432).allowed   # IPv6 is not in an IPv4 block
    v6 = _ingress_to_db({"ipBlock": {"cidr": "2001:db8::/32"}})
    assert v6.flow(External("2001:db8::1"), DB, 5432).allowed


def test_egress_peers_are_matched_against_the_destination():
    out = np("web-out", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                         "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "sre"}}}]},
                                    {"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}], "ports": [{"port": 443}]}]})
    n = net(out)
    assert n.flow(WEB, PROM, 9090).egress.admitted_by == ["shop/web-out egress[0]"]
    assert n.flow(WEB, External("198.51.100.4"), 443).egress.admitted_by == ["shop/web-out egress[1]"]
    assert not n.flow(WEB, External("198.51.100.4"), 80).allowed
    assert not n.flow(WEB, DB, 5432).allowed


# --------------------------------------------------------------------------- ports


def _db_ports(*ports: dict) -> Network:
    return net(np("p", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": list(ports)}]}))


def test_numeric_ports_end_port_ranges_and_protocols():
    n = _db_ports({"port": 5000, "endPort": 5500}, {"port": 53, "protocol": "UDP"})
    assert n.flow(WEB, DB, 5000).allowed and n.flow(WEB, DB, 5432).allowed and n.flow(WEB, DB, 5500).allowed
    assert not n.flow(WEB, DB, 5501).allowed and not n.flow(WEB, DB, 4999).allowed
    assert n.flow(WEB, DB, 53, "UDP").allowed
    assert not n.flow(WEB, DB, 53).allowed                # TCP by default: the UDP port does not admit it
    assert not n.flow(WEB, DB, 5432, "UDP").allowed


def test_named_ports_match_the_destination_pods_container_port_of_that_name():
    n = _db_ports({"port": "pg"})
    assert n.flow(WEB, DB, 5432).allowed and n.flow(WEB, DB, "pg").allowed
    assert not n.flow(WEB, DB, 5433).allowed
    egress = net(np("web-out", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                                "egress": [{"ports": [{"port": "pg"}]}]}))
    assert egress.flow(WEB, DB, 5432).allowed             # resolved on the destination (db), not on web
    assert not egress.flow(WEB, External("198.51.100.1"), 5432).allowed   # nothing outside has named ports
    assert not egress.flow(WEB, PROM, 5432).allowed       # prometheus has no port named pg


def test_a_flow_by_port_name_resolves_it_on_the_destination_or_says_why_not():
    assert net().flow(WEB, DB, "dns", "UDP").port == 53
    with pytest.raises(InvalidValue, match=r"pod shop/db-0 has no TCP container port of that name \(it has pg=5432/TCP"):
        net().flow(WEB, DB, "http")
    with pytest.raises(InvalidValue, match="a port name needs a destination pod"):
        net().flow(WEB, CLIENT, "http")


# --------------------------------------------------------------------------- selectors


@pytest.mark.parametrize(("expr", "labels", "expected"), [
    ({"key": "tier", "operator": "In", "values": ["front", "edge"]}, {"tier": "front"}, True),
    ({"key": "tier", "operator": "In", "values": ["edge"]}, {"tier": "front"}, False),
    ({"key": "tier", "operator": "In", "values": ["front"]}, {}, False),
    ({"key": "tier", "operator": "NotIn", "values": ["edge"]}, {"tier": "front"}, True),
    ({"key": "tier", "operator": "NotIn", "values": ["front"]}, {"tier": "front"}, False),
    ({"key": "tier", "operator": "NotIn", "values": ["front"]}, {}, True),      # absent key: not in the set
    ({"key": "tier", "operator": "Exists"}, {"tier": ""}, True),
    ({"key": "tier", "operator": "Exists"}, {}, False),
    ({"key": "tier", "operator": "DoesNotExist"}, {}, True),
    ({"key": "tier", "operator": "DoesNotExist"}, {"tier": "x"}, False),
])
def test_match_expressions(expr, labels, expected):
    assert parse_selector({"matchExpressions": [expr]}, "sel").matches(labels) is expected


def test_match_labels_and_expressions_are_anded_and_empty_selects_all():
    sel = parse_selector({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}, "s")
    assert sel.matches({"app": "web", "tier": "front"})
    assert not sel.matches({"app": "web"}) and not sel.matches({"app": "db", "tier": "front"})
    assert parse_selector({}, "s").matches({}) and parse_selector(None, "s").matches({"a": "b"})


def test_a_near_miss_names_the_policy_whose_selector_misses_the_pod():
    """The mistake this module is here to catch: a policy meant for some pods whose labels are not what it selects."""
    meant = np("allow-clients", {"podSelector": {"matchLabels": {"app": "db", "role": "primary"}},
                                 "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})
    v = net(DENY_ALL, meant).flow(CLIENT, DB, 5432)
    assert not v.allowed
    assert ("shop/allow-clients would admit it but its podSelector [app=db, role=primary] does not select pod "
            "shop/db-0 (labels {'app': 'db'})") in v.explain()
    assert v.egress is None                               # the client is outside: only the pod's ingress counts


# --------------------------------------------------------------------------- malformed policies


@pytest.mark.parametrize(("spec", "message"), [
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}},
     r"NetworkPolicy shop/bad: spec.podSelector.matchExpressions\[0\]: operator 'Equals' is not one of In, NotIn"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     r"spec.podSelector.matchExpressions\[0\]: operator In needs at least one value"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
     r"operator Exists takes no values"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     r"spec.ingress\[0\].from\[0\]: ipBlock cannot be combined with podSelector or namespaceSelector"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}]},
     r"spec.ingress\[0\].from\[0\].ipBlock.cidr: '10.0.0.300/8' is not a CIDR"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]},
     r"ipBlock.except\[0\]: 192.168.0.0/16 is not inside the cidr 10.0.0.0/8"),
    ({"podSelector": {}, "egress": [{"to": [{}]}]}, r"spec.egress\[0\].to\[0\]: a peer needs podSelector"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
     r"spec.ingress\[0\].ports\[0\].endPort: needs a numeric port"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 100, "endPort": 90}]}]},
     r"endPort: 90 must be a number from port \(100\) to 65535"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}, r"ports\[0\].port: 70000 is outside 1-65535"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}, r"'ICMP' is not TCP, UDP or SCTP"),
    ({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]}, r"spec.policyTypes: Sideways \(Ingress, Egress\)"),
    ({"podSelector": {}, "ingress": [{"form": []}]}, r"spec.ingress\[0\]: unknown field\(s\) form \(from, ports\)"),
])
def test_malformed_policies_are_refused_naming_the_policy_and_field(spec, message):
    with pytest.raises(InvalidValue, match=message):
        Network([np("bad", spec)])


def test_a_policy_without_namespace_is_refused():
    with pytest.raises(InvalidValue, match=r"NetworkPolicy \?/p: metadata.name and metadata.namespace are required"):
        parse_policy({"kind": "NetworkPolicy", "metadata": {"name": "p"}, "spec": {}})


# --------------------------------------------------------------------------- pods and services


def test_pods_from_manifests_and_service_targets():
    manifest = {"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 8081, "name": "http"}]},
                                        {"name": "b", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]},
                "status": {"podIP": "10.244.0.9"}}
    pod = Pod.from_manifest(manifest)
    assert pod.ports == (ContainerPort(8081, "http", "TCP"), ContainerPort(53, "", "UDP")) and pod.ip == "10.244.0.9"
    svc = {"metadata": {"name": "web", "namespace": "shop"},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"},
                                                         {"name": "raw", "port": 81, "targetPort": 9090}]}}
    assert service_targets(svc, [WEB, pod, DB, OTHER], 80) == [(WEB, 8080), (pod, 8081)]
    assert service_targets(svc, [WEB, pod], "raw") == [(WEB, 9090), (pod, 9090)]
    with pytest.raises(InvalidValue, match=r"Service shop/web: no port 443 \(it has 80, 81\)"):
        service_targets(svc, [WEB], 443)
