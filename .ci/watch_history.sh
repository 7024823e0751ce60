#!/usr/bin/env bash
# The fan-in's gate on main: `infermatrix watch HISTORY --kind KIND` for the kind this job merged
# (a CPU fan-in never fails on a GPU kind's series, nor the other way round).
#
#   .ci/watch_history.sh HISTORY KIND [SUMMARY]
#
# Exit: watch's own (0 fine, 1 a regression at the newest change point, 2 a history it cannot
# read), except that a kind with fewer complete runs than the gate needs (its first runs) is a
# notice and exit 0. The markdown table is appended to SUMMARY (default $GITHUB_STEP_SUMMARY).
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 HISTORY KIND [SUMMARY]" >&2; exit 2; }
history=$1 kind=$2 summary=${3:-${GITHUB_STEP_SUMMARY:-/dev/null}}
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
status=0
infermatrix watch "$history" --kind "$kind" 2>"$errors" | tee -a "$summary" || status=$?
cat "$errors" >&2
# the words commands/watch.py uses for a kind still short of runs (tests/test_workflows.py checks
# that it still says them)
if [ "$status" -eq 2 ] && grep -q "the gate needs at least" "$errors"; then
  echo "::notice::infermatrix watch: kind $kind is still collecting runs ($(tr '\n' ' ' < "$errors"))"
  status=0
fi
exit "$status"
