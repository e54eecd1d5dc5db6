"""Pulumi components for the serving stack: gateway, vLLM, Triton/KServe, Feast+Redis, Qdrant, monitoring.
May import infra/, policies/placement, clusters/ and datacenter/; `render/` holds the pure manifest builders."""
