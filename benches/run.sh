#!/usr/bin/env bash
# Removal benchmark (not a test): wall-clock time to remove freshly built directory trees with
# `rm -rf`, rmz, std's `remove_dir_all` and this project's removal engine (inode order, the
# default, and the older directory order; byte counting off and on), on a loop-mounted ext4
# image with a journal, plus a latency-injected FUSE filesystem standing in for network
# storage. Prints medians, files/s, the ratio to `rm -rf` and to rmz, and the peak RSS of
# every tool; results and the machine are in benches/README.md.
#
#   sudo bash benches/run.sh            # full run: about 17 minutes on 2 shared cores
#   sudo bash benches/run.sh --quick    # smaller trees, 2 runs: a smoke test (~2 minutes)
#   options: --runs N (every shape), --shapes wide,deep,flat,big,latency, --out FILE,
#            --tools rm,engine,... (instead of every tool; also engine-1chunk: one chunk of
#            up to 1 Mi entries per directory, to see what the 64 Ki cap costs; engine@N:
#            the engine with N threads; engine-grow: the controller's default, starting
#            with one thread per core and growing up to 16 while its threads wait on the
#            storage, on every shape)
#
# How: each shape's tree is built once (benches/tools `mktree`, deterministic) on a fresh
# ext4 image; before every timed removal that image is copied, loop-mounted, synced and the
# page cache dropped (if the kernel lets us), so every tool removes the same, cold tree. Runs
# alternate the order of the tools (rotation). Needs root (mount, /dev/fuse). Everything it
# creates lives in a scratch directory that is unmounted and removed on exit, even on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
RUNS_OVERRIDE=""
SHAPES="wide,deep,flat,big,latency"
TOOLS_OVERRIDE=""
OUT="$ROOT/target/bench/results.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS_OVERRIDE="$2"; shift ;;
    --shapes) SHAPES="$2"; shift ;;
    --tools) TOOLS_OVERRIDE="${2//,/ }"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (loop mounts, /dev/fuse, drop_caches)"
[ -c /dev/fuse ] || die "/dev/fuse is missing (the latency shape needs it)"

# --- Parameters -----------------------------------------------------------------------------
NPROC=$(nproc)
LATENCY_THREADS=16   # engine threads on the latency filesystem, as for a network volume
GROW_MAX=16          # engine-grow's cap: volumes[].max_removal_threads' default
LATENCY_US=1000      # injected delay per metadata request
FUSE_THREADS=32      # latencyfs worker threads
IMAGE_SIZE=8G
if [ "$QUICK" -eq 1 ]; then
  WIDE_DIRS=200;  WIDE_FILES=20000
  DEEP_DEPTH=500; DEEP_PER_LEVEL=10
  FLAT_FILES=10000
  BIG_FILES=4;    BIG_MIB=64
  LAT_DIRS=20;    LAT_FILES=2000
  RUNS_FAST=2; RUNS_SLOW=2
else
  WIDE_DIRS=2000; WIDE_FILES=200000
  DEEP_DEPTH=2000; DEEP_PER_LEVEL=10
  FLAT_FILES=100000
  BIG_FILES=20;   BIG_MIB=100
  # 2 ms of round trips per file make rm -rf take ~25 s per 10,000 files here: the latency
  # tree is the wide tree's shape (100 files per directory) at a twentieth of its size.
  LAT_DIRS=100;   LAT_FILES=10000
  # The machine is shared and noisy: 5 runs where a run takes seconds, 3 where it takes ~25 s.
  RUNS_FAST=5; RUNS_SLOW=3
fi
if [ -n "$RUNS_OVERRIDE" ]; then RUNS_FAST=$RUNS_OVERRIDE; RUNS_SLOW=$RUNS_OVERRIDE; fi

# --- Packages -------------------------------------------------------------------------------
need=()
[ -x /usr/bin/time ] || need+=(time)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
command -v mountpoint >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- Scratch and cleanup --------------------------------------------------------------------
SCRATCH=$(mktemp -d /var/tmp/vfolder-bench.XXXXXX)
MNT="$SCRATCH/mnt"      # the loop-mounted ext4 work image
FUSE="$SCRATCH/fuse"    # latencyfs mount point (backing: $MNT/data)
LFS_PID=""
mkdir -p "$MNT" "$FUSE"

