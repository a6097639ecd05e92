#!/usr/bin/env bash
# `make test`: every tier, in four pytest processes at once, each on a test stack of its own.
#
#   group        tests                                   stack                   OS user
#   reliability  tests/reliability                       .devstack-test          opsflows-test
#   e2e          tests/e2e tests/integration tests/unit  .devstack-test-e2e      opsflows-test-e2e
#   served       tests/served, the `serve` run path      .devstack-test-served   opsflows-test-served
#   worker       tests/served, the `worker` run path     .devstack-test-worker   opsflows-test-worker
#                (and a few serve-path files: tests/served/conftest.py SERVE_WITH_WORKER)
#
# The groups mostly wait (alerts' `for`, bakes, pauses, polling), so side by side the suite
# takes about as long as the longest group. A group's pytest starts as soon as its stack is up
# (the stacks start one after the other: each creates its OS user and PostgreSQL cluster).
# Each writes .devstack-test*/pytest.log; the logs are printed one after the other at the end,
# then one summary line. `make down-test` stops the stacks and deletes the OS users. Extra
# arguments go to every pytest run (e.g. `-x`).
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=(scripts/uv run --frozen --extra devstack)
export OPSFLOWS_PREFECT_PORT=0 OPSFLOWS_POSTGRES_PORT=0 OPSFLOWS_MOTO_PORT=0 OPSFLOWS_KUBE_PORT=0 \
  OPSFLOWS_APP_STAGING_PORT=0 OPSFLOWS_APP_PRODUCTION_PORT=0 OPSFLOWS_PROMETHEUS_PORT=0 \
  OPSFLOWS_WEBHOOK_PORT=0 OPSFLOWS_NODE_EXPORTER_PORT=0 OPSFLOWS_POSTGRES_EXPORTER_PORT=0 \
  OPSFLOWS_BLACKBOX_PORT=0 OPSFLOWS_ALERTMANAGER_PORT=0 OPSFLOWS_TLS_PORT=0 \
  OPSFLOWS_ALERT_FOR_S=5 OPSFLOWS_ALERT_GROUP_WAIT_S=1 OPSFLOWS_ALERT_GROUP_INTERVAL_S=5

groups=(reliability e2e served worker)
declare -A state=([reliability]=.devstack-test [e2e]=.devstack-test-e2e
  [served]=.devstack-test-served [worker]=.devstack-test-worker)
declare -A user=([reliability]=opsflows-test [e2e]=opsflows-test-e2e
  [served]=opsflows-test-served [worker]=opsflows-test-worker)
declare -A args=([reliability]="tests/reliability"
  [e2e]="tests/e2e tests/integration tests/unit" [served]="tests/served" [worker]="tests/served")
declare -A paths=([served]=serve [worker]=worker)
declare -A pid=()

start=$(date +%s)
for g in "${groups[@]}"; do
  env=(env OPSFLOWS_STATE_DIR="$PWD/${state[$g]}" OPSFLOWS_OS_USER="${user[$g]}"
    OPSFLOWS_TEST_RUNPATHS="${paths[$g]:-}")
  "${env[@]}" "${RUN[@]}" opsflows devstack up || { kill "${pid[@]}" 2>/dev/null; exit 1; }
  mkdir -p "${state[$g]}"
  # shellcheck disable=SC2086 # the group's test folders are words
  "${env[@]}" "${RUN[@]}" pytest ${args[$g]} "$@" >"${state[$g]}/pytest.log" 2>&1 &
  pid[$g]=$!
  echo "make test: group $g started (log: ${state[$g]}/pytest.log)"
done

rc=0
for g in "${groups[@]}"; do
  wait "${pid[$g]}" || rc=1
done

summary() { grep -E "[0-9]+ (passed|failed)" "$1" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//'; }
logs=()
for g in "${groups[@]}"; do
  echo
  echo "==================== group $g: ${args[$g]} (log: ${state[$g]}/pytest.log) ===================="
  cat "${state[$g]}/pytest.log"
  logs+=("${state[$g]}/pytest.log")
done
total() {
  local all=""
  for log in "${logs[@]}"; do all+=" $(summary "$log")"; done
  grep -Eo "[0-9]+ $1" <<<"$all" | awk '{n += $1} END {print n + 0}'
}
echo
parts=""
for g in "${groups[@]}"; do parts+="${parts:+; }$g: $(summary "${state[$g]}/pytest.log")"; done
echo "make test: $(total passed) passed, $(total failed) failed, $(total error) errors in" \
  "$(( $(date +%s) - start )) s ($parts)"
exit "$rc"
