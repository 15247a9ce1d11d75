#!/usr/bin/env bash
# Builds jobpack's local OCI base image from Debian's packages, without any registry:
# debootstrap (minbase bookworm + python3 + pip), a wheel directory /opt/wheels that pip uses
# instead of an index (pip.conf), imported as localhost/jobpack-base:bookworm.
#
#   scripts/oci-base.sh      # into the image store podman/buildah use (CONTAINERS_STORAGE_CONF)
#
# The root file system is cached as a tarball (JOBPACK_OCI_CACHE, default
# /var/cache/jobpack-oci) so the ~1 minute debootstrap happens once per machine.
set -euo pipefail
cache=${JOBPACK_OCI_CACHE:-/var/cache/jobpack-oci}
image=localhost/jobpack-base:bookworm
mkdir -p "$cache"

# The Debian mirror apt already uses (a package registry), else Debian's default.
mirror=$(grep -hoE '^(URIs:|deb) *https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
  /etc/apt/sources.list 2>/dev/null | grep -oE 'https?://[^ ]+' | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

tarball="$cache/bookworm-minbase-python3.tar"
# One builder at a time: tests that need the image start this script at once, and each would
# otherwise debootstrap and rename the same file.
exec 9>"$cache/.lock"
flock 9
if [ ! -s "$tarball" ]; then
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-pip bookworm "$rootfs" "$mirror" \
    > "$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # pip never reaches an index: packages come from the image's wheel directory.
  mkdir -p "$rootfs/opt/wheels"
  printf '[global]\nno-index = true\nfind-links = /opt/wheels\nbreak-system-packages = true\n' \
    > "$rootfs/etc/pip.conf"
  # A small pure-Python wheel, made here (a wheel is a zip with a dist-info directory).
  python3 - "$rootfs/opt/wheels" <<'PY'
import base64, hashlib, sys, zipfile
name, ver = "jobpack_hello", "1.0"
files = {
    f"{name}/__init__.py": b"def greet(who):\n    return f'hello, {who}'\n",
    f"{name}-{ver}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: jobpack-hello\nVersion: {ver}\n".encode(),
    f"{name}-{ver}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: jobpack\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for p, b in files.items():
    d = base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode()
    record += f"{p},sha256={d},{len(b)}\n"
record += f"{name}-{ver}.dist-info/RECORD,,\n"
files[f"{name}-{ver}.dist-info/RECORD"] = record.encode()
with zipfile.ZipFile(f"{sys.argv[1]}/{name}-{ver}-py3-none-any.whl", "w") as z:
    for p, b in files.items():
        z.writestr(p, b)
PY
  tar -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

if ! podman image exists "$image" 2>/dev/null; then
  podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$image" > /dev/null
fi
echo "$image"