cleanup() {
  local rc=$?
  set +e
  if mountpoint -q "$FUSE"; then umount "$FUSE" 2>/dev/null || umount -l "$FUSE"; fi
  if [ -n "$LFS_PID" ]; then kill "$LFS_PID" 2>/dev/null; wait "$LFS_PID" 2>/dev/null; fi
  if mountpoint -q "$MNT"; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  for img in "$SCRATCH"/*.img; do
    [ -e "$img" ] || continue
    for dev in $(losetup -j "$img" -O NAME -n 2>/dev/null); do losetup -d "$dev"; done
  done
  rm -rf "$SCRATCH"
  [ $rc -eq 0 ] || log "exited with status $rc; scratch cleaned up"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Build the tools ------------------------------------------------------------------------
cd "$ROOT"
log "building the engine bench binary (cargo bench --bench remove --no-run)"
ENGINE=$(cargo bench --bench remove --no-run --message-format=json \
  | grep '"reason":"compiler-artifact"' | grep '"executable":"[^"]*remove-' \
  | sed 's/.*"executable":"\([^"]*\)".*/\1/' | tail -n 1 || true)
[ -x "$ENGINE" ] || die "could not build or find the engine bench binary"
log "building benches/tools and benches/latencyfs (release)"
TOOLS_TARGET="$ROOT/target/bench-tools"
cargo build --quiet --release --manifest-path benches/tools/Cargo.toml --target-dir "$TOOLS_TARGET"
cargo build --quiet --release --manifest-path benches/latencyfs/Cargo.toml --target-dir "$TOOLS_TARGET"
MKTREE="$TOOLS_TARGET/release/mktree"
STD_REMOVE="$TOOLS_TARGET/release/std_remove"
LATENCYFS="$TOOLS_TARGET/release/latencyfs"
RMZ_ROOT="$ROOT/target/bench/rmz"   # scratch install, kept between runs, never vendored
if [ ! -x "$RMZ_ROOT/bin/rmz" ]; then
  log "installing rmz from crates.io into $RMZ_ROOT"
  cargo install --quiet --locked --root "$RMZ_ROOT" rmz
fi
RMZ="$RMZ_ROOT/bin/rmz"
RMZ_VERSION=$("$RMZ" --version 2>/dev/null | head -n 1)

# --- Cache dropping: try once, report --------------------------------------------------------
if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
  DROP=1; DROP_NOTE="yes (sync; echo 3 > /proc/sys/vm/drop_caches before every timed removal)"
else
  DROP=0; DROP_NOTE="no (drop_caches not permitted here): runs are warm-cache"
fi
drop_caches() { sync; [ "$DROP" -eq 0 ] || echo 3 > /proc/sys/vm/drop_caches; }

# --- One shape ------------------------------------------------------------------------------
# The tools, by name: `tool_cmd NAME TARGET THREADS` sets CMD to the command line.
tool_cmd() {
  local name=$1 target=$2 threads=$3
  case "$name" in
    rm) CMD=(rm -rf "$target") ;;
    rmz) CMD=("$RMZ" "$target") ;;
    std) CMD=("$STD_REMOVE" "$target") ;;
    engine) CMD=("$ENGINE" "$target" --threads "$threads") ;;
    engine-dirorder) CMD=("$ENGINE" "$target" --threads "$threads" --order directory) ;;
    engine-1chunk) CMD=("$ENGINE" "$target" --threads "$threads" --chunk-entries 1048576) ;;
    engine+bytes) CMD=("$ENGINE" "$target" --threads "$threads" --count-bytes) ;;
    engine@nproc) CMD=("$ENGINE" "$target" --threads "$NPROC") ;;
    engine-grow) CMD=("$ENGINE" "$target" --threads "$NPROC" --max-threads "$GROW_MAX") ;;
    engine@[0-9]*) CMD=("$ENGINE" "$target" --threads "${name#engine@}") ;;
    *) die "unknown tool $name" ;;
  esac
}

# Busy CPU ticks of the whole machine so far (all but idle and iowait).
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

