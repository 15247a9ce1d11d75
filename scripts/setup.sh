#!/usr/bin/env bash
# Installs the system packages that building and testing jobpack need, on Debian or Ubuntu.
# Idempotent: installs only what is missing, so a second run does nothing and needs no network.
#   - build: a C compiler (libgit2 and libssh2 are built from source), pkg-config, OpenSSL headers
#   - tests: git (fixture repositories and `git daemon` on 127.0.0.1); python3, procps (ps) and
#     util-linux (unshare) used by jobs inside the sandbox tests
#   - benchmarks: curl, bc, python3; with --bench (scripts/bench.sh passes it) or --tests (its
#     smoke run): bubblewrap, the sandbox the first row compares with
#   - with --tests (scripts/test.sh passes it): chromium and chromium-driver for the dashboard
#     test (headless Chromium driven over WebDriver); buildah, podman, runc and debootstrap for
#     the OCI stage (a base image made from Debian's packages, artifacts built and run with
#     buildah); slurm-wlm and munge for the Slurm stage (a one-node cluster on loopback,
#     scripts/slurm-up.sh); python3-venv and schemathesis (pinned, from PyPI, into .venv) for the
#     API stage (scripts/schemathesis.sh); grpcio and grpcio-tools, standardwebhooks,
#     securesystemslib (pinned, from PyPI, into .venv) for the gRPC door's, the webhooks' and the
#     provenance tests; running the server does not need them
set -euo pipefail

packages=(git pkg-config libssl-dev gcc libc6-dev make ca-certificates curl bc python3 procps util-linux)
if [ "${1:-}" = "--tests" ] || [ "${1:-}" = "--bench" ]; then
  packages+=(bubblewrap)
fi
if [ "${1:-}" = "--tests" ]; then
  packages+=(chromium chromium-driver buildah podman runc debootstrap slurm-wlm munge python3-venv)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install Rust 1.89 or newer with rustup (https://rustup.rs)." >&2
  exit 1
fi
version=$(cargo --version | awk '{print $2}')
if [ "$(printf '%s\n' 1.89.0 "$version" | sort -V | head -n 1)" != 1.89.0 ]; then
  echo "setup: cargo $version is too old; jobpack needs Rust 1.89 or newer (rustup update)." >&2
  exit 1
fi

if [ "${1:-}" = "--tests" ]; then
  cd "$(dirname "$0")/.."
  schemathesis_version=4.32.5
  grpc_version=1.76.0
  if ! .venv/bin/schemathesis --version 2>/dev/null | grep -q "version $schemathesis_version\$"; then
    echo "setup: installing schemathesis $schemathesis_version into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
  fi
  # A gRPC client that is not jobpack's own code, for the gRPC door's test.
  if ! .venv/bin/python -c "import grpc, grpc_tools; assert grpc.__version__ == '$grpc_version'" 2>/dev/null; then
    echo "setup: installing grpcio and grpcio-tools $grpc_version into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "grpcio==$grpc_version" "grpcio-tools==$grpc_version"
  fi
  # DSSE envelopes checked by the Secure Systems Lab's own library (provenance test).
  sslib_version=1.6.0
  cryptography_version=50.0.2
  if ! .venv/bin/python -c "import importlib.metadata as m; assert m.version('securesystemslib') == '$sslib_version' and m.version('cryptography') == '$cryptography_version'" 2>/dev/null; then
    echo "setup: installing securesystemslib $sslib_version and cryptography $cryptography_version into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "securesystemslib==$sslib_version" "cryptography==$cryptography_version"
  fi
  # A webhook receiver that checks signatures with the Standard Webhooks project's own library.
  standardwebhooks_version=1.1.0
  if ! .venv/bin/python -c "import importlib.metadata as m; assert m.version('standardwebhooks') == '$standardwebhooks_version'" 2>/dev/null; then
    echo "setup: installing standardwebhooks $standardwebhooks_version into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "standardwebhooks==$standardwebhooks_version"
  fi
fi
