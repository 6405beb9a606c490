#!/usr/bin/env bash
# The one real GPU check of issue 7, for a machine with an NVIDIA GPU, Go,
# and a python3 with torch (CUDA build). Under 4 minutes:
#   1. nvidia-smi's view (what the agent parses),
#   2. an all-in-one bai-server over a fresh data dir, whose agent detects
#      the GPU and advertises cuda.device and cuda.shares,
#   3. a session with -r cuda.device=1 prints torch.cuda.get_device_name(0),
#   4. a session with no GPU slot sees no device.
# Usage: deploy/gpu-check.sh   (exit 0: every check passed)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== nvidia-smi"
command -v nvidia-smi >/dev/null || fail "no nvidia-smi on PATH"
nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits

echo "== python3 and torch (the process runtime's python image runs /usr/bin/python3)"
/usr/bin/python3 -c 'import torch; print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())' ||
	fail "/usr/bin/python3 cannot import torch"

echo "== build"
mkdir -p bin
go build -o bin/bai ./tools/bai
go build -o bin/bai-server ./server/cmd/bai-server

data=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
bin/bai-server --data-dir "$data" --listen "127.0.0.1:$port" >"$data/server.log" 2>&1 &
server=$!
cleanup() {
	kill "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
	echo "== server log (last lines)"
	tail -n 20 "$data/server.log" || true
	rm -rf "$data" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 100); do
	[ -s "$data/credentials.env" ] && grep -q "agent ready" "$data/server.log" && break
	sleep 0.2
done
[ -s "$data/credentials.env" ] || fail "server wrote no credentials"
set -a
# shellcheck disable=SC1091
. "$data/credentials.env"
set +a
export BAI_NATS_URL="nats://127.0.0.1:$port"
grep -E "sandbox|GPU|agent ready" "$data/server.log" || true

echo "== session with -r cuda.device=1"
out=$(timeout 120 bin/bai run --rm -r cpu=1 -r mem=8g -r cuda.device=1 \
	-c 'import os, torch; print(os.environ.get("CUDA_VISIBLE_DEVICES")); print(torch.cuda.get_device_name(0))' python) ||
	fail "GPU session: $out"
echo "$out"
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
echo "$out" | grep -qF "$name" || fail "GPU session did not print the GPU's name ($name)"

echo "== session with no GPU slot"
out=$(timeout 120 bin/bai run --rm -r cpu=1 -r mem=4g \
	-c 'import torch; print("devices:", torch.cuda.device_count(), "available:", torch.cuda.is_available())' python) ||
	fail "CPU session: $out"
echo "$out"
echo "$out" | grep -qF "devices: 0 available: False" || fail "a session without a GPU slot sees a GPU"

echo "PASS: GPU advertised, given to the session that asked, hidden from the one that did not"
