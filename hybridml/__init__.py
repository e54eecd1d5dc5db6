"""hybridml: the CLI and the operations that drive the other rooms (local stack, rollouts)."""
