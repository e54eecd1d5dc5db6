"""Human-readable view of `deploy_workloads`' summary (the program exports it as the `workloads` output):
what runs on which site, where each user region enters, and how every route is weighted. Pure."""
from __future__ import annotations


def describe(summary: dict) -> str:
    lines = [f"domain: {summary['domain']}", "", "entry points (DNS name -> gateway site):"]
    for region, by_class in sorted(summary["entries"].items()):
        for cls, site in sorted(by_class.items()):
            host = f"{region}.{summary['domain']}" if cls == "standard" else f"{region}.{cls}.{summary['domain']}"
            lines.append(f"  {host:48s} -> {site}")
    for site, s in sorted(summary["sites"].items()):
        sim = ", simulated" if s["simulated"] else ""
        lines += ["", f"site {site} ({s['kind']}{sim}); fleet gateway {s['fleet_hostname']}"]
        if s["entry_for"]:
            lines.append(f"  entry for: {', '.join(s['entry_for'])}")
        for name, p in sorted(s["pipelines"].items()):
            variants = ", ".join(f"{v or 'default'} x{n}" for v, n in p["variants"].items())
            reads = "; reads " + ", ".join(f"{k}@{v}" for k, v in sorted(p["reads"].items())) if p["reads"] else ""
            lines.append(f"  {p['engine']:6s} {name:32s} {p['tier']:10s} {p['namespace']:12s} {variants}{reads}")
        for name, v in sorted(s["feature_views"].items()):
            stream = " +flink" if v["streaming"] else ""
            lines.append(f"  redis  {name:32s} {v['tier']:10s} {v['namespace']:12s} read from {', '.join(v['read_from']) or '-'}{stream}")
        for name, c in sorted(s["collections"].items()):
            lines.append(f"  qdrant {name:32s} {c['tier']:10s} {c['namespace']:12s} read from {', '.join(c['read_from']) or '-'}")
    lines += ["", "routes (pipeline, region @ entry: site weight/1000 [priority]):"]
    for r in summary["routes"]:
        backends = ", ".join(f"{b['site']} {b['weight']}" + (f" [p{b['priority']}]" if b["priority"] else "")
                             for b in r["backends"])
        lines.append(f"  {r['pipeline']:32s} {r['region']:10s} @ {r['entry']:14s} {backends}")
    return "\n".join(lines)
