"""The environment spec: typed models, YAML loading and cross-reference checks."""
from infra.errors import HybridmlError, SpecError, SpecIssue
from infra.loader import load_environment, parse_environment
from infra.spec import Environment, PrivacyTier

__all__ = ["Environment", "HybridmlError", "PrivacyTier", "SpecError", "SpecIssue", "load_environment", "parse_environment"]
