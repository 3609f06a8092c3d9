#!/usr/bin/env bash
# Prints the figures of the serve benchmark (issue 3): `protoforge serve`
# against nginx serving the same files exported to disk, with wrk.
#
#   benches/serve.sh [N]      N submissions on the branch (default 10000)
#
# Environment: REPO (reuse a site repo kept from an earlier run), DURATION (wrk -d, default 20s), CONNS (default 64),
# ROUNDS (A/B rounds per scenario, default 2, ordered ABBA...),
# PIN (1: servers on CPU 1, wrk on CPU 0; default 1 when there are 2+ CPUs),
# PF_LOG (protoforge's PROTOFORGE_LOG, default warn), KEEP=1 keeps the temp dir,
# SCENARIOS (default "index index-gzip png all-sites"), BUILD=0 skips cargo build.
#
# Scenarios: index.html of one site (identity, then gzip), a ~100 KB PNG of
# one site, and index.html of every site in turn (Host rotated by a wrk Lua
# script, so protoforge's cache and git reader are exercised, not only one
# cached site). Prints figures only; no pass/fail.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-10000}
duration=${DURATION:-20s}
conns=${CONNS:-64}
rounds=${ROUNDS:-2}
pf_log=${PF_LOG:-warn}
cpus=$(nproc)
pin=${PIN:-$([ "$cpus" -ge 2 ] && echo 1 || echo 0)}

# 1. Tools and binary.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The Debian package may start its own nginx on :80; stop only that one.
  if [ -s /run/nginx.pid ]; then kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ "${BUILD:-1}" = 0 ] || cargo build --release --quiet
bin=$PWD/target/release/protoforge

