"""hybridml's own rooms, downstream of infra/, policies/, clusters/, workloads/ and datacenter/.

Inside `hybridml/`, data and imports flow one way (a room imports only the rooms before it):

    stack/        the stack-config keys, the program's settings, the plan file, the inputs fingerprint
    program.py    the Pulumi program every stack runs (`__main__.py`)
    local/        the local control planes (etcd, kube-apiserver, ..., kwok nodes, the KEDA stand-in)
    ops/          what the CLI drives: mock preview, sharded rollout, stack state, check, status
    cli/          the typer app: the only room that prints and picks exit codes

`local/` needs none of stack/ or program.py; ops/ uses local/ only to find the toolchain and state dirs.
"""
