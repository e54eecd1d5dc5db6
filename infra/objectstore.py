"""A datacenter's own object store, declared in the spec (`sites[].object_store` of a datacenter).

The Flink state (checkpoints, savepoints, HA metadata) of a pii/restricted streaming feature view stays in the
datacenter that holds the view: in this store when the datacenter declares one, else on a PersistentVolumeClaim
beside the job (workloads/render/flink.py; the rule `flink-state-in-site` checks it). Never a cloud bucket.
"""
from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from infra.model import StrictModel

S3_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
"""S3 bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens (and, checked below, no `..`, not an IP
address)."""
HOST = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"


class ObjectStore(StrictModel):
    """An S3-compatible store run by the datacenter itself (MinIO, Ceph RGW, ...), reached over HTTPS."""

    endpoint: Annotated[str, Field(max_length=260)] = Field(
        description="HTTPS endpoint of the store, e.g. https://s3.dc-ashburn.example.internal:9000 (https only: the "
                    "state of sensitive views is never sent in clear text).")
    bucket: Annotated[str, Field(pattern=S3_BUCKET)] = Field(description="Bucket for the Flink state (S3 naming rules).")
    credentials_secret: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)] = Field(
        default="object-store-credentials",
        description="Secret (keys `access-key`, `secret-key`) that the datacenter's platform team provides in each tier "
                    "namespace of the cluster; the Flink jobs read it. Default object-store-credentials.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError(f"{value!r} is not an https:// URL: the state of sensitive views never travels in clear text")
        if not re.fullmatch(rf"https://{HOST}(:\d{{1,5}})?/?", value):
            raise ValueError(f"{value!r} must be https://HOST[:PORT] (a DNS name, no path, no credentials)")
        port = urlsplit(value).port   # raises ValueError for a port out of range
        if port == 0:
            raise ValueError(f"{value}: port 0 is not a port")
        return value.rstrip("/")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if ".." in value or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value):
            raise ValueError(f"{value!r} is not a valid bucket name (no '..', not an IP address)")
        return value

    @property
    def port(self) -> int:
        return urlsplit(self.endpoint).port or 443

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""
