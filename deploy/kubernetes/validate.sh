#!/usr/bin/env bash
# Validates every manifest in this folder offline against the Kubernetes OpenAPI schemas that
# the PyPI package kubernetes-validate bundles (no cluster needed). Strict: unknown fields fail.
# Exits non-zero on any invalid manifest, on a resource whose kind has no schema (the tool only
# warns about those), on a file with no resource, and when kustomization.yaml and the files
# here disagree.
#
# Usage: deploy/kubernetes/validate.sh
# Environment: KUBE_VERSIONS (default "1.30.0 1.37.0": the oldest Kubernetes these manifests
# support, and the newest schemas the package has), KV_VENV (where the tool is installed,
# default $TMPDIR/tollgate-kubernetes-validate-1.37.0; reused when present).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kv_version=1.37.0
versions="${KUBE_VERSIONS:-1.30.0 1.37.0}"
venv="${KV_VENV:-${TMPDIR:-/tmp}/tollgate-kubernetes-validate-$kv_version}"

if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$kv_version" ]; then
  echo "installing kubernetes-validate==$kv_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
kv="$venv/bin/kubernetes-validate"
py="$venv/bin/python"

failed=0
fail() { echo "FAIL $*"; failed=1; }

# The manifests: every .yaml here but the kustomization itself.
manifests=()
for f in "$here"/*.yaml; do
  f="$(basename "$f")"
  [ "$f" = kustomization.yaml ] || [ "$f" = '*.yaml' ] || manifests+=("$f")
done
[ "${#manifests[@]}" -gt 0 ] || { echo "FAIL no manifests in $here"; exit 1; }

# kustomization.yaml lists exactly these files.
if ! (cd "$here" && "$py" - "${manifests[@]}" <<'PY'
import sys, yaml
k = yaml.safe_load(open("kustomization.yaml"))
listed, present = set(k.get("resources") or []), set(sys.argv[1:])
for f in sorted(listed - present):
    print(f"FAIL kustomization.yaml lists {f}, which is not here")
for f in sorted(present - listed):
    print(f"FAIL {f} is not listed in kustomization.yaml")
sys.exit(1 if listed != present else 0)
PY
); then failed=1; fi

# Schema validation. The tool exits 0 when it has no schema for a kind (a typo in `kind`,
# a CRD): its WARN lines count as failures here.
kargs=(--strict)
for v in $versions; do kargs+=(-k "$v"); done
rc=0
out="$(cd "$here" && "$kv" "${kargs[@]}" "${manifests[@]}" 2>&1)" || rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "kubernetes-validate exited $rc"
if grep -Eq '^(WARN|ERROR|FATAL)' <<<"$out"; then fail "kubernetes-validate reported problems"; fi
for f in "${manifests[@]}"; do
  grep -q "^INFO $f passed" <<<"$out" || fail "$f: none of its resources passed"
done

# The kustomization as kubectl renders it (offline), when kubectl is here.
if command -v kubectl >/dev/null; then
  rc=0
  rendered="$(kubectl kustomize "$here" 2>&1)" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "$rendered"
    fail "kubectl kustomize exited $rc"
  else
    rc=0
    tmp="$(mktemp -d)"
    printf '%s\n' "$rendered" > "$tmp/kustomize-output.yaml"
    out="$("$kv" "${kargs[@]}" --quiet "$tmp/kustomize-output.yaml" 2>&1)" || rc=$?
    rm -rf "$tmp"
    [ -z "$out" ] || echo "$out"
    if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
      fail "the rendered kustomization does not validate"
    else
      echo "INFO kubectl kustomize output passed ($(grep -c '^kind:' <<<"$rendered") resources)"
    fi
  fi
fi

# The scripts at least parse.
for s in "$here"/*.sh; do bash -n "$s" || fail "$(basename "$s") has a syntax error"; done

if [ "$failed" -ne 0 ]; then
  echo "validation FAILED"
  exit 1
fi
echo "all manifests valid (Kubernetes $versions, strict)"
