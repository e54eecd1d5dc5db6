"""The ground floor of `hybridml/`: what a stack is made of, owned in one place.

- `config`: the stack-config keys (namespace `hybridml`), the program's settings parsed from them,
  the project directory and its `Pulumi.<env>.yaml` files;
- `planfile`: the placement plan file every stack of an environment reads (`.local/plans/<env>.json`),
  how it is written, read and checked against a spec;
- `fingerprint`: the hash of a stack's inputs that `--skip-unchanged` compares.

Imported by the Pulumi program (`hybridml/program.py`), the operations (`hybridml/ops/`) and the CLI
(`hybridml/cli/`). It may import the rooms upstream of `hybridml/` (infra, policies, clusters) and
nothing else of `hybridml/`.
"""
