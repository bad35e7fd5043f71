#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR SECONDS — runs every libFuzzer target of a -Dfuzzing=enabled build for
# SECONDS each, concurrently, starting from a copy of the committed seed corpus (the repository is never
# written to). Prints "fuzz <name>: PASS (<runs> runs)" or "fuzz <name>: FAIL" with the crash input per
# target and exits non-zero if any target failed.
set -u

if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build=$1
seconds=$2
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
targets=(message merged handshake websocket)

work=$(mktemp -d "${TMPDIR:-/tmp}/cogrid-fuzz.XXXXXX")
pids=()
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  dir="$work/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  if [ ! -x "$bin" ]; then
    echo "missing $bin (configure with -Dfuzzing=enabled and build first)" >"$dir/log"
    echo 127 >"$dir/rc"
    pids+=("")
    continue
  fi
  cp "$src/corpus/$t/"* "$dir/corpus/"
  (
    "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$dir/log" 2>&1
    echo $? >"$dir/rc"
  ) &
  pids+=("$!")
done
for pid in "${pids[@]}"; do
  [ -n "$pid" ] && wait "$pid"
done

failed=0
for t in "${targets[@]}"; do
  dir="$work/$t"
  rc=$(cat "$dir/rc" 2>/dev/null || echo 1)
  artifacts=("$dir"/artifacts/*)
  [ -e "${artifacts[0]}" ] || artifacts=()
  if [ "$rc" -eq 0 ] && [ ${#artifacts[@]} -eq 0 ]; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
    echo "fuzz $t: PASS (${runs:-?} runs)"
  else
    failed=1
    echo "fuzz $t: FAIL (exit $rc; log $dir/log)"
    grep -E '^(INVARIANT VIOLATED|  |==[0-9]+==ERROR|SUMMARY)' "$dir/log" | head -n 12 | sed 's/^/  /'
    for a in "${artifacts[@]}"; do
      echo "  artifact $a ($(stat -c %s "$a") bytes):"
      od -An -tx1 -v "$a" | head -n 64 | sed 's/^/   /'
    done
    [ ${#artifacts[@]} -eq 0 ] && tail -n 20 "$dir/log" | sed 's/^/  /'
  fi
done

if [ "$failed" -eq 0 ]; then
  rm -rf "$work"
else
  echo "fuzz: logs and artifacts kept in $work"
fi
exit "$failed"
