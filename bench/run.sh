#!/usr/bin/env bash
# hubd against mosquitto, same machine, same run, same load generator (bench/loadgen).
#
#   bench/run.sh [quick|full|sustained]      (make bench / make bench-quick / make bench-sustained)
#
# sustained: only hubd, 1,000 devices publishing QoS 1 at 35,000 msgs/s in total for 5 minutes
# (the issue's "whole capacity of the largest IoT Hub"), reported with the slowest 10 s slice.
#
# Runs as root inside a private network namespace (loopback only, no port clashes with anything
# else on the machine). Builds the release preset, starts hubd (TLS, durable PUBACK) and
# mosquitto 2.0 (TLS, persistence on, password file) with the configs below, and prints each
# figure for hubd, mosquitto and their ratio. Record runs in docs/benchmarks.md.
set -euo pipefail

profile=${1:-full}
root=$(cd "$(dirname "$0")/.." && pwd)

if [[ -z "${HUBD_BENCH_NETNS:-}" ]]; then
  exec unshare --net env HUBD_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
# Many connections from one client address: widen the ephemeral port range (this namespace only).
sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
ulimit -n "$(ulimit -Hn)"  # 50k connections need more than the default 1024

# HUBD_BENCH_IDLE="10000 19500" overrides the idle connection counts of the profile.
case "$profile" in
  quick) duration=8;  warmup=3; devices=200;  idle_counts="2000";        connects=1000 ;;
  full)  duration=20; warmup=5; devices=1000; idle_counts="10000 50000"; connects=5000 ;;
  sustained) duration=${HUBD_BENCH_SUSTAINED_S:-300}; warmup=5; devices=1000; idle_counts=""; connects=0 ;;
  *) echo "usage: $0 [quick|full|sustained]" >&2; exit 2 ;;
esac
idle_counts=${HUBD_BENCH_IDLE:-$idle_counts}
# Each side of a connection needs a file descriptor, and without CAP_SYS_RESOURCE the hard
# limit cannot be raised: idle counts above it are measured at the largest count that fits.
fd_cap=$(( $(ulimit -Hn) - 500 ))
capped=""
for n in $idle_counts; do
  if (( n > fd_cap )); then
    echo "note: $n idle connections need $n file descriptors per process; the hard limit here is $(ulimit -Hn), so measuring $fd_cap instead" >&2
    n=$fd_cap
  fi
  capped="$capped $n"
done
idle_counts=$capped
method_devices=100; method_callers=8  # (e)
max_devices=$devices
for n in $idle_counts; do (( n > max_devices )) && max_devices=$n; done
(( connects > max_devices )) && max_devices=$connects
# (d)'s consumer on mosquitto logs in with the line after the publishers'.
(( devices + 1 > max_devices )) && max_devices=$((devices + 1))

echo "== building (release preset)"
cmake --preset release >/dev/null
cmake --build --preset release --target hubd hubctl hubd-loadgen >/dev/null
bin=$root/build/release
loadgen=$bin/bench/loadgen/hubd-loadgen