RESULTS="$SCRATCH/results.tsv"   # shape tool run seconds rss_kib other_cores
: > "$RESULTS"
declare -A EXPECTED_FILES SHAPE_TITLE SHAPE_THREADS

# bench_shape KEY TITLE RUNS LATENCY(0|1) ENGINE_THREADS TOOLS MKTREE_ARGS...
bench_shape() {
  local key=$1 title=$2 runs=$3 latency=$4 threads=$5 tools=${TOOLS_OVERRIDE:-$6}; shift 6
  local golden="$SCRATCH/$key-golden.img" work="$SCRATCH/work.img"
  SHAPE_TITLE[$key]=$title
  SHAPE_THREADS[$key]=$threads
  log "[$key] building: mktree $*"
  truncate -s "$IMAGE_SIZE" "$golden"
  mkfs.ext4 -q -F "$golden"
  mount -o loop "$golden" "$MNT"
  mkdir "$MNT/data"
  local built
  built=$("$MKTREE" "$1" "$MNT/data/tree" "${@:2}")
  umount "$MNT"
  EXPECTED_FILES[$key]=$(sed 's/.*files=\([0-9]*\).*/\1/' <<<"$built")
  log "[$key] built $built; image $(du -h "$golden" | cut -f1) used"

  local -a list
  read -r -a list <<<"$tools"
  local n=${#list[@]} run i tool target t0 t1 secs rss out
  local -a CMD
  for run in $(seq 1 "$runs"); do
    for i in $(seq 0 $((n - 1))); do
      tool=${list[$(((i + run - 1) % n))]}   # rotate the order every run
      cp --sparse=always "$golden" "$work"
      mount -o loop "$work" "$MNT"
      target="$MNT/data/tree"
      if [ "$latency" -eq 1 ]; then
        "$LATENCYFS" "$MNT/data" "$FUSE" --delay-us "$LATENCY_US" --threads "$FUSE_THREADS" &
        LFS_PID=$!
        for _ in $(seq 1 100); do mountpoint -q "$FUSE" && break; sleep 0.1; done
        mountpoint -q "$FUSE" || die "latencyfs did not mount"
        target="$FUSE/tree"
      fi
      tool_cmd "$tool" "$target" "$threads"
      drop_caches
      # Page the tool in again: loading a cold binary (the engine's is 15 MB) is not removal.
      cat "$(command -v "${CMD[0]}")" > /dev/null
      stat0=$(cpu_ticks)
      t0=$(date +%s%N)
      out=$(/usr/bin/time -v -o "$SCRATCH/time.txt" "${CMD[@]}" 2>&1) || die "[$key] $tool failed: $out"
      t1=$(date +%s%N)
      stat1=$(cpu_ticks)
      [ ! -e "$MNT/data/tree" ] || die "[$key] $tool left the tree behind"
      if [[ $tool == engine* ]]; then
        [[ $out == *"files=${EXPECTED_FILES[$key]} "* ]] || die "[$key] $tool miscounted: $out"
      fi
      rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$SCRATCH/time.txt")
      secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
      # Cores that everything but the tool kept busy meanwhile: the machine is shared.
      others=$(awk -F': ' -v s0="$stat0" -v s1="$stat1" -v hz="$(getconf CLK_TCK)" -v secs="$secs" '
        /User time|System time/ { own += $2 }
        END { split(s0, a, " "); split(s1, b, " ")
              busy = (b[1] - a[1]) / hz - own; if (busy < 0) busy = 0
              printf "%.2f", busy / secs }' "$SCRATCH/time.txt")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$tool" "$run" "$secs" "$rss" "$others" >> "$RESULTS"
      log "[$key] run $run $tool: ${secs}s, peak RSS ${rss} KiB, others ${others} cores${out:+ ($out)}"
      if [ "$latency" -eq 1 ]; then
        umount "$FUSE"; wait "$LFS_PID"; LFS_PID=""
      fi
      umount "$MNT"
      rm -f "$work"
    done
  done
  rm -f "$golden"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%s)
LOCAL_TOOLS="rm rmz std engine engine-grow engine-dirorder engine+bytes"
for shape in ${SHAPES//,/ }; do
  case "$shape" in
    wide) bench_shape wide "wide: $WIDE_FILES files in $WIDE_DIRS dirs" "$RUNS_FAST" 0 "$NPROC" \
            "$LOCAL_TOOLS" wide "$WIDE_DIRS" "$WIDE_FILES" ;;
    deep) bench_shape deep "deep chain: depth $DEEP_DEPTH, $DEEP_PER_LEVEL files per level" \
            "$RUNS_FAST" 0 "$NPROC" "$LOCAL_TOOLS" deep "$DEEP_DEPTH" "$DEEP_PER_LEVEL" ;;
    flat) bench_shape flat "one huge directory: $FLAT_FILES files" "$RUNS_FAST" 0 "$NPROC" \
            "$LOCAL_TOOLS" flat "$FLAT_FILES" ;;
    big) bench_shape big "few big files: $BIG_FILES x $BIG_MIB MiB" "$RUNS_FAST" 0 "$NPROC" \
            "$LOCAL_TOOLS" big "$BIG_FILES" "$BIG_MIB" ;;
    latency) bench_shape latency \
            "wide on latencyfs (${LATENCY_US} us/op): $LAT_FILES files in $LAT_DIRS dirs" \
            "$RUNS_SLOW" 1 "$LATENCY_THREADS" "$LOCAL_TOOLS engine@nproc" \
            wide "$LAT_DIRS" "$LAT_FILES" ;;
    *) die "unknown shape $shape" ;;
  esac
