#!/usr/bin/env bash
# Connect rate (figure (c)), A/B: two hubd builds alternating, mosquitto in every round.
#
#   bench/connect_ab.sh A_DIR B_DIR [rounds] [connects]
#
# A_DIR and B_DIR each hold hubd, hubctl and hubd-loadgen (copies of build/release/...). Every
# run uses B's generator, so the servers differ and the load does not; the generator's own CPU
# per connect is printed for each run too (run A_DIR's generator against B for its figure).
# Runs as root in a private network namespace (loopback only), like bench/run.sh: hubd on
# 127.0.0.2 (restarted for every run, on one data folder), mosquitto on 127.0.0.3 (bench/run.sh's
# configuration). Per run: connects/s, server CPU ms per connect (utime+stime from /proc),
# generator CPU ms per connect, server context switches per connect (perf stat, software event).
# Prints one line per run and the medians; record them in docs/benchmarks.md. LOADGEN_FLAGS (e.g.
# --fast-ec-decode) go to every measured generator run.
set -euo pipefail

a_dir=$(realpath "$1"); b_dir=$(realpath "$2")
rounds=${3:-3}
connects=${4:-5000}

if [[ -z "${HUBD_BENCH_NETNS:-}" ]]; then
  exec unshare --net env HUBD_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/hubd-connect-ab.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
hub_addr=127.0.0.2
mq_addr=127.0.0.3
loadgen=$b_dir/hubd-loadgen

start_hubd() {  # start_hubd DIR
  : > "$work/hubd.out"
  "$1/hubd" --data "$work/hubd" --hostname $hub_addr --listen $hub_addr --log-level warn > "$work/hubd.out" 2>&1 &
  hub_pid=$!; pids+=($hub_pid)
  for _ in $(seq 1 100); do grep -q "hubd ready" "$work/hubd.out" && return 0; sleep 0.1; done
  cat "$work/hubd.out"; exit 1
}
stop_hubd() { kill $hub_pid; wait $hub_pid 2>/dev/null || true; }

start_hubd "$b_dir"
cs=$("$b_dir/hubctl" --data "$work/hubd" connection-string)
ca=$work/hubd/ca.pem
"$loadgen" --scenario create --host $hub_addr --ca "$ca" --connection-string "$cs" \
  --devices "$connects" --devices-file "$work/devices.txt" >/dev/null
# Every device connects once, so each measured run finds its persistent session stored.
"$loadgen" --json --scenario connect --host $hub_addr --ca "$ca" --mode hubd --devices-file "$work/devices.txt" \
  --devices "$connects" --connect-concurrency 64 >/dev/null
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

measure() {  # measure LABEL HOST MODE PID: one connect run, one result line
  local label=$1 host=$2 mode=$3 pid=$4
  perf stat -x, -e context-switches -p "$pid" -o "$work/perf.txt" &
  local perf_pid=$!
  sleep 0.2
  "$loadgen" --json --scenario connect --host "$host" --ca "$ca" --mode "$mode" --server-pid "$pid" $LOADGEN_FLAGS \
    --devices-file "$work/devices.txt" --devices "$connects" --connect-concurrency 64 > "$work/run.json"
  kill -INT $perf_pid; wait $perf_pid 2>/dev/null || true
  python3 - "$label" "$work/run.json" "$work/perf.txt" <<'PY'
import json, sys
label, run, perf = sys.argv[1:]
r = json.load(open(run))
cs = 0
for line in open(perf):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[2] == "context-switches":
        cs = float(parts[0])
n = max(r["connects"], 1)
print(f"{label:10s} connects/s {r['connects_per_s']:7.0f}  server ms/connect {r['server_cpu_ms_per_connect']:.3f}  "
      f"loadgen ms/connect {r.get('loadgen_cpu_ms_per_connect', 0):.3f}  server cs/connect {cs / n:.2f}  errors {r['errors']}")
PY
}

for round in $(seq 1 "$rounds"); do
  for side in A B; do
    dir=$a_dir; [[ $side == B ]] && dir=$b_dir
    start_hubd "$dir"
    measure "hubd-$side" $hub_addr hubd $hub_pid | tee -a "$work/results.txt"
    stop_hubd
  done
  measure mosquitto $mq_addr mosquitto $mq_pid | tee -a "$work/results.txt"
done

echo "medians over $rounds rounds:"
python3 - "$work/results.txt" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label = line.split()[0]
    nums = dict((k, float(v)) for k, v in re.findall(r"([a-z /]+?) +([0-9.]+)(?=  |$)", line[11:]))
    rows.setdefault(label, []).append(nums)
for label, runs in rows.items():
    keys = runs[0].keys()
    print(f"{label:10s} " + "  ".join(f"{k.strip()} {statistics.median(r[k] for r in runs):.3f}" for k in keys))
PY
