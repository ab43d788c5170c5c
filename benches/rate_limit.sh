#!/usr/bin/env bash
# Rate-limit benchmark (not a test): does a volume's `max_ops_per_second` hold, and what does
# the limiter cost when a volume has none? Removes the same freshly built tree (benches/tools
# `mktree wide`) with the engine bench binary under four settings, alternating them run by
# run: no limit (no limiter at all, the default), a limiter so high it never waits (its own
# bookkeeping cost), and two real limits. Prints the median elapsed time and unlinks+rmdirs
# per second of each, and for the limits the achieved rate as a share of the limit.
#
#   bash benches/rate_limit.sh                 # ~2 minutes after the build, 2 cores
#   options: --runs N (default 5), --files N (default 20000), --dir SCRATCH_PARENT
#
# The tree lives in a scratch directory (under /tmp unless --dir says otherwise), removed on
# exit. Results and the machine are in benches/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=5
FILES=20000
PARENT=/tmp
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift ;;
    --files) FILES="$2"; shift ;;
    --dir) PARENT="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
DIRS=200
THREADS=$(nproc)
# Limits well under and near the engine's unlimited speed on a local disk.
LIMITS=(5000 20000)
NEVER_WAITS=4294967295

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

cd "$ROOT"
log "building the engine bench binary (cargo bench --bench remove --no-run)"
ENGINE=$(cargo bench --bench remove --no-run --message-format=json \
  | grep '"reason":"compiler-artifact"' | grep '"executable":"[^"]*remove-' \
  | sed 's/.*"executable":"\([^"]*\)".*/\1/' | tail -n 1 || true)
[ -x "$ENGINE" ] || { log "could not build or find the engine bench binary"; exit 1; }
TOOLS_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/bench-tools"
cargo build --quiet --release --manifest-path benches/tools/Cargo.toml --target-dir "$TOOLS_TARGET"
MKTREE="$TOOLS_TARGET/release/mktree"

SCRATCH=$(mktemp -d "$PARENT/vfc-rate-XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# run SETTING: builds the tree, removes it, prints "elapsed_ms ops_per_s".
run() {
  local setting=$1 tree="$SCRATCH/tree"
  "$MKTREE" wide "$tree" "$DIRS" "$FILES" >/dev/null
  sync
  local args=("$tree" --threads "$THREADS")
  [ "$setting" != none ] && args+=(--max-ops-per-second "$setting")
  "$ENGINE" "${args[@]}" | sed 's/.*elapsed_ms=\([0-9.]*\).*ops_per_s=\([0-9]*\).*/\1 \2/'
}

SETTINGS=(none "$NEVER_WAITS" "${LIMITS[@]}")
declare -A ELAPSED RATE
for ((r = 0; r < RUNS; r++)); do
  # Rotate the order, so no setting always runs first (after the cache is warmest).
  for ((i = 0; i < ${#SETTINGS[@]}; i++)); do
    s=${SETTINGS[$(((i + r) % ${#SETTINGS[@]}))]}
    read -r ms ops < <(run "$s")
    ELAPSED[$s]+="$ms "
    RATE[$s]+="$ops "
    log "run $((r + 1))/$RUNS limit=$s: ${ms} ms, ${ops} ops/s"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
max() { tr ' ' '\n' | grep -v '^$' | sort -g | tail -n 1; }

printf '\nTree: mktree wide %s dirs, %s files; engine threads %s; %s runs each.\n\n' "$DIRS" "$FILES" "$THREADS" "$RUNS"
printf '| setting | median elapsed (ms) | median ops/s | max ops/s | max / limit |\n|---|---|---|---|---|\n'
base=$(echo "${ELAPSED[none]}" | median)
for s in "${SETTINGS[@]}"; do
  med_ms=$(echo "${ELAPSED[$s]}" | median)
  med_ops=$(echo "${RATE[$s]}" | median)
  max_ops=$(echo "${RATE[$s]}" | max)
  case $s in
    none) name="no limit (default)"; share="-" ;;
    "$NEVER_WAITS") name="limiter that never waits"; share="-" ;;
    *) name="max_ops_per_second = $s"; share=$(awk -v a="$max_ops" -v l="$s" 'BEGIN {printf "%.3f", a / l}') ;;
  esac
  printf '| %s | %s (%.2fx) | %s | %s | %s |\n' "$name" "$med_ms" "$(awk -v a="$med_ms" -v b="$base" 'BEGIN {print a / b}')" "$med_ops" "$max_ops" "$share"
done
