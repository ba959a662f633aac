#!/usr/bin/env bash
# Creates (once) the Python virtualenv the test services and cross-checks use:
# moto's S3 server, and the independent Delta reader used to check sluice's tables.
# Reused when the pinned requirements have not changed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
REQ="$SCRIPTS_DIR/requirements-test.txt"
STAMP="$SLUICE_VENV/.requirements"
if [ -x "$SLUICE_VENV/bin/python" ] && cmp -s "$REQ" "$STAMP"; then exit 0; fi
command -v python3 >/dev/null || die "python3 is needed for the test services"
log "creating the Python environment in $SLUICE_VENV"
python3 -m venv "$SLUICE_VENV"
"$SLUICE_VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
cp "$REQ" "$STAMP"
