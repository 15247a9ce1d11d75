#!/usr/bin/env bash
# GetJobLogs (gRPC) throughput next to the SSE log stream's, in one run: a release `jobpack
# serve` on 127.0.0.1 with TLS, client certificates and --grpc-listen; one job writes LOG_MB of
# output; Python clients (grpcio, from .venv) read it whole, one and ten at once.
# Usage: scripts/bench-logs.sh [LOG_MB]   (after scripts/setup.sh --tests; as root for the sandbox)
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-64}
py=.venv/bin/python
cargo build --release -p jobpack-server --locked --quiet
dir=$(mktemp -d /tmp/jobpack-bench-logs.XXXXXX)
server=""
stop() {
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap stop EXIT
mkdir -p "$dir/certs" "$dir/gen"
# Certificates with the stock openssl CLI.
(
  cd "$dir/certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=bench CA" \
    -keyout ca.key -out ca.pem 2>/dev/null
  leaf() {  # name CN OU ext
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2/OU=$3" \
      -keyout "$1.key.tmp" -out "$1.csr" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$1.key.tmp" -out "$1.key"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\n' "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
      -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  }
  leaf server localhost server serverAuth
  leaf admin bench admin clientAuth
)
token="jp_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
JOBPACK_ADMIN_TOKEN="$token" target/release/jobpack serve --listen 127.0.0.1:0 --data-dir "$dir/data" \
  --tls-cert "$dir/certs/server.pem" --tls-key "$dir/certs/server.key" --tls-client-ca "$dir/certs/ca.pem" \
  --grpc-listen 127.0.0.1:0 --default-limit log_bytes=4G >"$dir/out" 2>"$dir/err" &
server=$!
for _ in $(seq 100); do [ "$(wc -l < "$dir/out")" -ge 2 ] && break; sleep 0.1; done
http=$(sed -n 's|^jobpack listening on https://||p' "$dir/out")
grpc=$(sed -n 's/^jobpack gRPC listening on //p' "$dir/out")
[ -n "$http" ] && [ -n "$grpc" ] || { cat "$dir/err" >&2; exit 1; }
"$py" -m grpc_tools.protoc -Ijobpack-server/proto --python_out="$dir/gen" --grpc_python_out="$dir/gen" \
  jobpack-server/proto/joblet.proto
curl_() { curl -sS --cacert "$dir/certs/ca.pem" -H "Authorization: Bearer $token" "$@"; }
bytes=$((mb << 20))
id=$(curl_ -X POST "https://localhost:${http##*:}/v1/jobs" --resolve "localhost:${http##*:}:127.0.0.1" \
  -H 'content-type: application/json' \
  -d "{\"command\": \"yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234 | head -c $bytes\"}" |
  sed -n 's/.*"job_id":"\([^"]*\)".*/\1/p')
until curl_ --resolve "localhost:${http##*:}:127.0.0.1" "https://localhost:${http##*:}/v1/jobs/$id/status" | grep -q '"completed"'; do
  sleep 0.2
done
"$py" scripts/bench_logs.py "$http" "$grpc" "$dir/certs" "$dir/gen" "$id" "$bytes"
