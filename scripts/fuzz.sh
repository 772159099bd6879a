#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang 14, ASan + UBSan) and runs each for a
# while, one after another, one process each (-jobs=1: the machine's cores are shared).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (or: make fuzz-run SECONDS=60 TARGETS="fuzz_sas")
#
# SECONDS per target (default 60); TARGETs default to every fuzz_* target. Each run starts from
# the checked-in seeds (tests/fuzz/corpus/<name>) plus what earlier runs found, kept in
# build/fuzz/work/<target> (not checked in; `make fuzz-merge`-style minimisation is up to you),
# with tests/fuzz/<name>.dict when there is one. A crash lands in build/fuzz/findings/<target>/
# and makes the script exit non-zero; the log of each run is build/fuzz/logs/<target>.log.
# The summary line per target gives libFuzzer's own figures: executions, cov (edges covered),
# ft (features), corpus size, executions per second.
#
# RUNS=N (environment) stops each target after N executions instead (SECONDS is then only an
# upper bound, and 0 means none): `RUNS=10000000 scripts/fuzz.sh 0 fuzz_sas` is a long run.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
runs=${RUNS:-}
limit=(-max_total_time="$seconds")
[ -n "$runs" ] && limit=(-runs="$runs" -max_total_time="$seconds")
all=(fuzz_mqtt fuzz_amqp fuzz_amqp_head fuzz_query fuzz_http fuzz_sas fuzz_twin_patch)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# The corpus folder and dictionary of a target (fuzz_amqp_head shares the AMQP seeds).
corpus_of() {
  case "$1" in
    fuzz_amqp_head) echo amqp ;;
    *) echo "${1#fuzz_}" ;;
  esac
}

[ -f build/fuzz/CMakeCache.txt ] || cmake --preset fuzz >/dev/null
cmake --build build/fuzz -j2 --target "${targets[@]}"

status=0
summary=()
for t in "${targets[@]}"; do
  name=$(corpus_of "$t")
  work=build/fuzz/work/$t
  findings=build/fuzz/findings/$t
  log=build/fuzz/logs/$t.log
  mkdir -p "$work" "$findings" build/fuzz/logs
  dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  [ -f "tests/fuzz/${t#fuzz_}.dict" ] && dict=(-dict="tests/fuzz/${t#fuzz_}.dict")
  echo "== $t: ${runs:+$runs runs, }$seconds s (corpus $work + tests/fuzz/corpus/$name ${dict[*]:-})"
  set +e
  # -rss_limit_mb: the HTTP target builds a whole hub per input; ASan's quarantine makes RSS grow.
  "build/fuzz/tests/fuzz/$t" "${limit[@]}" -print_final_stats=1 -rss_limit_mb=4096 \
    -artifact_prefix="$findings/" "${dict[@]}" "$work" "tests/fuzz/corpus/$name" >"$log" 2>&1
  rc=$?
  set -e
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1, ft \2, corpus \3/p' <<<"$last")
  speed=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)
  line="$t: ${execs:-?} executions, ${cov:-?}, ${speed:-?} exec/s"
  if [ $rc -ne 0 ]; then
    status=1
    line="$line — FINDING (exit $rc): $(ls -t "$findings" | head -1) (see $log)"
  fi
  echo "   $line"
  summary+=("$line")
done

echo
echo "== summary ($seconds s each)"
printf '%s\n' "${summary[@]}"
exit $status
