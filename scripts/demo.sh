#!/usr/bin/env bash
# Install CallPulse and run the whole product embedded in one process with simulated traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e .
exec .venv/bin/callpulse run --simulate "$@"
