"""`hybridml bootstrap`: bad input exits 2 with the field path, before any host is touched."""
from __future__ import annotations

import pytest
import typer
import yaml
from typer.testing import CliRunner

from hybridml.cli.bootstrap import bootstrap

app = typer.Typer()
app.command()(bootstrap)


@app.command()
def _other() -> None:  # a second command keeps typer's "bootstrap" sub-command form, as in hybridml.cli
    pass


runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, ["bootstrap", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("text,needle", [
    ("add_hosts:\n  - {name: r1-h01, rack: r2, address: 10.77.2.50, cores: 4, memory_gib: 8}\n",
     "add_hosts[0].name: duplicate host 'r1-h01'"),
    ("hosts:\n  r2-h01: {address: 10.77.1.11}\n",
     "hosts.r2-h01.address: address 10.77.1.11 of host 'r2-h01' clashes with host 'r1-h01'"),
    ("add_hosts:\n  - {name: x1, rack: r7, address: 10.77.7.1, cores: 4, memory_gib: 8}\n",
     "add_hosts[0].rack: unknown rack 'r7'"),
], ids=["duplicate-host", "address-clash", "unknown-rack"])
def test_bad_inventory_input_exits_2_with_the_field_path(tmp_path, text, needle):
    path = tmp_path / "overrides.yaml"
    path.write_text(text)
    code, output = invoke("local", "--datacenter", "dc-local", "--overrides", str(path))
    assert code == 2, output
    assert f"{path}:2: {needle}" in " ".join(output.split()), output
    assert "nothing was bootstrapped" in output


def test_unknown_datacenter_and_limit_exit_2():
    code, output = invoke("local", "--datacenter", "dc-mars")
    assert code == 2 and "no datacenter 'dc-mars'" in output
    code, output = invoke("local", "--limit", "r1,r3")
    assert code == 2 and "limit[1]: 'r3' matches no host, rack or group" in " ".join(output.split())


def test_bad_spec_exits_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\n")
    code, output = invoke(str(spec))
    assert code == 2
    assert "required field" in output


def test_write_inventory(tmp_path):
    out = tmp_path / "inventory.yml"
    code, output = invoke("local", "--write-inventory", str(out))
    assert code == 0, output
    data = yaml.safe_load(out.read_text())
    assert list(data["all"]["children"]["dc_local"]["children"]) == ["dc_local_rack_r1", "dc_local_rack_r2"]


def test_missing_overrides_file_exits_2(tmp_path):
    code, output = invoke("local", "--overrides", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read the overrides file" in output


def test_help_names_the_options():
    result = runner.invoke(app, ["bootstrap", "--help"], env={"COLUMNS": "200"})
    for option in ("--datacenter", "--check", "--limit", "--overrides", "--kubeconfig"):
        assert option in result.output
