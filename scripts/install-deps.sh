#!/usr/bin/env bash
# Install what opsflows needs on a fresh Debian machine: PostgreSQL, Prometheus, its exporters
# and Alertmanager from Debian's packages, uv from PyPI, then the locked Python environment.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql postgresql-contrib)
command -v pg_dump >/dev/null || need_apt+=(postgresql-client)
command -v pgbench >/dev/null || need_apt+=(postgresql-contrib)
command -v prometheus >/dev/null || need_apt+=(prometheus)
# The monitoring the devstack runs beside Prometheus (devstack/exporters.py, alertmanager.py).
command -v prometheus-node-exporter >/dev/null || need_apt+=(prometheus-node-exporter)
command -v prometheus-postgres-exporter >/dev/null || need_apt+=(prometheus-postgres-exporter)
command -v prometheus-blackbox-exporter >/dev/null || need_apt+=(prometheus-blackbox-exporter)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
# The TLS endpoint's self-signed certificate (devstack/tlsendpoint.py).
command -v openssl >/dev/null || need_apt+=(openssl)
# uv comes from PyPI (below): Debian's python3 has no pip unless python3-pip is installed.
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v zstd >/dev/null || need_apt+=(zstd)
command -v runuser >/dev/null || need_apt+=(util-linux)
# The browser tests (tests/e2e/test_ui_approval.py) drive Debian's Chromium with Playwright.
command -v chromium >/dev/null || need_apt+=(chromium)
# The scale-out guide's reverse proxy (docs/scale-out.md), proved by its integration test.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [[ " ${need_apt[*]} " == *" nginx "* ]]; then
    # Debian's nginx starts and enables a system nginx on port 80 as it installs; opsflows
    # only runs its own, unprivileged, on a free port (the test): stop and disable that one.
    invoke-rc.d nginx stop >/dev/null 2>&1 || true
    update-rc.d nginx disable >/dev/null 2>&1 || true
  fi
fi

if ! scripts/uv --version >/dev/null 2>&1; then
  echo "install-deps: installing uv from PyPI"
  # A Debian system Python refuses pip installs (PEP 668): uv is one static binary, so the
  # user install that PEP 668 allows with --break-system-packages touches no Debian package.
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv ||
    python3 -m pip install --quiet --user --break-system-packages uv
  command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
fi
UV=scripts/uv
# Compile bytecode at install: imports of the big clients are slow when every process recompiles.
UV_COMPILE_BYTECODE=1 "$UV" sync --frozen --quiet --extra devstack