work=$(mktemp -d /tmp/protoforge-serve-bench.XXXXXX)
chmod 755 "$work"
pf_pid=""
ngx_pid=""
cleanup() {
  local pid
  for pid in "$pf_pid" "$ngx_pid"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "$pf_pid" "$ngx_pid"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "== protoforge serve benchmark: $n sites, wrk -c$conns -d$duration, $rounds A/B round(s) per scenario"
echo "   machine: $cpus CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine adds noise)"
echo "   binary: $bin ($(git log -1 --format=%h 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ', with uncommitted changes'))"

# 2. The site repo: N varied submissions and one with a ~100 KB PNG
# (REPO=dir reuses a repo an earlier run built with KEEP=1).
repo=${REPO:-$work/repo}
if [ -n "${REPO:-}" ] && git -C "$repo" rev-parse -q --verify prototypes >/dev/null; then
  echo "reusing $repo"
else
"$bin" init "$repo" >/dev/null
python3 - "$repo/inbox" "$n" <<'PY'
import json, os, random, struct, sys, zlib
inbox, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
kinds = [
    "sourdough bakery with a menu (rye, buns, cakes) and opening hours (Tue-Sun 7am-3pm)",
    "invoicing app for freelancers, pricing (free / pro $12 / team $29), features and a signup form",
    "dental clinic with services (cleaning, implants, kids) and an appointment form",
    "photography portfolio with a gallery of projects and a short bio",
    "dog walking business, group walks and solo walks, prices and booking",
    "neighbourhood cafe serving espresso, cakes and brunch on weekends",
    "bike repair shop, services and prices, open Mon-Sat 9am-6pm",
    "non-profit food bank looking for volunteers and donations",
    "yoga studio with a class schedule, teachers and membership prices",
    "music festival in June with a line-up, tickets and a map",
]
towns = ["Lisbon", "Porto", "Leeds", "Lyon", "Graz", "Utrecht", "Cork", "Turku", "Brno", "Ghent"]
moods = ["warm", "minimal", "playful", "elegant", "bold"]
def w(name, doc):
    with open(os.path.join(inbox, name), "w") as f:
        for k, v in doc.items():
            f.write(f"{k}: {json.dumps(v)}\n")
for i in range(1, n + 1):
    kind = kinds[i % len(kinds)]
    doc = {
        "company": f"Bench {i}",
        "description": f"We are a {kind} in {rng.choice(towns)}. Number {i}. "
        + " ".join(rng.choice(["Family run since 1990.", "Friendly team.", "Free parking.",
                               "Book online.", "Local produce.", "Call us any time."])
                   for _ in range(rng.randint(1, 6))),
        "submitted_at": f"2026-11-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
    }
    if i % 3 == 0:
        doc["style"] = {"colors": [f"#{rng.randrange(1 << 24):06x}"], "mood": rng.choice(moods)}
    if i % 4 == 0:
        doc["pages"] = ["home", "about", "contact"]
    w(f"bench-{i}.yaml", doc)

# A valid ~100 KB PNG: random RGB pixels, so deflate can't shrink it.
side = 184
raw = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
os.makedirs(os.path.join(inbox, "attachments", "big"), exist_ok=True)
with open(os.path.join(inbox, "attachments", "big", "photo.png"), "wb") as f:
    f.write(png)
w("big-photo.yaml", {
    "company": "Big Photo Studio",
    "description": "We are a photography studio; show our big photo on the home page.",
    "submitted_at": "2026-10-31T00:00:00Z",
    "attachments": [{"path": "attachments/big/photo.png", "kind": "image", "description": "photo"}],
})
PY

start=$(date +%s.%N)
build_rc=0
"$bin" -C "$repo" build --once >"$work/build.out" 2>"$work/build.err" || build_rc=$?
echo "build --once over $((n + 1)) submissions: $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s, exit $build_rc"
[ "$build_rc" -eq 0 ] || { echo "   (last lines of stderr:)"; tail -n 3 "$work/build.err" | sed 's/^/   /'; }
fi
git -C "$repo" ls-tree --name-only prototypes sites/ | sed 's|^sites/||' >"$work/ids"
sites=$(wc -l <"$work/ids")
echo "sites on the branch: $sites; .git/objects: $(du -sh "$repo/.git/objects" | cut -f1) ($(git -C "$repo" count-objects -v | awk '/^count:/ {l=$2} /^in-pack:/ {p=$2} END {print l " loose, " p " packed"}'))"

big_path=$(git -C "$repo" ls-tree -r --name-only prototypes sites/ | grep '/assets/images/photo\.png$' | head -n 1 || true)
[ -n "$big_path" ] || { echo "the photo site was not built; see $work/build.err" >&2; KEEP=1; exit 2; }
big_id=$(echo "$big_path" | cut -d/ -f2)
big_url=/${big_path#sites/"$big_id"/}
idx_id=$(grep -v "^$big_id\$" "$work/ids" | sed -n "$(( (sites + 1) / 2 ))p")
size_of() { git -C "$repo" cat-file -s "prototypes:sites/$1"; }
echo "index site: $idx_id (index.html $(size_of "$idx_id/index.html") B); asset: $big_id$big_url ($(size_of "$big_id$big_url") B)"
sed 's/$/.localhost/' "$work/ids" >"$work/hosts"

# 3. The same files on disk, served by nginx with the same headers.
"$bin" -C "$repo" export --out "$work/export" >/dev/null
# protoforge keeps each file's gzip form once made; give nginx the same
# chance: a .gz beside every text file, served by gzip_static.
find "$work/export" -type f \( -name '*.html' -o -name '*.css' -o -name '*.js' -o -name '*.svg' \) \
  -size +255c -print0 | xargs -0 -r -P "$cpus" -n 500 gzip -6 -k -n
chmod -R a+rX "$work/export"
csp=$(sed -n 's/^pub const CSP: &str = "\(.*\)";$/\1/p' src/serve.rs)
[ -n "$csp" ] || { echo "cannot read the CSP from src/serve.rs" >&2; exit 2; }
ngx_port=$(free_port)
pf_port=$(free_port)
mkdir -p "$work/nginx-tmp"
cat >"$work/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log off;
  server_tokens off;
  client_body_temp_path $work/nginx-tmp/body;
  proxy_temp_path $work/nginx-tmp/proxy;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 30s;
  keepalive_requests 1000000;
  etag on;
  charset utf-8;
  charset_types text/css text/plain text/javascript application/javascript application/json application/xml image/svg+xml;
  gzip_static on;
  gzip on;
  gzip_comp_level 6;
  gzip_min_length 256;
  gzip_vary on;
  gzip_types text/css text/plain text/javascript application/javascript application/json application/xml application/manifest+json image/svg+xml;
  map \$uri \$pf_cache_control {
    ~\.html\$ "no-cache";
    default   "public, no-cache";
  }
  server {
    listen 127.0.0.1:$ngx_port default_server;
    server_name ~^(?<id>[a-z0-9-]+)\.localhost\$;
    root $work/export/\$id;
    index index.html;
    add_header Content-Security-Policy "$csp" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header Referrer-Policy "no-referrer" always;
    add_header X-Robots-Tag "noindex" always;
    add_header Cache-Control \$pf_cache_control always;
    location ~ (^|/)\. { return 404; }
    location ~ ^/metadata\.json\$ { return 404; }
  }
}
EOF

server_cpu=() wrk_cpu=()
# One wrk thread per CPU it has: two threads on one pinned CPU preempt each
# other, and a request waiting out the other's 4 ms time slice showed up as
# a ~4.3 ms p99 for whichever server made wrk busier (measured: with -t1 the
# same servers gave p99s of 1.0-1.6 ms and 2.1-2.4 ms).
wrk_threads=2
if [ "$pin" = 1 ]; then server_cpu=(taskset -c 1) wrk_cpu=(taskset -c 0) wrk_threads=1; fi

# 4. Both servers.
"${server_cpu[@]}" "$nginx_bin" -c "$work/nginx.conf" -e "$work/nginx-error.log" &
ngx_pid=$!
t0=$(date +%s.%N)
"${server_cpu[@]}" env PROTOFORGE_LOG="$pf_log" PROTOFORGE_SERVE__LISTEN="127.0.0.1:$pf_port" \
  "$bin" -C "$repo" serve --no-build 2>"$work/protoforge.log" &
pf_pid=$!
ready=""
for _ in $(seq 1 1200); do
  if curl -sf -o /dev/null "http://127.0.0.1:$pf_port/healthz"; then ready=1; break; fi
  kill -0 "$pf_pid" 2>/dev/null || break
  sleep 0.05
done
[ -n "$ready" ] || { echo "protoforge did not become ready; log:" >&2; tail "$work/protoforge.log" >&2; exit 2; }
echo "protoforge ready (/healthz 200) after $(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN{printf "%.2f", e-s}') s"
for _ in $(seq 1 100); do
  curl -s -o /dev/null -H "Host: $idx_id.localhost" "http://127.0.0.1:$ngx_port/" && break
  sleep 0.05
done

rss() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f MiB", k/1024}'; }
echo "protoforge RSS at start: $(mib "$(rss "$pf_pid" VmRSS)")"

if [ "$pin" = 1 ]; then
  echo "fairness: both servers pinned to CPU 1 (taskset; nginx worker_processes 1, protoforge's tokio"
  echo "          runtime sees 1 CPU), wrk pinned to CPU 0; one server runs at a time, the other idles"
else
  echo "fairness: no pinning (PIN=0): wrk and the server share all $cpus CPUs; nginx worker_processes 1"
fi
echo "logging: protoforge PROTOFORGE_LOG=$pf_log (its per-request access line is info, so off), nginx access_log off"
echo "nginx: same CSP/nosniff/Referrer-Policy/X-Robots-Tag/Cache-Control via add_header always, etag on,"
echo "       gzip_static with .gz files made at export (gzip -6; protoforge caches its gzip -6 too), gzip on"
echo "       as fallback, sendfile on, keepalive_requests 1e6"

# Header check: the responses both servers send, side by side.
hdrs() { # port host path [curl args]
  local port=$1 host=$2 path=$3; shift 3
  curl -s -o /dev/null -D - -H "Host: $host" "$@" "http://127.0.0.1:$port$path" | tr -d '\r' \
    | grep -v '^$' | sed -E 's/^([^:]+):/\L\1:/' | grep -vE '^(date|server|last-modified|etag|connection):' | sort
}
echo "header check (Date, Server, Last-Modified, ETag values, Connection left out; < protoforge only, > nginx only):"
for spec in "$idx_id.localhost /" "$idx_id.localhost / -H Accept-Encoding:gzip" "$big_id.localhost $big_url"; do
  # shellcheck disable=SC2086
  set -- $spec
  a=$(hdrs "$pf_port" "$@"); b=$(hdrs "$ngx_port" "$@")
  d=$(diff <(echo "$a") <(echo "$b") | grep -E '^[<>]' || true)
  printf '  %-28s %s\n' "$2 ${*:3}" "$( [ -z "$d" ] && echo identical || echo differs:)"
  [ -z "$d" ] || echo "$d" | sed 's/^/      /' | cut -c1-110
done

cat >"$work/rotate.lua" <<'EOF'
-- index.html of every site in turn, each wrk thread from its own offset.
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local hosts, i = {}, 0
function init(args)
  for line in io.lines(os.getenv("BENCH_HOSTS")) do hosts[#hosts + 1] = line end
  i = (tid or 0) * math.floor(#hosts / 2)
end
function request()
  i = i + 1
  return wrk.format("GET", "/", { ["Host"] = hosts[(i % #hosts) + 1] })
end
EOF

ticks() { # cpu ticks (user+sys) of the given pids and their children
  local t=0 p f
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    read -r -a f <"/proc/$p/stat" || continue
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}'; }
hz=$(getconf CLK_TCK)
child_secs() { # user+sys of this shell's children so far, in ms, from a saved `times`
  sed -n 2p "$1" | awk '{t=0; for (i=1;i<=2;i++) {split($i,a,/[ms]/); t+=a[1]*60+a[2]}; printf "%d", t*1000}'
}

# run SCENARIO SERVER -> one table row; figures appended to $work/results
run() {
  local scen=$1 server=$2 port out t0 c0 c1 t1 rps p99 non2xx sockerr cpu wcpu
  local -a pids
  if [ "$server" = protoforge ]; then port=$pf_port pids=("$pf_pid"); else port=$ngx_port pids=("$ngx_pid"); fi
  local args=("-t$wrk_threads" "-c$conns" "-d$duration" --latency)
  case $scen in
    index) args+=(-H "Host: $idx_id.localhost" "http://127.0.0.1:$port/") ;;
    index-gzip) args+=(-H "Host: $idx_id.localhost" -H "Accept-Encoding: gzip" "http://127.0.0.1:$port/") ;;
    png) args+=(-H "Host: $big_id.localhost" "http://127.0.0.1:$port$big_url") ;;
    all-sites) args+=(-s "$work/rotate.lua" "http://127.0.0.1:$port/") ;;
  esac
  out=$work/wrk-$scen-$server-$RANDOM.txt
  c0=$(ticks "${pids[@]}"); t0=$(date +%s.%N); times >"$work/times0"
  BENCH_HOSTS=$work/hosts "${wrk_cpu[@]}" wrk "${args[@]}" >"$out" 2>&1
  times >"$work/times1"; t1=$(date +%s.%N); c1=$(ticks "${pids[@]}")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p99=$(awk '$1 == "99%" {print $2}' "$out" | to_ms)
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  sockerr=$(grep -o 'Socket errors:.*' "$out" | sed 's/Socket errors: //' || true); sockerr=${sockerr:-none}
  cpu=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.0f%%", 100*c/hz/(e-s)}')
  wcpu=$(( $(child_secs "$work/times1") - $(child_secs "$work/times0") ))
  wcpu=$(awk -v ms="$wcpu" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.0f%%", ms/10/(e-s)}')
  printf '  %-10s %-10s %10s %9s %8s %8s %8s  %s\n' "$scen" "$server" "${rps:-?}" "${p99:-?}" "$cpu" "$wcpu" "$non2xx" "$sockerr"
  echo "$scen $server ${rps:-0} ${p99:-0} $non2xx" >>"$work/results"
  if [ "$server" = protoforge ]; then rss "$pf_pid" VmRSS >>"$work/rss"; fi
}

# 5. A/B, alternating the order each round (ABBA...) so drift hits both alike.
echo
echo "wrk -t$wrk_threads -c$conns -d$duration --latency (p99 in ms; CPU = CPU time / wall, 100% = one core)"
printf '  %-10s %-10s %10s %9s %8s %8s %8s  %s\n' scenario server req/s p99-ms "srv CPU" "wrk CPU" non-2xx "socket errors"
: >"$work/results"; : >"$work/rss"
for scen in ${SCENARIOS:-index index-gzip png all-sites}; do
  # warm both (protoforge loads the site into its cache, nginx the page cache)
  curl -s -o /dev/null -H "Host: $idx_id.localhost" "http://127.0.0.1:$pf_port/"
  curl -s -o /dev/null -H "Host: $big_id.localhost" "http://127.0.0.1:$pf_port$big_url"
  for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) = 1 ]; then order="protoforge nginx"; else order="nginx protoforge"; fi
    for server in $order; do run "$scen" "$server"; done
  done
done

echo
echo "summary (mean over rounds; ratio = protoforge / nginx; req/s higher is better, p99 lower is better):"
printf '  %-10s %12s %12s %8s %10s %10s %8s\n' scenario "pf req/s" "nginx req/s" ratio "pf p99" "nginx p99" ratio
awk '{ k=$1; s=$2; n[k,s]++; r[k,s]+=$3; p[k,s]+=$4; if (!(k in seen)) { seen[k]=1; order[++m]=k } }
  END { for (i=1; i<=m; i++) { k=order[i];
    pr=r[k,"protoforge"]/n[k,"protoforge"]; nr=r[k,"nginx"]/n[k,"nginx"];
    pp=p[k,"protoforge"]/n[k,"protoforge"]; np=p[k,"nginx"]/n[k,"nginx"];
    printf "  %-10s %12.0f %12.0f %7.2fx %8.2fms %8.2fms %7.2fx\n", k, pr, nr, (nr>0?pr/nr:0), pp, np, (np>0?pp/np:0) } }' "$work/results"

# 6. Memory, and what protoforge said and counted.
echo
echo "protoforge with $sites sites on the branch, after the runs: VmRSS $(mib "$(rss "$pf_pid" VmRSS)"), VmHWM $(mib "$(rss "$pf_pid" VmHWM)")"
echo "  of which RssAnon $(mib "$(rss "$pf_pid" RssAnon)") (heap: caches, site lists) and RssFile $(mib "$(rss "$pf_pid" RssFile)") (the binary, and the pack files gix maps: page cache the kernel can drop)"
echo "  VmRSS after each run: $(while read -r k; do printf '%s ' "$(awk -v k="$k" 'BEGIN{printf "%.0f", k/1024}')"; done <"$work/rss")MiB"
ngx_rss=0
for p in "$ngx_pid" $(pgrep -P "$ngx_pid" || true); do ngx_rss=$((ngx_rss + $(rss "$p" VmRSS))); done
echo "nginx master+worker VmRSS: $(mib "$ngx_rss")"
echo "protoforge /metrics, responses by status: $(curl -s "http://127.0.0.1:$pf_port/metrics" \
  | sed -n 's/^protoforge_http_requests_total{status="\([0-9]*\)"} \([0-9]*\)$/\1: \2/p' | paste -sd, -)"
echo "protoforge log lines at $pf_log or above: $(wc -l <"$work/protoforge.log")"
if [ -s "$work/protoforge.log" ]; then tail -n 5 "$work/protoforge.log" | cut -c1-160 | sed 's/^/  /'; fi
if [ -s "$work/nginx-error.log" ]; then
  echo "nginx error log:"; tail -n 5 "$work/nginx-error.log" | cut -c1-160 | sed 's/^/  /'
fi
echo "loadavg at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
