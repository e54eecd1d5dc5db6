#!/usr/bin/env bash
# ansible-lint (production profile, config datacenter/.ansible-lint) over datacenter/.
# ansible-lint pins many of its own dependencies, so it lives in its own virtualenv (.venv-lint,
# created on first use; HYBRIDML_LINT_VENV to put it elsewhere), never in the project's .venv.
#   scripts/ansible_lint.sh             lint, exit non-zero on any violation
#   scripts/ansible_lint.sh --setup     only create the virtualenv
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${HYBRIDML_LINT_VENV:-$ROOT/.venv-lint}"
# same ansible-core minor as the project's driver, so both read the playbook the same way
REQS=("ansible-lint>=26.1,<27" "ansible-core>=2.19,<2.20")
stamp="$VENV/.installed-$(printf '%s\n' "${REQS[@]}" | sha256sum | cut -c1-12)"
if [[ ! -x $VENV/bin/ansible-lint || ! -f $stamp ]]; then
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${REQS[@]}"
  touch "$stamp"
fi
[[ ${1:-} == --setup ]] && exit 0
cd "$ROOT/datacenter"
export PATH="$VENV/bin:$PATH" ANSIBLE_CONFIG="$ROOT/datacenter/ansible.cfg" ANSIBLE_ROLES_PATH="$ROOT/datacenter/roles"
exec "$VENV/bin/ansible-lint" --nocolor "$@"
