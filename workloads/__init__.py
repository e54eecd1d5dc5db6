"""Pulumi components for the serving stack: gateway, vLLM, Triton/KServe, Feast+Redis, Qdrant, monitoring."""