work=$(mktemp -d /tmp/hubd-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

hub_addr=127.0.0.2
mq_addr=127.0.0.3

start_hubd() {
  "$bin/src/server/hubd" --data "$work/hubd" --hostname $hub_addr --listen $hub_addr --log-level warn \
    > "$work/hubd.out" 2>&1 &
  hub_pid=$!; pids+=($hub_pid)
  for _ in $(seq 1 100); do grep -q "hubd ready" "$work/hubd.out" && return 0; sleep 0.1; done
  cat "$work/hubd.out"; exit 1
}
echo "== starting hubd on $hub_addr (data in $work/hubd)"
start_hubd
cs=$("$bin/src/cli/hubctl" --data "$work/hubd" connection-string)
ca=$work/hubd/ca.pem

echo "== creating $max_devices devices through the registry API"
"$loadgen" --scenario create --host $hub_addr --ca "$ca" --connection-string "$cs" \
  --devices "$max_devices" --devices-file "$work/devices.txt"

echo "== starting mosquitto on $mq_addr (TLS, persistence, passwords)"
mkdir -p "$work/mq"
# The same kind of certificate hubd uses: EC P-256, signed by hubd's CA.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/mq/server.key" 2>/dev/null
openssl req -new -key "$work/mq/server.key" -subj "/CN=$mq_addr" -out "$work/mq/server.csr" 2>/dev/null
printf "subjectAltName=IP:%s\n" $mq_addr > "$work/mq/ext.cnf"
openssl x509 -req -in "$work/mq/server.csr" -CA "$ca" -CAkey "$work/hubd/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/mq/ext.cnf" -out "$work/mq/server.pem" 2>/dev/null
awk '{print $1":"$2}' "$work/devices.txt" > "$work/mq/passwords"
mosquitto_passwd -U "$work/mq/passwords"
cat > "$work/mq/mosquitto.conf" <<CONF
# mosquitto drops root for user "mosquitto", who cannot read the private work folder.
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
# Nagle off, as hubd has it: otherwise small PUBACKs wait for the peer's delayed ACK.
set_tcp_nodelay true
CONF
start_mosquitto() {
  mosquitto -c "$work/mq/mosquitto.conf" > "$work/mq.out" 2>&1 &
  mq_pid=$!; pids+=($mq_pid)
  sleep 0.5
}
start_mosquitto
# Idle-memory runs start from fresh servers, so RSS growth is the connections' own.
restart_servers() {
  kill $hub_pid $mq_pid; wait $hub_pid $mq_pid 2>/dev/null || true
  start_hubd; start_mosquitto
}

run() {  # run NAME ARGS...: the generator against hubd, then mosquitto; prints JSON lines
  local name=$1; shift
  "$loadgen" --json --host $hub_addr --ca "$ca" --mode hubd --server-pid $hub_pid --connection-string "$cs" \
    --devices-file "$work/devices.txt" "$@" > "$work/$name.hubd.json"
  "$loadgen" --json --host $mq_addr --ca "$ca" --mode mosquitto --server-pid $mq_pid \
    --devices-file "$work/devices.txt" "$@" > "$work/$name.mosquitto.json"
}
get() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
row() {  # row LABEL NAME KEY [lower-is-better]
  local h m
  h=$(get "$work/$2.hubd.json" "$3"); m=$(get "$work/$2.mosquitto.json" "$3")
  python3 - "$1" "$h" "$m" <<'PY'
import sys
label, h, m = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ratio = f"{h / m:.2f}" if m else "n/a"
print(f"| {label} | {h:,.2f} | {m:,.2f} | {ratio} |")
PY
}

if [[ $profile == sustained ]]; then
  rate=${HUBD_BENCH_SUSTAINED_RATE:-35000}
  echo "== sustained: hubd, $devices devices, QoS 1, 256 B, $rate msgs/s for ${duration}s after ${warmup}s warm-up"
  "$loadgen" --json --host $hub_addr --ca "$ca" --mode hubd --server-pid $hub_pid \
    --devices-file "$work/devices.txt" --scenario throughput --devices "$devices" --qos 1 --size 256 \
    --inflight 16 --rate "$rate" --warmup "$warmup" --duration "$duration" > "$work/sustained.json"
  cat "$work/sustained.json"
  python3 - "$work/sustained.json" "$rate" "$duration" "$hub_pid" "$work/hubd" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
rate, secs, pid, data = float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)
print()
print("| figure | hubd |")
print("| --- | --- |")
print(f"| offered msgs/s (QoS 1, 256 B, {r['connections']} devices) | {rate:,.0f} |")
print(f"| acknowledged msgs/s over {secs} s | {r['msgs_per_s']:,.0f} |")
print(f"| slowest 10 s slice, msgs/s | {r['slowest_10s_msgs_per_s']:,.0f} |")
print(f"| server CPU µs/msg | {r['server_cpu_us_per_msg']:.2f} |")
print(f"| publish->PUBACK p50 / p99 / p99.9 ms | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['p999_ms']:.2f} |")
print(f"| errors | {r['errors']} |")
print(f"| hubd RSS at the end, MiB | {rss / 1024:,.0f} |")
print(f"| hubd data folder at the end, MiB | {disk / 2**20:,.0f} |")
print()
held = r['slowest_10s_msgs_per_s'] >= 0.99 * rate and r['errors'] == 0
print("sustained: " + ("held" if held else "NOT held") + f" ({rate:,.0f} msgs/s offered, slowest slice {r['slowest_10s_msgs_per_s']:,.0f})")
PY
  exit 0
fi

