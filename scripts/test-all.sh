#!/usr/bin/env bash
# `make test`: every tier, in two pytest processes at once on two test stacks of their own.
#
#   served   tests/served (the runbooks through `deployments.serve` and a worker, as people run
#            them): stack .devstack-test-served, OS user opsflows-test-served
#   others   unit, integration, e2e, reliability: stack .devstack-test, OS user opsflows-test
#
# Both groups mostly wait (alerts' `for`, bakes, polling), so running them side by side takes
# about as long as the longer one. Each writes its own log; the served log is printed after
# the other group's output, then one summary line. `make down-test` stops both stacks and
# deletes both OS users. Extra arguments go to both pytest runs (e.g. `-x`).
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=(scripts/uv run --frozen --extra devstack)
export OPSFLOWS_PREFECT_PORT=0 OPSFLOWS_POSTGRES_PORT=0 OPSFLOWS_MOTO_PORT=0 OPSFLOWS_KUBE_PORT=0 \
  OPSFLOWS_APP_STAGING_PORT=0 OPSFLOWS_APP_PRODUCTION_PORT=0 OPSFLOWS_PROMETHEUS_PORT=0 \
  OPSFLOWS_WEBHOOK_PORT=0 OPSFLOWS_NODE_EXPORTER_PORT=0 OPSFLOWS_POSTGRES_EXPORTER_PORT=0 \
  OPSFLOWS_BLACKBOX_PORT=0 OPSFLOWS_ALERTMANAGER_PORT=0 OPSFLOWS_TLS_PORT=0 \
  OPSFLOWS_ALERT_FOR_S=5 OPSFLOWS_ALERT_GROUP_WAIT_S=1 OPSFLOWS_ALERT_GROUP_INTERVAL_S=5
others=(env OPSFLOWS_STATE_DIR="$PWD/.devstack-test" OPSFLOWS_OS_USER=opsflows-test)
served=(env OPSFLOWS_STATE_DIR="$PWD/.devstack-test-served" OPSFLOWS_OS_USER=opsflows-test-served)

# The stacks start one after the other (each creates its OS user and PostgreSQL cluster).
"${others[@]}" "${RUN[@]}" opsflows devstack up || exit 1
"${served[@]}" "${RUN[@]}" opsflows devstack up || exit 1

mkdir -p .devstack-test .devstack-test-served
served_log=.devstack-test-served/pytest.log
others_log=.devstack-test/pytest.log
start=$(date +%s)
"${served[@]}" "${RUN[@]}" pytest tests/served "$@" >"$served_log" 2>&1 &
served_pid=$!
"${others[@]}" "${RUN[@]}" pytest tests --ignore=tests/served "$@" 2>&1 | tee "$others_log"
others_rc=${PIPESTATUS[0]}
wait "$served_pid"
served_rc=$?

echo
echo "==================== tests/served (log: $served_log) ===================="
cat "$served_log"
summary() { grep -E "[0-9]+ (passed|failed)" "$1" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//'; }
total() { grep -Eo "[0-9]+ $1" <<<"$(summary "$others_log") $(summary "$served_log")" | awk '{n += $1} END {print n + 0}'; }
echo
echo "make test: $(total passed) passed, $(total failed) failed, $(total error) errors in" \
  "$(( $(date +%s) - start )) s (others: $(summary "$others_log"); served: $(summary "$served_log"))"
[ "$others_rc" -eq 0 ] && [ "$served_rc" -eq 0 ]
