#!/usr/bin/env bash
# Userland instructions per proxied request, Tollgate against nginx, counted by callgrind.
#
# Throughput on a shared 2-core VM moves by ±15 % from one minute to the next; instruction
# counts do not. This counts what each proxy executes in user space per request (the kernel's
# share is the same four socket calls for both and is not counted), for the same two cases as
# the `proxy` bench: no plugins, and an API-key check plus a rate limit that never rejects.
#
#   cargo build --release -p tollgate && bash bench/instructions.sh
#
# Installs valgrind, nginx and wrk from Debian packages when missing. Ports 18180-18189 on
# loopback must be free. Takes about a minute.
set -euo pipefail

BIN=${TOLLGATE_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/tollgate}
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release -p tollgate" >&2; exit 1; }
need=()
for tool in valgrind nginx wrk curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

D=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "nginx -p $D" 2>/dev/null || true
  # KEEP_CALLGRIND=DIR keeps the profiles, for callgrind_annotate.
  if [ -n "${KEEP_CALLGRIND:-}" ]; then mkdir -p "$KEEP_CALLGRIND" && cp "$D"/*.cg* "$KEEP_CALLGRIND"/ 2>/dev/null || true; fi
  rm -rf "$D"
}
trap cleanup EXIT

B=18180 NP=18181 NA=18182 TP=18183 TA=18184
KEY=bench-key
conf() { # name, master on|off, http block
  cat >"$D/$1.conf" <<EOF
worker_processes 1; master_process $2; daemon off; user root; pid $D/$1.pid; error_log $D/$1.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
$3
}
EOF
}
conf backend on "server { listen 127.0.0.1:$B; listen 127.0.0.2:$B; listen 127.0.0.3:$B; location / { default_type application/json; return 200 '{\"status\":\"ok\",\"service\":\"bench\"}'; } }"
conf proxy off "upstream backend { server 127.0.0.1:$B; keepalive 64; }
map \$http_apikey \$apikey_ok { default 0; \"$KEY\" 1; }
limit_req_zone \$binary_remote_addr zone=rl:1m rate=100000000r/s;
server { listen 127.0.0.1:$NP; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }
server { listen 127.0.0.1:$NA; location / { if (\$apikey_ok = 0) { return 401; } limit_req zone=rl burst=100000 nodelay;
  proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

wait_200() { # url
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "apikey: $KEY" "$1")" = 200 ] && return 0
    sleep 0.2
  done
  echo "no 200 from $1" >&2; exit 1
}

# One measurement: warm up, then count instructions over 5 s of load (16 connections).
measure() { # label, url, callgrind pid, out file prefix
  wrk -t1 -c16 -d2s -H "apikey: $KEY" "$2" >/dev/null
  callgrind_control -z "$3" >/dev/null 2>&1
  callgrind_control -i on "$3" >/dev/null 2>&1
  local n
  n=$(wrk -t1 -c16 -d5s -H "apikey: $KEY" "$2" | tee "$D/wrk.out" | awk '/requests in/ {print $1}')
  callgrind_control -i off "$3" >/dev/null 2>&1
  if grep -q "Non-2xx" "$D/wrk.out"; then echo "$1: non-2xx responses" >&2; exit 1; fi
  callgrind_control -d "$3" >/dev/null 2>&1
  sleep 1
  local f ir
  f=$(ls -t "$4"* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  printf '%-48s %8d requests %10d instructions/request\n' "$1" "$n" $((ir / n))
}

"$NGINX" -p "$D" -c "$D/backend.conf" >/dev/null 2>&1 &
pids+=($!)
disown $!

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$D/nginx.cg" \
  "$NGINX" -p "$D" -c "$D/proxy.conf" >"$D/nginx.log" 2>&1 &
NG=$!
pids+=($NG)
disown $NG
wait_200 "http://127.0.0.1:$NP/"
measure "nginx proxy" "http://127.0.0.1:$NP/" $NG "$D/nginx.cg"
measure "nginx apikey + limit_req" "http://127.0.0.1:$NA/" $NG "$D/nginx.cg"
kill -9 $NG

# The TLS listeners are off: this counts the plain path (binaries before them lack the flags).
tls_off=()
if "$BIN" node --help 2>/dev/null | grep -q -- --proxy-listen-tls; then
  tls_off=(--proxy-listen-tls off --admin-listen-tls off)
fi
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$D/tollgate.cg" \
  "$BIN" node --data-dir "$D/data" --proxy-listen 127.0.0.1:$TP --admin-listen 127.0.0.1:$TA \
  --cluster-listen 127.0.0.1:18185 --gossip-listen 127.0.0.1:18186 --worker-threads 1 \
  "${tls_off[@]}" >"$D/tollgate.log" 2>&1 &
TG=$!
pids+=($TG)
disown $TG
A=http://127.0.0.1:$TA
for _ in $(seq 600); do curl -sf $A/status >/dev/null && break; sleep 0.2; done
curl -sf -XPOST $A/services -d name=b -d url=http://127.0.0.1:$B >/dev/null
curl -sf -XPOST $A/services/b/routes -d name=plain -d 'paths[]=/' >/dev/null
curl -sf -XPOST $A/services/b/routes -d name=auth -d 'paths[]=/auth' >/dev/null
curl -sf -XPOST $A/routes/auth/plugins -d name=key-auth >/dev/null
curl -sf -XPOST $A/routes/auth/plugins -d name=rate-limiting -d config.minute=1000000000 \
  -d config.policy=local >/dev/null
curl -sf -XPOST $A/consumers -d username=bench >/dev/null
curl -sf -XPOST $A/consumers/bench/key-auth -d key=$KEY >/dev/null
# An upstream of three targets (the backend on three loopback addresses), round-robin.
curl -sf -XPOST $A/upstreams -d name=three.bench >/dev/null
for ip in 127.0.0.1 127.0.0.2 127.0.0.3; do
  curl -sf -XPOST $A/upstreams/three.bench/targets -d target=$ip:$B >/dev/null
done
curl -sf -XPOST $A/services -d name=u -d host=three.bench >/dev/null
curl -sf -XPOST $A/services/u/routes -d name=balanced -d 'paths[]=/balanced' >/dev/null
# Its peer: the same route shape (a prefix, stripped) to the backend directly.
curl -sf -XPOST $A/services/b/routes -d name=direct -d 'paths[]=/directly' >/dev/null
wait_200 "http://127.0.0.1:$TP/auth"
wait_200 "http://127.0.0.1:$TP/balanced"
measure "tollgate, no plugins" "http://127.0.0.1:$TP/" $TG "$D/tollgate.cg"
measure "tollgate key-auth + rate-limiting (local)" "http://127.0.0.1:$TP/auth" $TG "$D/tollgate.cg"
measure "tollgate, prefix route to one host" "http://127.0.0.1:$TP/directly" $TG "$D/tollgate.cg"
measure "tollgate, prefix route, 3 targets round-robin" "http://127.0.0.1:$TP/balanced" $TG "$D/tollgate.cg"
