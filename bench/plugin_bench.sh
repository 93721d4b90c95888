# Shared by the per-plugin benchmarks (auth_plugins.sh, traffic_plugins.sh): a backend
# (nginx), one node, one route per entry of ROUTES, and two figures per route:
#   - req/s: the node natively on CPU 0, wrk (1 thread, 16 connections) on CPU 1, 3 runs of
#     5 s interleaved across the routes, median;
#   - instructions per request: the same node under callgrind, 5 s of load (user space).
# The caller defines ROUTES, `headers_for ROUTE` (wrk -H lines), `configure` (Admin API calls
# on $A) and optionally EXTRA_NGINX (more `server {}` blocks for the backend's config), then
# calls `plugin_bench`. Ports 18190-18199 on loopback must be free.
set -euo pipefail

BIN=${TOLLGATE_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/tollgate}
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release -p tollgate" >&2; exit 1; }
need=()
for tool in valgrind nginx wrk curl openssl taskset; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]/taskset/util-linux}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

D=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "nginx -p $D" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT

B=18190 TP=18193 TA=18194
A=http://127.0.0.1:$TA

start_backend() {
  cat >"$D/backend.conf" <<EOF
worker_processes 1; daemon off; user root; pid $D/backend.pid; error_log $D/backend.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
server { listen 127.0.0.1:$B; location / { default_type application/json; return 200 '{"status":"ok","service":"bench"}'; } }
${EXTRA_NGINX:-}
}
EOF
  taskset -c 1 "$NGINX" -p "$D" -c "$D/backend.conf" >/dev/null 2>&1 &
  pids+=($!)
  disown $!
}

path_for() { echo "/r-${1//+/-}"; }

start_node() { # prefix command (e.g. valgrind ...) in $@
  # The previous node (killed) may still hold the ports for a moment.
  for _ in $(seq 100); do curl -s -o /dev/null $A/status || break; sleep 0.1; done
  "$@" "$BIN" node --data-dir "$D/data-$RANDOM" --proxy-listen 127.0.0.1:$TP --admin-listen 127.0.0.1:$TA \
    --cluster-listen 127.0.0.1:18195 --gossip-listen 127.0.0.1:18196 --worker-threads 1 \
    --proxy-listen-tls off --admin-listen-tls off >"$D/tollgate.log" 2>&1 &
  NODE=$!
  pids+=($NODE)
  disown $NODE
  for _ in $(seq 600); do curl -sf $A/status >/dev/null && return 0; sleep 0.2; done
  echo "node did not start" >&2; cat "$D/tollgate.log" >&2; exit 1
}

wrk_args() { # route -> args
  local args=() line
  while IFS= read -r line; do args+=(-H "$line"); done < <(headers_for "$1")
  printf '%s\n' "${args[@]}"
}

run() { # route seconds -> requests/s (non-2xx is an error)
  local args=() line out
  while IFS= read -r line; do args+=("$line"); done < <(wrk_args "$1")
  out=$(taskset -c 1 wrk -t1 -c16 -d"$2"s "${args[@]}" "http://127.0.0.1:$TP$(path_for "$1")")
  if grep -q "Non-2xx" <<<"$out"; then echo "$1: non-2xx responses" >&2; echo "$out" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}

check_200() {
  for r in "${ROUTES[@]}"; do
    local args=() line
    while IFS= read -r line; do args+=("$line"); done < <(wrk_args "$r")
    for _ in $(seq 300); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "${args[@]}" "http://127.0.0.1:$TP$(path_for "$r")")" = 200 ] && continue 2
      sleep 0.2
    done
    echo "$r: no 200" >&2; exit 1
  done
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

plugin_bench() {
  start_backend
  echo "## req/s (node on CPU 0, wrk on CPU 1, median of 3 x 5 s)"
  start_node taskset -c 0
  configure
  check_200
  declare -A rps
  local r round base m
  for r in "${ROUTES[@]}"; do run "$r" 2 >/dev/null; done
  for round in 1 2 3; do
    for r in "${ROUTES[@]}"; do rps[$r]+="$(run "$r" 5) "; done
  done
  base=$(echo "${rps[none]}" | median)
  for r in "${ROUTES[@]}"; do
    m=$(echo "${rps[$r]}" | median)
    printf '%-22s %10.0f req/s  %5.2f x no plugin\n' "$r" "$m" "$(awk -v m="$m" -v b="$base" 'BEGIN {print m / b}')"
  done
  kill -9 $NODE

  echo "## instructions per request (callgrind, user space)"
  start_node valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$D/tg.cg"
  configure
  check_200
  local args line url out n f ir
  for r in "${ROUTES[@]}"; do
    args=()
    while IFS= read -r line; do args+=("$line"); done < <(wrk_args "$r")
    url="http://127.0.0.1:$TP$(path_for "$r")"
    wrk -t1 -c16 -d2s "${args[@]}" "$url" >/dev/null
    callgrind_control -z $NODE >/dev/null 2>&1
    callgrind_control -i on $NODE >/dev/null 2>&1
    out=$(wrk -t1 -c16 -d5s "${args[@]}" "$url")
    callgrind_control -i off $NODE >/dev/null 2>&1
    if grep -q "Non-2xx" <<<"$out"; then echo "$r: non-2xx responses" >&2; exit 1; fi
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    callgrind_control -d $NODE >/dev/null 2>&1
    sleep 1
    f=$(ls -t "$D"/tg.cg* | head -1)
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    printf '%-22s %8d requests %10d instructions/request\n' "$r" "$n" $((ir / n))
  done
  kill -9 $NODE
}
