"""Secrets of the serving stack (Redis passwords, Qdrant and vLLM API keys), derived from one stack secret.

Nothing secret is in the spec: every credential is HMAC-SHA256(seed, purpose), where the seed is the
stack's secret config value `hybridml:secretSeed` (`pulumi config set --secret hybridml:secretSeed ...`).
The derived values stay `Output.secret`s, so they are encrypted in the state and masked in previews.
Rotating the seed rotates everything; a purpose string names one credential (e.g. `redis/dc-ash/user-profile`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac

import pulumi


def derive(seed: str, purpose: str, length: int = 32) -> str:
    """Pure: a URL-safe credential of `length` characters for `purpose`."""
    digest = hmac.new(seed.encode(), purpose.encode(), hashlib.sha256).digest()
    digest += hmac.new(seed.encode(), (purpose + "/2").encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:length]


class SecretSource:
    """Hands out derived secrets as `Output.secret` values."""

    def __init__(self, seed: pulumi.Input[str]):
        self._seed = pulumi.Output.secret(seed)

    def get(self, purpose: str) -> pulumi.Output[str]:
        return pulumi.Output.secret(self._seed.apply(lambda s: derive(s, purpose)))

    def render(self, purpose: str, template) -> pulumi.Output[str]:
        """`template(secret_value) -> str`, e.g. a config file embedding the secret; stays secret."""
        return pulumi.Output.secret(self.get(purpose).apply(template))
