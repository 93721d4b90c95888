#!/usr/bin/env bash
# What each traffic, transformation and observability plugin costs: one route per plugin,
# alone, against a route with no plugin, on the same node in the same run: req/s and
# instructions per request (bench/plugin_bench.sh says how). Then proxy-cache's hits against
# nginx's proxy_cache in front of the same backend, both on CPU 0, wrk on CPU 1, interleaved,
# median of 3 x 5 s.
#
#   cargo build --release -p tollgate && bash bench/traffic_plugins.sh
#
# Installs valgrind, nginx, wrk and openssl when missing. Ports 18190-18199 on loopback must be
# free. Takes about eight minutes.
NC=18197
# http-log's endpoint: a second nginx server on the backend.
EXTRA_NGINX="server { listen 127.0.0.1:18191; location / { return 200; } }"
. "$(dirname "$0")/plugin_bench.sh"

ROUTES=(none cors request-transformer response-transformer correlation-id request-size-limiting
        request-termination response-ratelimiting prometheus http-log file-log proxy-cache)
# ONLY="none file-log" measures some routes (and skips the nginx comparison unless listed).
if [ -n "${ONLY:-}" ]; then read -r -a ROUTES <<<"$ONLY"; fi

headers_for() { # route -> wrk -H lines
  case $1 in
    cors) echo "Origin: http://app.test" ;;
    *) echo "X-Bench: none" ;;
  esac
}

plugin() { # route name, then curl -d arguments
  local route=$1
  shift
  curl -sf -XPOST $A/routes/$route/plugins "$@" >/dev/null
}

configure() {
  curl -sf -XPOST $A/services -d name=b -d url=http://127.0.0.1:$B >/dev/null
  for r in "${ROUTES[@]}"; do
    curl -sf -XPOST $A/services/b/routes -d name="$r" -d "paths[]=$(path_for "$r")" >/dev/null
    case $r in
      none) ;;
      cors) plugin $r -d name=cors -d 'config.origins[]=http://app.test' -d config.credentials=true ;;
      request-transformer)
        plugin $r -d name=request-transformer -d 'config.add.headers[]=x-added:1' \
          -d 'config.add.querystring[]=q:1' -d 'config.remove.headers[]=x-bench' ;;
      response-transformer)
        plugin $r -d name=response-transformer -d 'config.add.headers[]=x-added:1' \
          -d 'config.add.json[]=added:yes' ;;
      request-termination)
        plugin $r -d name=request-termination -d config.status_code=200 -d config.message=ok ;;
      response-ratelimiting)
        plugin $r -d name=response-ratelimiting -d config.limits.video.minute=1000000000 ;;
      prometheus)
        plugin $r -d name=prometheus -d config.status_code_metrics=true -d config.latency_metrics=true \
          -d config.bandwidth_metrics=true -d config.per_consumer=true ;;
      http-log) plugin $r -d name=http-log -d config.http_endpoint=http://127.0.0.1:18191/log ;;
      file-log) plugin $r -d name=file-log -d config.path="$D/file.log" ;;
      proxy-cache) plugin $r -d name=proxy-cache -d config.strategy=memory ;;
      *) plugin $r -d name="$r" ;;
    esac
  done
}

plugin_bench
[[ " ${ROUTES[*]} " == *" proxy-cache "* ]] || exit 0

echo "## proxy-cache hits against nginx proxy_cache (proxy on CPU 0, wrk on CPU 1, median of 3 x 5 s)"
cat >"$D/cache.conf" <<CONF
worker_processes 1; daemon off; user root; pid $D/cache.pid; error_log $D/cache.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
proxy_cache_path $D/nginx-cache levels=1:2 keys_zone=bench:10m max_size=64m;
upstream b { server 127.0.0.1:$B; keepalive 64; }
server { listen 127.0.0.1:$NC;
  location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_cache bench; proxy_cache_valid 200 5m; add_header X-Cache-Status \$upstream_cache_status; } } }
CONF
taskset -c 0 "$NGINX" -p "$D" -c "$D/cache.conf" >/dev/null 2>&1 &
pids+=($!)
disown $!
start_node taskset -c 0
configure
check_200
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$NC/r-proxy-cache" && break; sleep 0.1; done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NC/r-proxy-cache")" = 200 ] || { echo "nginx cache: no 200" >&2; exit 1; }
hit() { # url -> X-Cache-Status of a second request
  curl -s -o /dev/null "$1"; curl -s -D - -o /dev/null "$1" | awk -F': ' 'tolower($1)=="x-cache-status" {print $2}' | tr -d '\r'
}
echo "hit check: tollgate $(hit http://127.0.0.1:$TP/r-proxy-cache), nginx $(hit http://127.0.0.1:$NC/r-proxy-cache)"
wrk_rps() { taskset -c 1 wrk -t1 -c16 -d"$2"s "$1" | awk '/Requests\/sec/ {print $2}'; }
wrk_rps "http://127.0.0.1:$TP/r-proxy-cache" 2 >/dev/null
wrk_rps "http://127.0.0.1:$NC/r-proxy-cache" 2 >/dev/null
tg="" ng=""
for round in 1 2 3; do
  tg+="$(wrk_rps "http://127.0.0.1:$TP/r-proxy-cache" 5) "
  ng+="$(wrk_rps "http://127.0.0.1:$NC/r-proxy-cache" 5) "
done
t=$(echo "$tg" | median) n=$(echo "$ng" | median)
printf 'tollgate proxy-cache hit %10.0f req/s\nnginx proxy_cache hit    %10.0f req/s\nratio                    %10.2f x\n' \
  "$t" "$n" "$(awk -v t="$t" -v n="$n" 'BEGIN {print t / n}')"
