#!/usr/bin/env bash
# Builds the `tollgate:latest` image without any container registry: the release binary, the
# shared libraries it loads (glibc's loader, libc, libm, libgcc_s and the NSS modules that
# name resolution needs), a minimal /etc, all packed into a tarball and `docker import`ed.
# Usage: docker/build-image.sh [--debug] [image-name]
#   --debug packs the debug build (what `cargo test` already built: CI's fault-injection run
#   uses it to avoid a second, release, compilation).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--debug" ]; then profile=debug; shift; fi
image="${1:-tollgate:latest}"

if [ "$profile" = release ]; then cargo build --release -p tollgate; else cargo build -p tollgate; fi
bin=target/$profile/tollgate

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{etc,tmp,data,lib64} && chmod 1777 "$root/tmp"
cp "$bin" "$root/tollgate"
strip "$root/tollgate" 2>/dev/null || true

copy_lib() {
  local src="$1" dst="$root$1"
  mkdir -p "$(dirname "$dst")"
  cp -L "$src" "$dst"
}
# Libraries the binary links, and the NSS modules glibc loads for /etc/hosts and DNS.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do copy_lib "$lib"; done
libdir="$(dirname "$(ldd "$bin" | grep -o '/[^ ]*libc.so.6')")"
for nss in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
  [ -e "$libdir/$nss" ] && copy_lib "$libdir/$nss"
done

cat > "$root/etc/nsswitch.conf" <<'NSS'
hosts: files dns
NSS
echo 'root:x:0:0:root:/:/tollgate' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
: > "$root/etc/hosts"

tar -C "$root" -c . | docker import \
  --change 'ENTRYPOINT ["/tollgate"]' \
  --change 'CMD ["node"]' \
  --change 'ENV TOLLGATE_DATA_DIR=/data' \
  --change 'WORKDIR /data' \
  --change 'EXPOSE 8000 8443 8001 7000 7946/udp' \
  - "$image" >/dev/null
echo "built $image from the $profile build ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
