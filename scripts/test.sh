#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine, then run it all:
# lint, types, and pytest (unit, integration against real PostgreSQL/Kafka-protocol, browser).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the suite uses, each with a file that shows it is there; installed only
# when missing (one `apt-get update` first).
need=()
want() { [ -e "$2" ] || need+=("$1"); }
want postgresql-15 /usr/lib/postgresql/15/bin/initdb
want chromium /usr/bin/chromium
want prometheus /usr/bin/promtool  # promtool check/test rules
want prometheus-alertmanager /usr/bin/prometheus-alertmanager
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff format --check services tests bench grafana
.venv/bin/ruff check services tests bench grafana
.venv/bin/mypy services
.venv/bin/python -m pytest "$@"
