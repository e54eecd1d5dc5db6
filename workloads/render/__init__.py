"""Pure builders of Kubernetes manifests (plain dicts). No Pulumi imports: tested directly."""