echo "== (a) D2C QoS 1 over TLS, $devices devices, 256 B, ${duration}s after ${warmup}s warm-up"
run qos1 --scenario throughput --devices "$devices" --qos 1 --size 256 --inflight 16 \
  --warmup "$warmup" --duration "$duration"
echo "== (c) connect rate, SAS over TLS, $connects connects"
# --fast-ec-decode: the generator's OpenSSL 3.0 decodes the server certificate's key with its
# legacy decoder (a third of the generator's CPU per connect otherwise); it still verifies the
# chain and the handshake signature. Both servers get the same generator. docs/benchmarks.md.
run connect --scenario connect --devices "$connects" --connect-concurrency 64 --fast-ec-decode
hub_max=$(get "$work/qos1.hubd.json" msgs_per_s)
half=$(python3 -c "print(int(float('$hub_max') / 2))")
echo "== (d) publish->PUBACK and publish->arrival latency at half of hubd's max ($half msgs/s)"
# --consumer: the generator also reads every message back (hubd: its Event Hubs-compatible
# endpoint over AMQP; mosquitto: a QoS 1 subscriber). Not at (a): at max, hubd delivers events
# behind the appends (seconds of backlog) and the consumer's CPU would lower the max itself.
run latency --scenario throughput --devices "$devices" --qos 1 --size 256 --inflight 16 --rate "$half" \
  --warmup "$warmup" --duration "$duration" --consumer
# hubd: HTTPS POST /twins/{id}/methods -> MQTT to the device -> its answer -> HTTP response;
# mosquitto: the same RPC over MQTT topics (rpc/<id>/req, rpc/<id>/res), QoS 0. methods.cpp.
# (run passes hubd the service connection string.)
echo "== (e) direct method round trip, $method_devices devices, $method_callers callers"
run method --scenario method --devices "$method_devices" --method-concurrency "$method_callers" \
  --warmup "$warmup" --duration "$duration"
for n in $idle_counts; do
  echo "== (b) $n idle TLS connections"
  restart_servers
  run "idle$n" --scenario idle --devices "$n" --duration 5
done

echo
echo "| figure | hubd | mosquitto | hubd / mosquitto |"
echo "| --- | --- | --- | --- |"
row "(a) QoS1 msgs/s" qos1 msgs_per_s
row "(a) server CPU µs/msg" qos1 server_cpu_us_per_msg
row "(a) loadgen CPU µs/msg" qos1 loadgen_cpu_us_per_msg
row "(a) p99 ms at max" qos1 p99_ms
row "(c) connects/s" connect connects_per_s
row "(c) server CPU ms/connect" connect server_cpu_ms_per_connect
row "(d) p50 ms at half max" latency p50_ms
row "(d) p99 ms at half max" latency p99_ms
row "(d) publish→arrival p50 ms" latency arrival_p50_ms
row "(d) publish→arrival p99 ms" latency arrival_p99_ms
row "(d) arrived / acknowledged" latency arrived_fraction
row "(d) consumer CPU µs/msg (in loadgen)" latency consumer_cpu_us_per_msg
for n in $idle_counts; do
  row "(b) KB per idle TLS connection at $n" "idle$n" kb_per_connection
  row "(b) seconds to open the $n" "idle$n" connect_s
done
row "(e) method calls/s, $method_callers callers" method calls_per_s
row "(e) method round trip p50 ms" method p50_ms
row "(e) method round trip p99 ms" method p99_ms
row "(e) server CPU µs/call" method server_cpu_us_per_call
row "(e) loadgen CPU µs/call" method loadgen_cpu_us_per_call
echo
echo "errors: hubd $(get "$work/qos1.hubd.json" errors)/$(get "$work/connect.hubd.json" errors)/$(get "$work/latency.hubd.json" errors)/$(get "$work/method.hubd.json" errors), mosquitto $(get "$work/qos1.mosquitto.json" errors)/$(get "$work/connect.mosquitto.json" errors)/$(get "$work/latency.mosquitto.json" errors)/$(get "$work/method.mosquitto.json" errors) (throughput/connect/latency/method)"
for side in hubd mosquitto; do
  python3 - "$work/latency.$side.json" "$side" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["arrived"] != r["acked_in_window"]:
    print(f"warning: {sys.argv[2]}: {r['arrived']} of {r['acked_in_window']} acknowledged messages arrived at the consumer")
PY
done
