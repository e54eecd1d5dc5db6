#!/usr/bin/env python3
"""Create, list and remove the local test hosts for the datacenter bootstrap (needs root).

    scripts/testhosts.py up --from-spec local        # one host per spec host of the datacenter
    scripts/testhosts.py up --from-spec local --real-nodes none   # every host simulated (kwok)
    scripts/testhosts.py status
    scripts/testhosts.py down                        # removes everything `up` made; idempotent
    scripts/testhosts.py build                       # only build/cache the base image + repository

How they are made: tools/testhosts/. `up` writes an inventory overrides file for the
bootstrap: <state>/inventory-overrides.yaml (printed at the end).

--real-nodes (default auto): hosts that run a real kubelet and containerd and `kubeadm join` the
datacenter's local control plane (tools/testhosts/realnode.py); auto = the datacenter's first host when
its local control plane is running (scripts/local_up.sh starts it), else none. The others stay simulated.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import testhosts  # noqa: E402
from tools.testhosts import realnode  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=testhosts.DEFAULT_STATE_DIR)
    parser.add_argument("--cache-dir", type=Path, default=testhosts.DEFAULT_CACHE_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="create test hosts (removes old ones first)")
    p_up.add_argument("--from-spec", required=True, help="spec file or shipped environment name (e.g. local)")
    p_up.add_argument("--datacenter", help="datacenter of the spec (default: its only one)")
    p_up.add_argument("--real-nodes", default="auto", help="auto | none | HOST[,HOST...] (see above)")
    sub.add_parser("down", help="remove all test hosts")
    sub.add_parser("status", help="list test hosts")
    p_build = sub.add_parser("build", help="build and cache the base image and package repository")
    p_build.add_argument("--rebuild", action="store_true")
    p_exec = sub.add_parser("exec", help="run a command inside a host (no SSH)")
    p_exec.add_argument("host")
    p_exec.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        if args.command == "up":
            dc, hosts = testhosts.hosts_from_spec(args.from_spec, args.datacenter)
            control_plane = realnode.local_control_plane(args.from_spec, dc)
            if args.real_nodes == "auto":
                real = [hosts[0][0]] if control_plane else []
                if not control_plane:
                    log(f"no local control plane of {dc} is running: every host is simulated (kwok)")
            else:
                real = [] if args.real_nodes == "none" else args.real_nodes.split(",")
                if real and not control_plane:
                    raise testhosts.TestHostError(f"--real-nodes {args.real_nodes}: no local control plane of {dc} "
                                                  "is running to join (start it: scripts/local_up.sh)")
            fleet = testhosts.up(hosts, datacenter=dc, state_dir=args.state_dir, cache_dir=args.cache_dir, log=log,
                                 real_hosts=real)
            if real and control_plane:
                realnode.join_local_control_plane(fleet, *control_plane)
                log(f"real nodes (kubelet + containerd, kubeadm join {control_plane[0]}): {', '.join(real)}; "
                    f"this machine's kernel has the kubelet's settings until `down` "
                    f"({', '.join(f'{k}={v}' for k, v in realnode.kubelet_kernel_settings().items())})")
            for host in fleet.hosts:
                kind = "real kubelet" if host.name in fleet.real_hosts else "simulated"
                print(f"{host.name:<16} {host.address:<15} rack {host.rack:<8} netns {host.netns:<14} {kind}")
            print(f"\nssh: ssh -i {fleet.key} -o UserKnownHostsFile={fleet.known_hosts} root@{fleet.hosts[0].address}")
            print(f"bootstrap: hybridml bootstrap {shlex.quote(args.from_spec)} --datacenter {dc} "
                  f"--overrides {fleet.overrides_file}")
        elif args.command == "down":
            removed = testhosts.down(args.state_dir, log=log)
            print(f"removed {len(removed)} item(s)" if removed else "nothing to remove")
        elif args.command == "status":
            rows = testhosts.status(args.state_dir)
            if not rows:
                print("no test hosts")
                return 0
            for row in rows:
                print(f"{row['name']:<16} {row['address']:<15} rack {row['rack']:<8} "
                      f"{'running' if row['running'] else 'stopped':<8} sshd {'up' if row['sshd'] else 'down'}")
            return 0 if all(r["running"] and r["sshd"] for r in rows) else 1
        elif args.command == "build":
            image = testhosts.ensure_image(args.cache_dir, log=log, rebuild=args.rebuild)
            print(image.dir)
        elif args.command == "exec":
            fleet = testhosts.Fleet.load(args.state_dir)
            if fleet is None:
                raise testhosts.TestHostError("no test hosts are up")
            argv_ = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            proc = fleet.exec(args.host, argv_ or ["sh", "-c", "ps -ef"], check=False)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            return proc.returncode
    except testhosts.TestHostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
