"""A TCP relay from inside a test host's network namespace to an address of this machine.

A local control plane's kube-apiserver listens on this machine's loopback only, and its serving
certificate names 127.0.0.1. A test host cannot reach that loopback (it has its own), so the fleet
runs this relay: a listening socket made *inside* the host's network namespace (its 127.0.0.1:6443,
the node-local API endpoint kubespray gives every node), each accepted connection forwarded byte for
byte to the API server on this machine. TLS stays end to end (the kubelet verifies the API server's
certificate for 127.0.0.1, the API server verifies the kubelet's client certificate).

    python -m tools.testhosts.relay --netns hml-r1-h01 --listen 127.0.0.1:6443 --to 127.0.0.1:41234

A socket keeps the network namespace it was made in, so the process enters the host's namespace
(setns) only to make the listener, and goes back to its own before it serves.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listener_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket bound to host:port inside the named network namespace (`ip netns`)."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    sock.setblocking(False)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if not writer.is_closing():
            writer.close()


async def serve(sock: socket.socket, to_host: str, to_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(to_host, to_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True, help="network namespace to listen in (ip netns name)")
    parser.add_argument("--listen", required=True, help="HOST:PORT inside that namespace")
    parser.add_argument("--to", required=True, help="HOST:PORT of this machine to forward to")
    args = parser.parse_args(argv)
    lhost, _, lport = args.listen.rpartition(":")
    thost, _, tport = args.to.rpartition(":")
    sock = listener_in_netns(args.netns, lhost, int(lport))
    print(f"relay: {args.netns} {args.listen} -> {args.to}", flush=True)
    try:
        asyncio.run(serve(sock, thost, int(tport)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
