#!/usr/bin/env bash
# Prints the benchmark figures of the core issue:
#   1. per-prototype time in template mode and publish scaling (cargo bench);
#   2. wall time and peak RSS of `build --once` over N submissions (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}

cargo bench --bench pipeline

cargo build --release --quiet
bin=$PWD/target/release/protoforge
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$bin" init "$dir" >/dev/null
kinds=("sourdough bakery with a menu (rye, buns, cakes) and opening hours (Tue-Sun 7am-3pm)"
       "invoicing app for freelancers, pricing (free / pro \$12 / team \$29), features, signup"
       "dental clinic, services (cleaning, implants, kids), appointment form"
       "photography portfolio with a gallery of projects"
       "dog walking business, group walks and solo walks, prices and booking")
for i in $(seq 1 "$n"); do
  printf 'company: Bench %d\ndescription: We are a %s. Number %d.\nsubmitted_at: 2026-11-01T00:00:%02dZ\n' \
    "$i" "${kinds[$((i % 5))]}" "$i" "$((i % 60))" >"$dir/inbox/bench-$i.yaml"
done
echo "build --once over $n submissions:"
/usr/bin/time -f '  wall %e s, user %U s, sys %S s, peak RSS %M KiB' "$bin" -C "$dir" build --once >/dev/null 2>"$dir/err" || true
tail -n 1 "$dir/err"
echo "  sites on the branch: $(git -C "$dir" ls-tree prototypes sites/ | wc -l)"
git -C "$dir" fsck --strict --no-dangling >/dev/null && echo "  git fsck --strict: clean"
