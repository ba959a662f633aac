#!/usr/bin/env bash
# Checks that the README's two commands share one build: every dependency that
# `cargo build --workspace` (scripts/demo) compiles resolves to the same features in the test
# build, so its compiled artifacts are reused. A test-only dependency that turns on a feature
# of a shared crate (serde's `alloc` did) makes the test build compile the tree again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
tree() { cargo tree --locked --workspace -e "$1" -f '{p} {f}' --prefix none 2>/dev/null | grep -v "($PWD" | sort -u; }
build=$(mktemp); test=$(mktemp)
trap 'rm -f "$build" "$test"' EXIT
tree no-dev,features >"$build"
tree features >"$test"
differ=$(comm -23 "$build" "$test")
if [ -n "$differ" ]; then
  log "these dependencies resolve to other features in the test build, so scripts/test would compile them (and everything above them) a second time:"
  printf '%s\n' "$differ" >&2
  die "give the workspace dependency the features the test build adds (Cargo.toml [workspace.dependencies])"
fi
log "the demo build and the test build share every dependency ($(wc -l <"$build") resolved)"
