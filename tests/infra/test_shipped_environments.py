import subprocess
import sys

import pytest

from infra.loader import load_environment
from tests.conftest import REPO


@pytest.mark.parametrize("name", ["local", "dev", "prod"])
def test_shipped_environment_validates(name):
    env = load_environment(name)
    assert env.name == name
    assert env.pipelines and env.sites


def test_prod_is_at_reference_scale():
    env = load_environment("prod")
    assert len(env.cloud_sites) >= 3 and len(env.datacenters) >= 3
    assert 200 <= len(env.pipelines) <= 300
    cores = sum(h.cores for dc in env.datacenters for _, h in dc.all_hosts())
    assert cores >= 30_000
    engines = {p.engine.kind for p in env.pipelines}
    assert engines == {"vllm", "triton", "cpu"}
    assert any(p.engine.kind == "vllm" and p.engine.speculative for p in env.pipelines)


def test_dev_is_one_region_and_one_datacenter():
    env = load_environment("dev")
    assert len(env.cloud_sites) == 1 and len(env.datacenters) == 1


def test_generated_files_match_generator():
    result = subprocess.run([sys.executable, "scripts/gen_environments.py", "--check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
