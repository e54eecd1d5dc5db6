"""A picture of a placement: user regions on the left, sites on the right, demand flows between them."""
from __future__ import annotations

from html import escape

from infra.spec import Environment
from policies.placement.plan import PlacementPlan


def placement_svg(env: Environment, plan: PlacementPlan) -> str:
    regions = [r.name for r in env.user_regions]
    sites = plan.sites
    row_h, width = 120, 1100
    height = max(len(regions), len(sites)) * row_h + 120
    flows: dict[tuple[str, str], float] = {}
    demand: dict[str, float] = {}
    for p in plan.pipelines:
        spec = env.pipeline(p.name)
        for region, row in p.routing.items():
            rps = spec.demand_rps.get(region, 0.0)
            demand[region] = demand.get(region, 0.0) + rps
            for site, share in row.items():
                flows[(region, site)] = flows.get((region, site), 0.0) + rps * share
    top = max(flows.values(), default=1.0) or 1.0
    ry = {r: 90 + i * row_h for i, r in enumerate(regions)}
    sy = {s.name: 90 + i * row_h for i, s in enumerate(sites)}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="20" y="30" font-size="18" font-weight="bold">Placement of {escape(plan.environment)}: '
           f'${plan.cost_usd_per_hour:,.0f}/h, {sum(p.total_replicas for p in plan.pipelines)} replicas</text>',
           '<text x="20" y="52" fill="#555">Lines: peak requests/s routed from a user region to a site (width ~ volume). '
           'Bars: share of site capacity in use. GPUs and racks here may be simulated.</text>']
    for (region, site), rps in sorted(flows.items()):
        w = 1 + 14 * rps / top
        out.append(f'<path d="M 230 {ry[region] + 25} C 450 {ry[region] + 25}, 450 {sy[site] + 40}, 640 {sy[site] + 40}" '
                   f'stroke="#4a7bd0" stroke-opacity="0.45" stroke-width="{w:.1f}" fill="none">'
                   f'<title>{escape(region)} -> {escape(site)}: {rps:,.0f} rps</title></path>')
    for r in regions:
        y = ry[r]
        out.append(f'<rect x="20" y="{y}" width="210" height="50" rx="6" fill="#eef3fb" stroke="#4a7bd0"/>')
        out.append(f'<text x="30" y="{y + 22}" font-weight="bold">{escape(r)}</text>')
        out.append(f'<text x="30" y="{y + 40}" fill="#555">{demand.get(r, 0):,.0f} rps peak</text>')
    for s in sites:
        y = sy[s.name]
        color = "#f4efe6" if s.kind == "datacenter" else "#eaf6ee"
        out.append(f'<rect x="640" y="{y}" width="430" height="95" rx="6" fill="{color}" stroke="#888"/>')
        label = f"{s.name} ({'own datacenter' if s.kind == 'datacenter' else 'cloud'}) ${s.cost_usd_per_hour:,.0f}/h"
        out.append(f'<text x="650" y="{y + 20}" font-weight="bold">{escape(label)}</text>')
        out.append(f'<text x="650" y="{y + 38}" fill="#555">{len(s.pipelines)} pipelines, '
                   f'{sum(s.pipelines.values())} replicas, {len(s.data)} data stores</text>')
        bars = [("cores", s.cores_used, s.cores_capacity)]
        bars += [(f"{t} GPUs", n, s.gpus_capacity.get(t) or n) for t, n in sorted(s.gpus_used.items())]
        for i, (name, used, cap) in enumerate(bars[:3]):
            frac = min(1.0, used / cap) if cap else 0.0
            by = y + 48 + i * 15
            out.append(f'<rect x="650" y="{by}" width="200" height="10" fill="#ddd"/>')
            out.append(f'<rect x="650" y="{by}" width="{200 * frac:.0f}" height="10" fill="{"#c0504d" if frac > 0.9 else "#5b9b5b"}"/>')
            out.append(f'<text x="860" y="{by + 9}" font-size="11">{escape(name)} {used:,.0f}/{cap:,.0f}</text>')
    out.append("</svg>")
    return "\n".join(out)