done
ELAPSED=$(( $(date -u +%s) - STARTED ))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- Report ---------------------------------------------------------------------------------
# summary.tsv: shape tool runs median min max rss_kib mean_other_cores (first-seen order)
SUMMARY="$SCRATCH/summary.tsv"
awk -F'\t' '
  { if (!(($1, $2) in n)) order[++k] = $1 SUBSEP $2
    i = ++n[$1, $2]; t[$1, $2, i] = $4
    if ($5 > rss[$1, $2]) rss[$1, $2] = $5
    oth[$1, $2] += $6 }
  END {
    for (o = 1; o <= k; o++) {
      key = order[o]; c = n[key]
      for (i = 1; i <= c; i++) v[i] = t[key, i]
      for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
      med = c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
      split(key, parts, SUBSEP)
      printf "%s\t%s\t%d\t%.3f\t%.3f\t%.3f\t%d\t%.2f\n", parts[1], parts[2], c, med, v[1], v[c], rss[key], oth[key] / c
    }
  }' "$RESULTS" > "$SUMMARY"
median_of() { awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t { print $4 }' "$SUMMARY"; }

# check LABEL SHAPE TOOL BASELINE MIN: is BASELINE's median / TOOL's median >= MIN?
check() {
  local label=$1 shape=$2 tool=$3 base=$4 min=$5 a b
  a=$(median_of "$shape" "$tool"); b=$(median_of "$shape" "$base")
  [ -n "$a" ] && [ -n "$b" ] || return 0
  awk -v l="$label" -v a="$a" -v b="$b" -v m="$min" -v base="$base" 'BEGIN {
    r = b / a; printf "| %s | ≥ %.2f× %s | %.2f× | %s |\n", l, m, base, r, (r >= m ? "met" : "MISSED") }'
}

# order_gain SHAPE: the directory-order engine's median / the inode-order engine's.
order_gain() {
  local a b
  a=$(median_of "$1" engine); b=$(median_of "$1" engine-dirorder)
  [ -n "$a" ] && [ -n "$b" ] || return 0
  awk -v s="$1" -v a="$a" -v b="$b" 'BEGIN {
    printf "| inode order vs directory order, %s | (measured, no target) | %.2f× | |\n", s, b / a }'
}

