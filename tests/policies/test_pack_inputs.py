"""The CrossGuard pack judges a stack by that stack's own spec and plan, never by a default spec."""
from __future__ import annotations

import pytest

from infra.errors import SpecError
from policies.crossguard import PLAN_KEY, SPEC_KEY, stack_inputs


def test_the_stack_config_names_spec_and_plan():
    config = {SPEC_KEY: "infra/environments/prod.yaml", PLAN_KEY: ".local/plans/prod.json", "hybridml:mode": "cloud"}
    assert stack_inputs(config, {"HYBRIDML_SPEC": "local"}) == ("infra/environments/prod.yaml", ".local/plans/prod.json")


def test_the_environment_variable_only_for_a_program_without_a_spec():
    assert stack_inputs({}, {"HYBRIDML_SPEC": "dev"}) == ("dev", None)


def test_no_spec_is_an_error_naming_the_key_not_a_default():
    with pytest.raises(SpecError) as err:
        stack_inputs({"hybridml:mode": "local"}, {"PULUMI_STACK": "prod"})
    assert err.value.exit_code == 2
    assert "hybridml:spec" in str(err.value) and "stack prod" in str(err.value)
