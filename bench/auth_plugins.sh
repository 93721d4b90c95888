#!/usr/bin/env bash
# What each authentication and access plugin costs: one route per plugin, alone (acl after
# key-auth, as it needs a consumer), against a route with no plugin, on the same node in the
# same run. Two figures per route:
#   - req/s: the node natively on CPU 0, wrk (1 thread, 16 connections) on CPU 1, 3 runs of
#     5 s interleaved across the routes, median;
#   - instructions per request: the same node under callgrind, 5 s of load (user space).
#
#   cargo build --release -p tollgate && bash bench/auth_plugins.sh
#
# Installs valgrind, nginx, wrk and openssl when missing. Ports 18190-18199 on loopback must be
# free. Takes about five minutes.
set -euo pipefail

BIN=${TOLLGATE_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/tollgate}
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
cat >"$D/backend.conf" <<EOF
worker_processes 1; daemon off; user root; pid $D/backend.pid; error_log $D/backend.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
server { listen 127.0.0.1:$B; location / { default_type application/json; return 200 '{"status":"ok","service":"bench"}'; } } }
EOF
taskset -c 1 "$NGINX" -p "$D" -c "$D/backend.conf" >/dev/null 2>&1 &
pids+=($!)
disown $!

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
KEY=bench-key
BASIC="Basic $(printf 'bench:bench-password' | openssl base64 -A)"
JH=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
JP=$(printf '{"iss":"bench-iss","exp":4102444800}' | b64url)
JS=$(printf '%s.%s' "$JH" "$JP" | openssl dgst -sha256 -hmac bench-jwt-secret -binary | b64url)
JWT="Bearer $JH.$JP.$JS"
UA="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"

# The routes, and the request headers each needs.
ROUTES=(none key-auth basic-auth jwt hmac-auth key-auth+acl ip-restriction bot-detection)
headers_for() { # route -> wrk -H arguments, one per line
  case $1 in
    key-auth|key-auth+acl) echo "apikey: $KEY" ;;
    basic-auth) echo "Authorization: $BASIC" ;;
    jwt) echo "Authorization: $JWT" ;;
    hmac-auth)
      # Signed once: the date stays within the 300 s clock skew for the whole run.
      local date sig
      date=$(date -u +'%a, %d %b %Y %H:%M:%S GMT')
      sig=$(printf 'date: %s' "$date" | openssl dgst -sha256 -hmac bench-hmac-secret -binary | openssl base64 -A)
      echo "Date: $date"
      echo "Authorization: hmac username=\"bench\", algorithm=\"hmac-sha256\", headers=\"date\", signature=\"$sig\""
      ;;
    bot-detection) echo "User-Agent: $UA" ;;
    *) echo "X-Bench: none" ;;
  esac
}
path_for() { echo "/r-${1//+/-}"; }

start_node() { # prefix command (e.g. valgrind ...) in $@
  "$@" "$BIN" node --data-dir "$D/data-$RANDOM" --proxy-listen 127.0.0.1:$TP --admin-listen 127.0.0.1:$TA \
    --cluster-listen 127.0.0.1:18195 --gossip-listen 127.0.0.1:18196 --worker-threads 1 \
    --proxy-listen-tls off --admin-listen-tls off >"$D/tollgate.log" 2>&1 &
  NODE=$!
  pids+=($NODE)
  disown $NODE
  for _ in $(seq 600); do curl -sf http://127.0.0.1:$TA/status >/dev/null && return 0; sleep 0.2; done
  echo "node did not start" >&2; cat "$D/tollgate.log" >&2; exit 1
}

configure() {
  local A=http://127.0.0.1:$TA
  curl -sf -XPOST $A/services -d name=b -d url=http://127.0.0.1:$B >/dev/null
  curl -sf -XPOST $A/consumers -d username=bench >/dev/null
  curl -sf -XPOST $A/consumers/bench/key-auth -d key=$KEY >/dev/null
  curl -sf -XPOST $A/consumers/bench/basic-auth -d username=bench -d password=bench-password >/dev/null
  curl -sf -XPOST $A/consumers/bench/jwt -d key=bench-iss -d secret=bench-jwt-secret >/dev/null
  curl -sf -XPOST $A/consumers/bench/hmac-auth -d username=bench -d secret=bench-hmac-secret >/dev/null
  curl -sf -XPOST $A/consumers/bench/acls -d group=bench >/dev/null
  for r in "${ROUTES[@]}"; do
    local name=${r//+/-}
    curl -sf -XPOST $A/services/b/routes -d name="$name" -d "paths[]=$(path_for "$r")" >/dev/null
    case $r in
      none) ;;
      key-auth+acl)
        curl -sf -XPOST $A/routes/$name/plugins -d name=key-auth >/dev/null
        curl -sf -XPOST $A/routes/$name/plugins -d name=acl -d 'config.allow[]=bench' >/dev/null ;;
      ip-restriction)
        curl -sf -XPOST $A/routes/$name/plugins -d name=ip-restriction -d 'config.allow[]=127.0.0.0/8' >/dev/null ;;
      *) curl -sf -XPOST $A/routes/$name/plugins -d name="$r" >/dev/null ;;
    esac
  done
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

echo "## req/s (node on CPU 0, wrk on CPU 1, median of 3 x 5 s)"
start_node taskset -c 0
configure
check_200
declare -A rps
for r in "${ROUTES[@]}"; do run "$r" 2 >/dev/null; done
for round in 1 2 3; do
  for r in "${ROUTES[@]}"; do rps[$r]+="$(run "$r" 5) "; done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${rps[none]}" | median)
for r in "${ROUTES[@]}"; do
  m=$(echo "${rps[$r]}" | median)
  printf '%-16s %10.0f req/s  %5.2f x no plugin\n' "$r" "$m" "$(awk -v m="$m" -v b="$base" 'BEGIN {print m / b}')"
done
kill -9 $NODE

echo "## instructions per request (callgrind, user space)"
start_node valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$D/tg.cg"
configure
check_200
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
  printf '%-16s %8d requests %10d instructions/request\n' "$r" "$n" $((ir / n))
done