mkdir -p "$(dirname "$OUT")"
{
  echo "## Removal benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')$([ "$QUICK" -eq 1 ] && echo ' (--quick)')"
  echo
  echo "- machine: $NPROC cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
  echo "- filesystem: ext4 (mkfs.ext4 defaults: journal, data=ordered) on a $IMAGE_SIZE sparse image, loop-mounted; the image file sits on $(df -T /var/tmp | awk 'NR==2 {print $2}')"
  echo "- caches dropped: $DROP_NOTE; each tool's binary is then read once, so loading it from disk is not timed"
  echo "- load average before / after: $LOAD_BEFORE / $LOAD_AFTER; wall time $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
  echo "- tools: \`rm -rf\` ($(rm --version | head -n 1)), rmz ($RMZ_VERSION, its own thread count), std \`remove_dir_all\` ($(rustc --version | cut -d' ' -f2)), engine = \`storage::remove_tree\` in its default inode order (\`engine-dirorder\`: \`--order directory\`, the order before inode ordering; \`engine+bytes\`: \`--count-bytes\`; \`engine@nproc\`: $NPROC threads; \`engine-grow\`: the controller's default, $NPROC threads growing up to $GROW_MAX while they wait on the storage, the number reached is in the run's log as \`threads=\`)"
  echo "- others' cores = CPU time that everything except the tool used during its timed removals (other users of this shared machine, and kernel threads such as the ext4 journal and the FUSE server), divided by the wall time, averaged over the runs: out of $NPROC"
  echo "- time = wall clock of the whole process, median of the runs; files/s = files in the tree / median; × rm and × rmz = their median / this median (higher is faster)"
  echo
  echo "| shape | tool | runs | median s | min–max s | files/s | × rm -rf | × rmz | peak RSS MiB | others' cores |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for shape in ${SHAPES//,/ }; do
    awk -F'\t' -v shape="$shape" -v title="${SHAPE_TITLE[$shape]}" \
        -v files="${EXPECTED_FILES[$shape]}" -v threads="${SHAPE_THREADS[$shape]}" \
        -v nproc="$NPROC" -v grow="$GROW_MAX" '
      $1 == shape { tool[++k] = $2; runs[$2] = $3; m[$2] = $4; lo[$2] = $5; hi[$2] = $6; rss[$2] = $7; oth[$2] = $8 }
      END {
        for (i = 1; i <= k; i++) {
          t = tool[i]; label = t
          if (t == "engine-grow") label = t " (" nproc "→" grow " thr)"
          else if (t ~ /^engine[-+]?[a-z1]*$/) label = t " (" threads " thr)"
          printf "| %s | %s | %d | %.2f | %.2f–%.2f | %.0f | %.2f | %.2f | %.1f | %.2f |\n",
            (i == 1 ? title : ""), label, runs[t], m[t], lo[t], hi[t], files / m[t],
            m["rm"] / m[t], m["rmz"] / m[t], rss[t] / 1024, oth[t]
        }
      }' "$SUMMARY"
  done
  echo
  echo "| target | wanted | measured | |"
  echo "|---|---|---|---|"
  check "wide tree (issue 11)" wide engine rmz 1.15
  check "wide tree (≈ rmz on the reference machine)" wide engine rm 2.2
  check "one huge directory" flat engine rm 1.3
  check "deep chain" deep engine rm 1.0
  check "few big files" big engine rm 1.0
  check "wide tree on latencyfs" latency engine rm 3.0
  check "wide tree (issue 11), default threads (engine-grow)" wide engine-grow rmz 1.15
  check "one huge directory, default threads (engine-grow)" flat engine-grow rm 1.3
  check "wide tree on latencyfs, default threads (engine-grow)" latency engine-grow rm 3.0
  check "wide tree, default threads (engine-grow) vs cores (engine)" wide engine-grow engine 0.95
  awk -F'\t' '$1 == "wide" && $2 == "engine" {
    printf "| engine peak RSS, wide tree | < 32 MiB | %.1f MiB | %s |\n", $7 / 1024, ($7 < 32768 ? "met" : "MISSED") }' "$SUMMARY"
  awk -F'\t' '$1 == "flat" && $2 == "engine" {
    printf "| engine peak RSS, one huge directory | < 32 MiB | %.1f MiB | %s |\n", $7 / 1024, ($7 < 32768 ? "met" : "MISSED") }' "$SUMMARY"
  for shape in ${SHAPES//,/ }; do order_gain "$shape"; done
  echo
  echo "Raw runs (shape, tool, run, seconds, peak RSS KiB, others' cores):"
  echo
  echo '```'
  cat "$RESULTS"
  echo '```'
} | tee "$OUT"
log "results written to $OUT"
