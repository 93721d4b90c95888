#!/usr/bin/env bash
# Scales the Tollgate StatefulSet down to NEW_REPLICAS, one node at a time, highest ordinal
# first, and removes each node from the Raft membership once its pod is gone.
#
# Usage: deploy/kubernetes/scale-down.sh [-n NAMESPACE] [--keep-pvc] [--force] NEW_REPLICAS
#   -n NAMESPACE  the namespace of the StatefulSet (default: kubectl's current one)
#   --keep-pvc    keep the removed nodes' volumes (default: delete them, see below)
#   --force       allow NEW_REPLICAS = 2 (no fault tolerance left)
# Environment: TOLLGATE_ADMIN_TOKEN (default: read from the Secret tollgate-secrets, key
# admin-token), TOLLGATE_STATEFULSET (default tollgate), TOLLGATE_SECRET (tollgate-secrets).
# Needs kubectl, curl and jq.
#
# For each node K removed (pod tollgate-K is node id K, statefulset.yaml):
#   1. check the cluster has a leader and every other member is reachable;
#   2. `kubectl scale` the StatefulSet down by one and wait until pod tollgate-K is gone;
#   3. once gossip sees node K down, `DELETE /cluster/members/K` on the Admin API of the
#      lowest pod (port-forward + token), and check it stays out. Only after the pod is gone
#      and seen down: the leader adds any live node that still gossips back as a learner;
#   4. delete the PVC data-tollgate-K (unless --keep-pvc): a later scale-up then starts node K
#      afresh and it joins as a new learner, instead of coming back with a stale log.
#
# Why one at a time keeps a quorum. With M voters a quorum is floor(M/2)+1. Between steps 2
# and 3 the removed pod is gone but still a voter: M-1 of M voters are up, and
# M-1 >= floor(M/2)+1 holds for every M >= 3 (3: 2 >= 2; 4: 3 >= 3; 5: 4 >= 3), so the
# membership change of step 3 can commit. Removing two at once from M=4 would leave 2 < 3.
# Step 1 refuses to start a step while any other member is unreachable, since that member and
# the removed one together could be more than the cluster can lose.
# Never below 2: going from 2 voters to 1, the single remaining one is not a quorum of 2
# (floor(2/2)+1 = 2), so the removal could never commit. 2 itself has no fault tolerance
# (quorum 2 of 2): the script asks for --force. Keep 3 or more.
set -euo pipefail

sts="${TOLLGATE_STATEFULSET:-tollgate}"
secret="${TOLLGATE_SECRET:-tollgate-secrets}"
ns=()
keep_pvc=0
force=0
target=""

