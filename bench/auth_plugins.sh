#!/usr/bin/env bash
# What each authentication and access plugin costs: one route per plugin, alone (acl after
# key-auth, as it needs a consumer), against a route with no plugin, on the same node in the
# same run: req/s and instructions per request (bench/plugin_bench.sh says how).
#
#   cargo build --release -p tollgate && bash bench/auth_plugins.sh
#
# Installs valgrind, nginx, wrk and openssl when missing. Ports 18190-18199 on loopback must be
# free. Takes about five minutes.
. "$(dirname "$0")/plugin_bench.sh"

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
configure() {
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

plugin_bench
