#!/usr/bin/env bash
# Prints the time of finalize's quality gate per site, so CI stays fast:
#   1. finalize itself (cargo bench --bench finalize): rewrite throughput on
#      100 KB pages, and the finalize stage of a build with and without a
#      4 MB photo;
#   2. the real checkers on every bundled example: the W3C Nu checker (one
#      JVM for all pages) and headless Chromium with axe-core
#      (tests/browser/behaviour.mjs: 3 widths, axe twice, forms), per site.
# Needs what ./scripts/test installs (java, chromium, node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --bench finalize

cargo build --release --quiet
bin=$PWD/target/release/protoforge
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$bin" init "$dir/repo" >/dev/null
cp -r examples/. "$dir/repo/inbox/"
"$bin" -C "$dir/repo" build --once >/dev/null 2>&1
"$bin" -C "$dir/repo" export --out "$dir/preview" >/dev/null 2>&1
sites=$(ls "$dir/preview" | wc -l)
now() { date +%s.%N; }
per_site() { awk -v a="$1" -v b="$2" -v n="$sites" 'BEGIN { printf "%.2f s total, %.2f s a site", b - a, (b - a) / n }'; }

echo "quality gate over $sites bundled example sites:"
t0=$(now)
java -jar node_modules/vnu-jar/build/dist/vnu.jar --errors-only --also-check-css \
  "$dir"/preview/*/index.html "$dir"/preview/*/styles.css && vnu=clean || vnu="found errors"
t1=$(now)
echo "  vnu ($vnu): $(per_site "$t0" "$t1")"
t0=$(now)
node tests/browser/behaviour.mjs "$dir/preview" "$dir/shots" >"$dir/behaviour.json"
t1=$(now)
serious=$(node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1]));
  let n = 0; for (const s of r) for (const v of [...s.axe375, ...s.axe1440])
    if (v.impact === "serious" || v.impact === "critical") n++;
  console.log(n);' "$dir/behaviour.json")
echo "  chromium + axe-core ($serious serious or critical): $(per_site "$t0" "$t1")"