usage() { sed -n '5,12p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "scale-down: $*" >&2; exit 1; }
log() { echo "scale-down: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    -n|--namespace) [ $# -ge 2 ] || die "$1 needs a value"; ns=(-n "$2"); shift 2 ;;
    --keep-pvc) keep_pvc=1; shift ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$target" ] || die "one NEW_REPLICAS only"; target="$1"; shift ;;
  esac
done
[ -n "$target" ] || { usage >&2; exit 2; }
[[ "$target" =~ ^[0-9]+$ ]] || die "NEW_REPLICAS must be a number, got '$target'"
for tool in kubectl curl jq; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
if [ "$target" -lt 2 ]; then
  die "NEW_REPLICAS must be at least 2: removing the second-to-last voter can never commit"
fi
if [ "$target" -lt 3 ] && [ "$force" -ne 1 ]; then
  die "NEW_REPLICAS=$target leaves no fault tolerance (quorum 2 of 2); pass --force to do it anyway"
fi

k() { kubectl ${ns[@]+"${ns[@]}"} "$@"; }  # (the form bash 3.2, macOS's, accepts under set -u)

current="$(k get statefulset "$sts" -o jsonpath='{.spec.replicas}')"
start="$(k get statefulset "$sts" -o jsonpath='{.spec.ordinals.start}')"
start="${start:-0}"
[ "$start" -ge 1 ] || die "statefulset $sts has ordinals.start=$start; node ids are ordinals and must be > 0"
if [ "$target" -ge "$current" ]; then
  log "statefulset $sts has $current replicas; nothing to remove for $target"
  exit 0
fi
ready="$(k get statefulset "$sts" -o jsonpath='{.status.readyReplicas}')"
[ "${ready:-0}" -eq "$current" ] || die "only ${ready:-0} of $current pods are ready; fix that first"

token="${TOLLGATE_ADMIN_TOKEN:-}"
if [ -z "$token" ]; then
  token="$(k get secret "$secret" -o jsonpath='{.data.admin-token}' | base64 -d)"
fi
[ -n "$token" ] || die "no admin token (TOLLGATE_ADMIN_TOKEN, or key admin-token of secret $secret)"

# The Admin API of the lowest pod, which is never removed (NEW_REPLICAS >= 2).
anchor="$sts-$start"
pf_dir="$(mktemp -d)"
pf_pid=""
port=""
cleanup() {
  [ -z "$pf_pid" ] || kill "$pf_pid" 2>/dev/null || true
  rm -rf "$pf_dir"
}
trap cleanup EXIT

# (Re)starts `kubectl port-forward` to the anchor's Admin API on a free local port.
forward() {
  if [ -n "$pf_pid" ] && kill -0 "$pf_pid" 2>/dev/null; then return 0; fi
  : > "$pf_dir/out"
  # kubectl itself, not the k function: $! must be kubectl's pid for cleanup to stop it.
  kubectl ${ns[@]+"${ns[@]}"} port-forward "pod/$anchor" :8001 > "$pf_dir/out" 2>&1 &
  pf_pid=$!
  for _ in $(seq 50); do
    port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$pf_dir/out" | head -1)"
    [ -n "$port" ] && return 0
    kill -0 "$pf_pid" 2>/dev/null || break
    sleep 0.2
  done
  cat "$pf_dir/out" >&2
  die "cannot port-forward to pod/$anchor"
}

# admin METHOD PATH: the body goes to $pf_dir/body, the status code to $code. Runs in this
# shell (never inside $(...)), so the port-forward it may start is this shell's to stop.
code=""
admin() {
  forward
  code="$(curl -sS -o "$pf_dir/body" -X "$1" -H "Kong-Admin-Token: $token" \
    -w '%{http_code}' "http://127.0.0.1:$port$2")" || code="000"
}

# GET /cluster into $pf_dir/cluster (the anchor's view), or stop.
fetch_cluster() {
  for _ in 1 2 3; do
    admin GET /cluster
    if [ "$code" = 200 ]; then cp "$pf_dir/body" "$pf_dir/cluster"; return 0; fi
    log "GET /cluster: $code $(cat "$pf_dir/body" 2>/dev/null || true)"
    kill "$pf_pid" 2>/dev/null || true
    sleep 2
  done
  die "cannot read GET /cluster from pod/$anchor"
}

is_member() { # ID
  fetch_cluster
  jq -e --argjson id "$1" 'any(.members[]; .id == $id)' "$pf_dir/cluster" >/dev/null
}

# Removes member ID (its pod already gone), retrying while a new leader is elected (the
# removed node may have been the leader).
remove_member() {
  local id="$1"
  for attempt in $(seq 20); do
    if ! is_member "$id"; then
      log "node $id is no longer a member"
      return 0
    fi
    admin DELETE "/cluster/members/$id"
    if [ "$code" = 204 ]; then
      log "DELETE /cluster/members/$id: done"
    else
      log "DELETE /cluster/members/$id: $code $(cat "$pf_dir/body" 2>/dev/null || true) (attempt $attempt, retrying)"
      sleep 3
    fi
  done
  if is_member "$id"; then
    die "node $id is still a member; run this script again with the same NEW_REPLICAS"
  fi
}

# Waits until the anchor's gossip sees node ID as down, plus a margin for the leader's own
# failure detector: until then the leader would add the node back as a learner.
wait_unreachable() { # ID
  local id="$1"
  for _ in $(seq 60); do
    fetch_cluster
    if jq -e --argjson id "$id" 'all(.members[]; .id != $id or .reachable == false)' \
      "$pf_dir/cluster" >/dev/null; then
      sleep 5
      return 0
    fi
    sleep 1
  done
  die "node $id still looks reachable to gossip 60 s after its pod is gone"
}

# Members left over from an interrupted run (pod gone, still in Raft): remove them first.
highest=$((start + current - 1))
fetch_cluster
leftovers="$(jq -r --argjson h "$highest" \
  '.members[] | select(.id > $h and .reachable == false) | .id' "$pf_dir/cluster")"
for id in $leftovers; do
  log "node $id has no pod any more but is still a member: removing it"
  remove_member "$id"
done

while [ "$current" -gt "$target" ]; do
  id=$((start + current - 1))
  pod="$sts-$id"

  # 1. A leader, and every member but the one leaving reachable.
  fetch_cluster
  jq -e '.leader_id != null' "$pf_dir/cluster" >/dev/null || die "the cluster has no leader now"
  unreachable="$(jq -r --argjson id "$id" \
    '[.members[] | select(.id != $id and .reachable != true) | .id] | join(",")' "$pf_dir/cluster")"
  [ -z "$unreachable" ] || die "members $unreachable are unreachable: removing node $id now could cost the quorum"

  # 2. Scale down by one and wait for the pod to be gone.
  log "scaling $sts to $((current - 1)) (removes pod $pod, node $id)"
  k scale statefulset "$sts" --replicas=$((current - 1))
  if ! k wait --for=delete "pod/$pod" --timeout=180s; then
    if k get pod "$pod" >/dev/null 2>&1; then die "pod $pod is still there after 180 s"; fi
  fi

  # 3. Remove it from the Raft membership, once gossip sees it down; check it stays out.
  wait_unreachable "$id"
  remove_member "$id"
  sleep 5
  remove_member "$id"

  # 4. Its volume.
  if [ "$keep_pvc" -eq 0 ]; then
    k delete pvc "data-$pod" --ignore-not-found
  else
    log "kept pvc data-$pod: delete it before scaling up again, or node $id returns with its old log"
  fi
  current=$((current - 1))
done
log "done: $sts has $current replicas"
fetch_cluster
jq -c '{leader_id, members: [.members[] | {id, role, reachable}]}' "$pf_dir/cluster"
