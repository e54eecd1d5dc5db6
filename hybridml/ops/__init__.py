"""The operations the CLI drives, without printing: they return results and raise `HybridmlError`s.

- `preview`, `preview_fastpath`, `preview_shards`: the Pulumi program under mocks (one stack, or the site
  stacks and fleet stack `hybridml up` deploys, in worker processes);
- `shards`, `rollout`, `stack_state`: an environment as site stacks + fleet stack through the Automation
  API; what the backend holds of each stack (locks, pending operations, last outputs);
- `check`: every policy rule over what the program builds;
- `observe`, `status`: read the live clusters; compare them with the plan (pure);
- `placement_svg`: the placement drawn as a picture.

May import hybridml/program.py, hybridml/stack, hybridml/local (toolchain lookup, state dirs) and the rooms
upstream of hybridml/; never hybridml/cli.
"""
