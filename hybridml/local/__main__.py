"""``python -m hybridml.local {up,down,status}``: manage the local control planes by hand.

``up`` reads cluster definitions from a YAML file: either a list of clusters or a mapping with a
``clusters`` key; each cluster has ``name`` and ``nodes`` (name, labels, taints, capacity).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from .controlplane import down, status, up
from .paths import DEFAULT_CRD_DIR, DEFAULT_STATE_DIR


def _load(path: Path) -> list:
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict):
        data = data.get("clusters", [])
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a list of clusters or a mapping with 'clusters'")
    return data


def _print_status(st) -> None:
    for name, s in st.items():
        comps = " ".join(f"{c}={'up' if pid else 'down'}" for c, pid in s.components.items())
        print(f"{name}: {s.server or '-'}  {comps}  kubeconfig={s.kubeconfig}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hybridml.local")
    ap.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start or reconcile clusters")
    p_up.add_argument("clusters_file", type=Path)
    p_up.add_argument("--crd-dir", type=Path, default=DEFAULT_CRD_DIR)
    p_up.add_argument("--no-crds", action="store_true")
    p_down = sub.add_parser("down", help="stop what up started")
    p_down.add_argument("names", nargs="*")
    sub.add_parser("status")
    args = ap.parse_args(argv)

    if args.cmd == "up":
        t0 = time.monotonic()
        res = up(_load(args.clusters_file), args.state_dir, None if args.no_crds else args.crd_dir, log=print)
        _print_status(res)
        print(f"up took {time.monotonic() - t0:.1f}s; merged kubeconfig: {args.state_dir / 'kubeconfig'}")
    elif args.cmd == "down":
        for name, comps in down(args.state_dir, args.names or None).items():
            print(f"{name}: stopped {', '.join(comps) or 'nothing'}")
    else:
        _print_status(status(args.state_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
