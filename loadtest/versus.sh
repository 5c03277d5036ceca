#!/usr/bin/env bash
# The official scenario, this checkout against an earlier commit, interleaved
# with floors between: floor, base, this, floor, this, base, floor, base, this,
# floor (docs/benchmarks-history.md, session 11, series N). Each run is
# `loadtest.bench` in its own checkout; ratios are computed from the printed
# p99s and floors.
#
#   loadtest/versus.sh <commit> [worktree dir]
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: loadtest/versus.sh <commit> [worktree dir]}
BASE_DIR=${2:-/tmp/rinha-versus-base}
PY=$PWD/.venv/bin/python
git worktree add -f "$BASE_DIR" "$REV" -q
trap 'git worktree remove --force "$BASE_DIR"' EXIT
floor() { $PY -m loadtest.bench --floor | grep -E "^run" | sed 's/^/FLOOR /'; }
base() { (cd "$BASE_DIR" && $PY -m loadtest.bench | grep -E "^run " | sed 's/^/BASE /'); }
this() { $PY -m loadtest.bench | grep -E "^run " | sed 's/^/THIS /'; }
floor; base; this; floor; this; base; floor; base; this; floor
