#!/usr/bin/env bash
# A/B of hubd binaries against each other and mosquitto, in alternating rounds, with per-message
# counts that a busy machine does not blur much (syscalls, context switches per message, from
# `perf stat -p` over the measured window) beside CPU µs/msg and latency.
#
#   bench/ab.sh ROUNDS HUBD_A HUBD_B [-- loadgen throughput options]
#   e.g. bench/ab.sh 3 /tmp/hubd.old build/release/src/server/hubd -- --devices 200 --inflight 16 --rate 20000
#
# Each round runs A, B, then mosquitto (same loadgen, same devices). Each hubd run restarts hubd
# on the same data folder. Output: one line per run, then the medians per binary. With
# HUBD_AB_STAGES=1, hubd runs with HUBD_STAGE_STATS and the stage breakdown of each run's window
# is printed (bench/stage_stats.py); with HUBD_AB_MALLOC=1, malloc calls per message are counted
# (uprobe). HUBD_AB_DIR=DIR puts the data folders on another file system (default /tmp). Runs as
# root in a private network namespace.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${HUBD_BENCH_NETNS:-}" ]]; then
  exec unshare --net env HUBD_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
ulimit -n "$(ulimit -Hn)"

rounds=$1; shift
bins=()
while [[ $# -gt 0 && "$1" != "--" ]]; do bins+=("$(realpath "$1")"); shift; done
[[ "${1:-}" == "--" ]] && shift
extra=("$@")
warmup=${HUBD_AB_WARMUP:-3}
duration=${HUBD_AB_DURATION:-8}
devices=200
for ((i = 0; i < ${#extra[@]}; ++i)); do [[ "${extra[$i]}" == "--devices" ]] && devices=${extra[$((i + 1))]}; done

bin=$root/build/release
loadgen=${HUBD_AB_LOADGEN:-$bin/bench/loadgen/hubd-loadgen}
hubctl=${HUBD_AB_HUBCTL:-$bin/src/cli/hubctl}
work=$(mktemp -d "${HUBD_AB_DIR:-/tmp}/hubd-ab.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
hub_addr=127.0.0.2
mq_addr=127.0.0.3
events=task-clock,context-switches,cpu-migrations
for s in read write sendmsg recvfrom fdatasync futex epoll_wait; do events+=",syscalls:sys_enter_$s"; done
if [[ -n "${HUBD_AB_MALLOC:-}" ]]; then
  # malloc calls through a uprobe: counts are exact, but each costs ~1-2 µs, so CPU figures of
  # such runs are not comparable with runs without it.
  perf probe -l 2>/dev/null | grep -q probe_libc:malloc || perf probe -q -x "$(ldconfig -p | awk '/libc.so.6 .*x86-64/ {print $NF; exit}')" malloc
  events+=",probe_libc:malloc"
fi

start_hubd() {  # start_hubd BINARY
  if [[ -n "${HUBD_AB_STAGES:-}" ]]; then export HUBD_STAGE_STATS=$work/stages; else unset HUBD_STAGE_STATS; fi
  "$1" --data "$work/hubd" --hostname $hub_addr --listen $hub_addr --log-level warn > "$work/hubd.out" 2>&1 &
  hub_pid=$!; pids+=($hub_pid)
  for _ in $(seq 1 100); do grep -q "hubd ready" "$work/hubd.out" && return 0; sleep 0.1; done
  cat "$work/hubd.out"; exit 1
}
stop_hubd() { kill $hub_pid; wait $hub_pid 2>/dev/null || true; }

start_hubd "${bins[0]}"
cs=$("$hubctl" --data "$work/hubd" connection-string)
ca=$work/hubd/ca.pem
"$loadgen" --scenario create --host $hub_addr --ca "$ca" --connection-string "$cs" --devices "$devices" \
  --devices-file "$work/devices.txt" > /dev/null
stop_hubd

mkdir -p "$work/mq"
openssl ecparam -name prime256v1 -genkey -noout -out "$work/mq/server.key" 2>/dev/null
openssl req -new -key "$work/mq/server.key" -subj "/CN=$mq_addr" -out "$work/mq/server.csr" 2>/dev/null
printf "subjectAltName=IP:%s\n" $mq_addr > "$work/mq/ext.cnf"
openssl x509 -req -in "$work/mq/server.csr" -CA "$ca" -CAkey "$work/hubd/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/mq/ext.cnf" -out "$work/mq/server.pem" 2>/dev/null
awk '{print $1":"$2}' "$work/devices.txt" > "$work/mq/passwords"
mosquitto_passwd -U "$work/mq/passwords"
cat > "$work/mq/mosquitto.conf" <<CONF
user root
listener 8883 $mq_addr
cafile $ca
certfile $work/mq/server.pem
keyfile $work/mq/server.key
allow_anonymous false
password_file $work/mq/passwords
persistence true
persistence_location $work/mq/
max_connections -1
max_inflight_messages 0
max_queued_messages 100000
log_dest stderr
log_type error
CONF
mosquitto -c "$work/mq/mosquitto.conf" > "$work/mq.out" 2>&1 &
mq_pid=$!; pids+=($mq_pid)
sleep 0.5

measure() {  # measure LABEL MODE HOST PID: one loadgen run with perf stat over its window
  local label=$1 mode=$2 host=$3 pid=$4
  "$loadgen" --json --scenario throughput --qos 1 --size 256 --inflight 16 --host "$host" --ca "$ca" --mode "$mode" \
    --server-pid "$pid" --devices-file "$work/devices.txt" --warmup "$warmup" --duration "$duration" "${extra[@]}" \
    > "$work/run.json" &
  local lg=$!
  sleep "$warmup"
  [[ -n "${HUBD_AB_STAGES:-}" && $mode == hubd ]] && cp "$work/stages" "$work/stages.before" 2>/dev/null || true
  if [[ -n "${HUBD_AB_RECORD:-}" && $mode == hubd ]]; then
    # e.g. HUBD_AB_RECORD="-e probe_libc:malloc --call-graph dwarf,16384 -o /tmp/malloc.data": a profile
    # instead of the counts (the run's line then has no per-message counts).
    # shellcheck disable=SC2086
    perf record $HUBD_AB_RECORD -p "$pid" -- sleep "$duration" 2> /dev/null || true
    : > "$work/perf.csv"
  else
    perf stat -x, -e "$events" -p "$pid" -- sleep "$duration" 2> "$work/perf.csv" || true
  fi
  [[ -n "${HUBD_AB_STAGES:-}" && $mode == hubd ]] && { sleep 1.1; cp "$work/stages" "$work/stages.after"; } || true
  wait $lg || echo "loadgen exited with $? (run $label)" >&2
  python3 - "$label" "$work/run.json" "$work/perf.csv" "$duration" <<'PY' | tee -a "$work/results"
import json, sys
label, run, perf, duration = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3], float(sys.argv[4])
msgs = run["msgs_per_s"] * duration
c = {}
for line in open(perf):
    f = line.strip().split(",")
    if len(f) > 3 and f[0] and f[0][0].isdigit():
        c[f[2].replace("syscalls:sys_enter_", "").replace("probe_libc:", "")] = float(f[0])
per = lambda k: c.get(k, 0) / msgs if msgs else 0
out = {"label": label, "msgs_per_s": run["msgs_per_s"], "cpu_us": run["server_cpu_us_per_msg"],
       "gen_cpu_us": run["loadgen_cpu_us_per_msg"], "p50": run["p50_ms"], "p99": run["p99_ms"], "errors": run["errors"],
       "task_us": c.get("task-clock", 0) * 1e3 / msgs if msgs else 0, "cs": per("context-switches")}
for k in ["read", "write", "sendmsg", "recvfrom", "fdatasync", "futex", "epoll_wait", "malloc"]:
    out[k] = per(k)
print(json.dumps(out))
PY
  if [[ -n "${HUBD_AB_STAGES:-}" && $mode == hubd ]]; then python3 "$root/bench/stage_stats.py" "$work/stages.before" "$work/stages.after"; fi
}

if [[ -n "${HUBD_AB_IDLE:-}" ]]; then
  # Memory per idle TLS connection instead: HUBD_AB_IDLE=1 with --devices N in the options.
  # Fresh hubd per run, mosquitto restarted per round, as bench/run.sh does.
  for ((r = 1; r <= rounds; ++r)); do
    for ((b = 0; b < ${#bins[@]}; ++b)); do
      start_hubd "${bins[$b]}"
      echo "hubd$b $("$loadgen" --json --scenario idle --host $hub_addr --ca "$ca" --mode hubd --server-pid $hub_pid \
        --devices-file "$work/devices.txt" --duration 5 "${extra[@]}")"
      stop_hubd
    done
    kill $mq_pid; wait $mq_pid 2>/dev/null || true
    mosquitto -c "$work/mq/mosquitto.conf" > "$work/mq.out" 2>&1 &
    mq_pid=$!; pids+=($mq_pid); sleep 0.5
    echo "mosquitto $("$loadgen" --json --scenario idle --host $mq_addr --ca "$ca" --mode mosquitto --server-pid $mq_pid \
      --devices-file "$work/devices.txt" --duration 5 "${extra[@]}")"
  done
  exit 0
fi

for ((r = 1; r <= rounds; ++r)); do
  for ((b = 0; b < ${#bins[@]}; ++b)); do
    start_hubd "${bins[$b]}"
    measure "hubd$b" hubd $hub_addr $hub_pid
    stop_hubd
  done
  measure mosquitto mosquitto $mq_addr $mq_pid
done

echo "medians (per message unless named):"
python3 - "$work/results" <<'PY'
import json, statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line); rows[r["label"]].append(r)
keys = ["msgs_per_s", "cpu_us", "task_us", "gen_cpu_us", "p50", "p99", "cs", "read", "write", "fdatasync", "futex", "epoll_wait", "malloc", "errors"]
print("| " + " | ".join(["run"] + keys) + " |")
for label, rs in rows.items():
    vals = []
    for k in keys:
        xs = [r[k] for r in rs]
        m = statistics.median(xs)
        vals.append(f"{m:.0f}" if k == "msgs_per_s" else f"{m:.3f}" if m < 10 else f"{m:.1f}")
    print("| " + " | ".join([label] + vals) + " |")
PY
