"""Run one command in a sandbox of its own: new mount and network namespaces (Linux, root), a root file system made of
bind mounts of the host's directories plus a few directories given (``--bind TARGET=SOURCE``), and one loopback port
forwarded to the host's loopback. Standard library only, run by path (``python netns_sandbox.py ...``), so the
supervising process is small and imports nothing of the project.

Used by envoy_gateway_k8s.py: Envoy Gateway in Kubernetes mode reads files at fixed paths (``/certs``,
``/var/run/secrets/kubernetes.io/serviceaccount``) and listens on fixed ports on every interface; here it gets those
paths without a write to the host's file system and those ports without a clash with anything on the host.

- mounts: ``/`` of this namespace is made private (nothing propagates to the host); the new root is a tmpfs
  (unbindable, so the recursive binds of its ancestors do not copy it into itself) with every entry of the host's
  ``/`` bind-mounted (directories recursively) or, for symbolic links, copied. A ``--bind`` target that does not
  exist is created: a host directory on its way gets a tmpfs over it in this namespace, with its entries grafted back;
- network: only ``lo``, brought up; connections to 127.0.0.1:``--forward`` inside are relayed to 127.0.0.1:``--forward``
  of the host's network namespace (a thread that has ``setns`` back into it dials);
- lifetime: the command runs chrooted, as this process's child (``PR_SET_PDEATHSIG``: it dies with this process);
  SIGTERM/SIGINT are passed on; with ``--watch PIDFILE`` (a pidfile of processes.py) the command is stopped once that
  process is gone. The exit status is the command's.
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_BIND, MS_REC, MS_UNBINDABLE, MS_PRIVATE = 4096, 16384, 1 << 17, 1 << 18
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
WATCH_INTERVAL = 2.0
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(s: str | None) -> bytes | None:
    return s.encode() if s is not None else None


def _mount(source: str | None, target: str | Path, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_enc(source), str(target).encode(), _enc(fstype), ctypes.c_ulong(flags), _enc(data)),
           f"mount {source or ''} on {target}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def _graft(host_dir: Path, into: Path) -> None:
    """Make ``into`` (an empty directory of ours) show ``host_dir``'s entries: directories and files bind-mounted
    (directories recursively), symbolic links copied."""
    for entry in sorted(os.listdir(host_dir)):
        src, dst = host_dir / entry, into / entry
        try:
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            elif src.is_dir():
                dst.mkdir()
                _mount(str(src), dst, None, MS_BIND | MS_REC)
            else:
                dst.touch()
                _mount(str(src), dst, None, MS_BIND)
        except OSError:
            continue   # an entry that vanished or cannot be bound: nothing the command needs


def _make_dir(root: Path, target: str, ours: set[Path]) -> Path:
    """Directory ``target`` inside the new root (symbolic links followed inside it), made without writing to the host:
    a directory that is a bind of the host's gets a tmpfs over it (this namespace only) with its entries grafted back."""
    parts = list(Path(target).parts[1:])
    cur, hops = root, 0
    while parts:
        comp = parts.pop(0)
        p = cur / comp
        if comp == "..":
            cur = cur.parent if cur != root else root
            continue
        if p.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"too many symbolic links resolving {target}")
            link = Path(os.readlink(p))
            parts = list(link.parts[1:] if link.is_absolute() else link.parts) + parts
            cur = root if link.is_absolute() else cur
            continue
        if not p.exists():
            if cur not in ours:
                _mount("tmpfs", cur, "tmpfs", 0, "mode=755")
                _graft(Path("/") / cur.relative_to(root), cur)
                ours.add(cur)
            p.mkdir()
            ours.add(p)
        cur = p
    return cur


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _forward(listener: socket.socket, host_net: int, port: int) -> None:
    """Accept inside the sandbox's network namespace (the listener was made there), dial 127.0.0.1:``port`` in the
    host's (this thread alone moves back into it)."""
    _check(_libc.setns(host_net, CLONE_NEWNET), "setns into the host's network namespace")
    while True:
        conn, _ = listener.accept()
        try:
            up = socket.create_connection(("127.0.0.1", port), timeout=10)
            up.settimeout(None)
        except OSError:
            conn.close()
            continue
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def pid_alive(pidfile: Path) -> bool:
    """The process a pidfile of processes.py names still runs (the same process: its start time matches)."""
    try:
        rec = json.loads(pidfile.read_text())
        stat = Path(f"/proc/{int(rec['pid'])}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return stat[0] not in ("Z", "X") and stat[19] == rec.get("start_time")


def run(root: Path, binds: dict[str, Path], forward: int, watch: Path | None, command: list[str]) -> int:
    """Run ``command`` in the sandbox; returns its exit status (128+N when killed by signal N)."""
    host_net = os.open("/proc/self/ns/net", os.O_RDONLY)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare (mount and network namespaces)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _loopback_up()
    root.mkdir(parents=True, exist_ok=True)
    _mount("tmpfs", root, "tmpfs", 0, "mode=755")
    _mount(None, root, None, MS_UNBINDABLE)
    _graft(Path("/"), root)
    ours = {root}
    for target, src in binds.items():
        _mount(str(src), _make_dir(root, target, ours), None, MS_BIND)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", forward))
    listener.listen(128)
    cwd = os.getcwd()

    def enter() -> None:
        os.chroot(root)
        try:
            os.chdir(cwd)
        except OSError:
            os.chdir("/")
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    # started before any thread of ours exists (preexec_fn is unsafe once threads run)
    child = subprocess.Popen(command, preexec_fn=enter, close_fds=True)   # noqa: PLW1509
    threading.Thread(target=_forward, args=(listener, host_net, forward), daemon=True).start()

    def on_signal(signum: int, _frame: Any) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while True:
        try:
            rc = child.wait(timeout=WATCH_INTERVAL)
            return rc if rc >= 0 else 128 - rc
        except subprocess.TimeoutExpired:
            pass
        if watch is not None and not pid_alive(watch):
            print(f"[netns_sandbox] the process of {watch} is gone: stopping {command[0]}", flush=True)
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netns_sandbox.py", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="where the new root is mounted (a directory of ours)")
    parser.add_argument("--bind", action="append", default=[], metavar="TARGET=SOURCE",
                        help="bind SOURCE (a host directory) at TARGET inside")
    parser.add_argument("--forward", type=int, required=True, metavar="PORT", help="relay 127.0.0.1:PORT to the host's")
    parser.add_argument("--watch", type=Path, metavar="PIDFILE", help="stop the command once that process is gone")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command:
        parser.error("no command given")
    binds: dict[str, Path] = {}
    for b in ns.bind:
        target, sep, source = b.partition("=")
        if not sep or not target.startswith("/") or not Path(source).is_dir():
            parser.error(f"--bind {b!r}: expected /TARGET=SOURCE with SOURCE an existing directory")
        binds[target] = Path(source)
    if os.geteuid() != 0:
        print("netns_sandbox.py: needs root (mount and network namespaces)", file=sys.stderr)
        return 2
    return run(ns.root, binds, ns.forward, ns.watch, command)


if __name__ == "__main__":
    sys.exit(main())
