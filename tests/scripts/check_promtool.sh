#!/usr/bin/env bash
# The metrics exposition must satisfy Prometheus' own parser and linter.
# Two expositions are checked with `promtool check metrics`, which exits
# non-zero on a parse error or on any lint problem (missing help, counters
# without _total, non-base units...):
#   - test_metrics --render-sample: a registry populated with every kind of
#     family, awkward label values, NaN and +Inf, and collector families;
#   - test_admin --metrics-sample: a live /metrics fetched over HTTP from the
#     admin server, with the thread and lock gauges of the registry.
# Usage: check_promtool.sh <source dir> <build dir>
set -euo pipefail
build=${2:?usage: check_promtool.sh <source dir> <build dir>}

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found: install Debian's prometheus package" >&2
  exit 1
fi

check() {
  local bin="$build/tests/$1" flag=$2
  if [ ! -x "$bin" ]; then
    echo "$bin not built: run ninja -C $build $1" >&2
    exit 1
  fi
  local sample report
  sample=$("$bin" "$flag")
  if [ -z "$sample" ]; then
    echo "$1 $flag printed nothing" >&2
    exit 1
  fi
  # promtool prints lint problems on stdout and parse errors on stderr; show both.
  if ! report=$(printf '%s\n' "$sample" | promtool check metrics 2>&1) || [ -n "$report" ]; then
    printf 'promtool check metrics rejected %s %s:\n%s\n--- exposition ---\n%s\n' \
      "$1" "$flag" "$report" "$sample" >&2
    exit 1
  fi
  echo "promtool: $1 $flag: $(printf '%s\n' "$sample" | grep -c '^# TYPE') families, accepted"
}

check test_metrics --render-sample
check test_admin --metrics-sample
