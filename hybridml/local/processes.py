"""Supervising the processes of the local control planes: start one detached, record it in a
pidfile, tell whether that very process still runs, stop it; and the loopback ports they listen on.

A pidfile holds the pid *and* the process's start time from /proc, so `status` and `down` never
take a recycled pid for a component, and `down` stops only what `up` started. A component runs in
its own session (an interrupted `hybridml` leaves the control planes running) with its output
appended to its log file. Nothing here knows which components exist: components.py does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .paths import ClusterPaths, write_json

_CHILDREN: dict[int, subprocess.Popen] = {}
PORT_LOCK = threading.Lock()   # held while a cluster picks its ports (clusters come up in parallel)


# --- ports ---------------------------------------------------------------------------------------
def free_ports(n: int, exclude: set[int]) -> list[int]:
    """``n`` distinct loopback ports free now and not in ``exclude``."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            socks.append(s)
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# --- /proc ---------------------------------------------------------------------------------------
def proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces: split after the closing parenthesis
    return stat.rsplit(")", 1)[1].split()


def _proc_start_time(pid: int) -> str | None:
    """Start time (clock ticks since boot) and state of a process, or None if gone/zombie."""
    rest = proc_stat(pid)
    if rest is None:
        return None
    state, start = rest[0], rest[19]
    if state in ("Z", "X"):
        return None
    return start


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- pidfiles ------------------------------------------------------------------------------------
def _read_pidfile(paths: ClusterPaths, component: str) -> dict[str, Any] | None:
    try:
        return json.loads(paths.pidfile(component).read_text())
    except (OSError, ValueError):
        return None


def running_pid(paths: ClusterPaths, component: str) -> int | None:
    """The pid of a component started by ``up``, if that very process is still running."""
    rec = _read_pidfile(paths, component)
    if not rec:
        return None
    pid = int(rec["pid"])
    _reap(pid)
    start = _proc_start_time(pid)
    if start is None or start != rec.get("start_time"):
        return None
    return pid


def start_process(paths: ClusterPaths, component: str, argv: list[str], env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` as ``component`` of the cluster (log appended, pidfile written); returns its pid.
    ``env`` is added to this process's environment."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.run.mkdir(parents=True, exist_ok=True)
    with open(paths.logfile(component), "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **env} if env else None,
        )
    _CHILDREN[proc.pid] = proc
    start = None
    for _ in range(50):
        start = _proc_start_time(proc.pid)
        if start is not None or proc.poll() is not None:
            break
        time.sleep(0.01)
    write_json(paths.pidfile(component), {"pid": proc.pid, "start_time": start, "argv": argv})
    return proc.pid


def stop_process(paths: ClusterPaths, component: str, timeout: float = 15.0) -> bool:
    """Stop a component started by ``up`` (by pidfile). Returns True if a process was stopped."""
    pid = running_pid(paths, component)
    stopped = False
    if pid is not None:
        stopped = True
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                _reap(pid)
                if _proc_start_time(pid) is None:
                    break
                time.sleep(0.05)
            else:
                continue
            break
        _reap(pid)
    paths.pidfile(component).unlink(missing_ok=True)
    return stopped


def log_tail(paths: ClusterPaths, component: str, n: int = 30) -> str:
    """The last ``n`` lines of a component's log ("" if it has none)."""
    try:
        return "\n".join(paths.logfile(component).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


__all__ = ["PORT_LOCK", "free_ports", "log_tail", "port_free", "proc_stat", "running_pid", "start_process",
           "stop_process"]
