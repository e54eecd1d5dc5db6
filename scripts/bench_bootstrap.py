#!/usr/bin/env python3
"""Hosts bootstrapped per minute: in parallel (forks, rack batches) vs one host at a time, on the same test hosts.

    sudo .venv/bin/python scripts/bench_bootstrap.py [--spec local] [--runs first|second] [--json out.json]

Each measurement starts from freshly created test hosts (tools/testhosts/: same addresses,
same cached base image), so both modes do the full first bootstrap. Prints hosts/minute of each mode
and their ratio from this one run; the test hosts are removed at the end. Needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="local")
    parser.add_argument("--datacenter", default=None)
    parser.add_argument("--forks", type=int, default=None, help="parallel hosts (default: a rack)")
    parser.add_argument("--runs", choices=["first", "second"], default="first",
                        help="first: fresh hosts each time (default); second: idempotent re-runs")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    from datacenter.driver import _ansible_env, run_bootstrap
    from datacenter.files import load_overrides
    from datacenter.inventory import build_inventory
    from infra.loader import load_environment
    from tools import testhosts

    if os.geteuid() != 0:
        print("error: needs root (test hosts are network namespaces)", file=sys.stderr)
        return 2
    dc, hosts = testhosts.hosts_from_spec(args.spec, args.datacenter)
    env = load_environment(args.spec)
    state = Path(tempfile.mkdtemp(prefix="hybridml-bench-"))
    strategy = _ansible_env().get("ANSIBLE_STRATEGY")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    modes = {
        "serial (forks=1, one host per batch)": {"forks": 1, "serial": 1},
        "forks (rack batches, a rack at once)": {"forks": args.forks, "serial": "rack"},
    }
    rows = []
    fleet = None
    try:
        for label, options in modes.items():
            if fleet is None or args.runs == "first":
                fleet = testhosts.up(hosts, datacenter=dc, state_dir=state, log=log, owner_pid=os.getpid(),
                                     wait_s=600)
            inventory = build_inventory(env, dc, load_overrides(fleet.overrides_file))
            if args.runs == "second":
                run_bootstrap(inventory)  # bring them to the bootstrapped state first
            log(f"bench: {label}: bootstrapping {len(hosts)} hosts")
            t0 = time.monotonic()
            result = run_bootstrap(inventory, **options)
            seconds = time.monotonic() - t0
            finished = result.count("ok") + result.count("changed")
            if not result.ok:
                bad = [f"{h.name}: {h.status} {h.failed_task or ''} {h.message or ''}" for h in result.hosts.values()
                       if h.status not in ("ok", "changed")]
                log("bench: not every host finished:\n  " + "\n  ".join(bad))
            rows.append({"mode": label, "hosts": finished, "seconds": round(seconds, 1),
                         "hosts_per_minute": round(finished / seconds * 60, 2)})
            log(f"bench: {label}: {finished} hosts in {seconds:.1f}s")
    finally:
        testhosts.down(state)
    serial, forks = rows
    ratio = forks["hosts_per_minute"] / serial["hosts_per_minute"] if serial["hosts_per_minute"] else float("nan")
    print(f"bootstrap benchmark: {len(hosts)} test hosts of {dc} ({args.runs} runs, Ansible strategy {strategy}, "
          f"{os.cpu_count()} cores)")
    for row in rows:
        print(f"  {row['mode']:<40} {row['hosts']} hosts in {row['seconds']:6.1f}s  "
              f"= {row['hosts_per_minute']:5.2f} hosts/min")
    print(f"  forks vs serial: {ratio:.2f}x hosts per minute")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio": round(ratio, 2), "strategy": strategy,
                                         "runs": args.runs, "cores": os.cpu_count()}, indent=2) + "\n")
    return 0 if all(r["hosts"] == len(hosts) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
