"""The ground floor: the environment spec (typed models, YAML loading with file:line errors, checks
across the file), the one error hierarchy (`errors`) and the one Kubernetes vocabulary (`kube`: taints,
quantities, kwok nodes; `labels`: every label key). Imports no other room of the project."""
from infra.errors import HybridmlError, SpecError, SpecIssue
from infra.loader import load_environment, parse_environment
from infra.spec import Environment, PrivacyTier

__all__ = ["Environment", "HybridmlError", "PrivacyTier", "SpecError", "SpecIssue", "load_environment", "parse_environment"]
