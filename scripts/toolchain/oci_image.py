#!/usr/bin/env python3
"""Write a single-layer OCI image archive (an OCI image layout in a tar) from local files.

No registry is reachable here, so scripts/toolchain.sh builds the images a real node needs (the pod
sandbox `pause`, a small workload) from source and packs them with this; `ctr images import`
loads such an archive into containerd under the name given here. Stdlib only; the output is
byte-for-byte reproducible (fixed timestamps, owners and order).

    oci_image.py OUT.tar NAME:TAG --file SRC:/path/in/image[:MODE] ... [--entrypoint /pause]
                 [--user 65535:65535]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile

EPOCH = 0


def _tar_bytes(members: list[tuple[str, bytes, int]]) -> bytes:
    """A tar of (path, content, mode), parent directories included, deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path, _, _ in members:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)
        for path, content, mode in sorted(members):
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.mtime = len(content), mode, EPOCH
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def image_archive(name: str, files: list[tuple[str, bytes, int]], entrypoint: list[str], user: str | None,
                  arch: str = "amd64") -> bytes:
    layer_tar = _tar_bytes(files)
    layer_gz = gzip.compress(layer_tar, compresslevel=9, mtime=EPOCH)
    config = {"architecture": arch, "os": "linux",
              "config": {"Entrypoint": entrypoint, **({"User": user} if user else {})},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
              "history": [{"created_by": "hybridml scripts/toolchain/oci_image.py"}]}
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    layer_digest, _ = _blob(layer_gz)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                           "size": len(config_bytes)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                            "size": len(layer_gz)}]}
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"], "digest": manifest_digest, "size": len(manifest_bytes),
                            "platform": {"architecture": arch, "os": "linux"},
                            # ctr images import names the image from these
                            "annotations": {"io.containerd.image.name": name,
                                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]}
    members = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644),
               ("index.json", json.dumps(index, sort_keys=True).encode(), 0o644)]
    for digest, data in ((config_digest, config_bytes), (layer_digest, layer_gz), (manifest_digest, manifest_bytes)):
        members.append((f"blobs/sha256/{digest.split(':', 1)[1]}", data, 0o644))
    return _tar_bytes(members)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("name", help="image reference, e.g. registry.k8s.io/pause:3.10.2")
    parser.add_argument("--file", action="append", required=True, help="SRC:/path/in/image[:MODE(octal)]")
    parser.add_argument("--entrypoint", required=True)
    parser.add_argument("--user")
    args = parser.parse_args(argv)
    files = []
    for spec in args.file:
        src, dest, *mode = spec.split(":")
        with open(src, "rb") as handle:
            files.append((dest, handle.read(), int(mode[0], 8) if mode else 0o755))
    data = image_archive(args.name, files, [args.entrypoint], args.user)
    with open(args.out, "wb") as handle:
        handle.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
