#!/usr/bin/env bash
# Orphan-scan benchmark (not a test): peak memory (maximum RSS, from /usr/bin/time -v) and
# wall time of `vfolder-controller orphans scan` on a volume of N folder directories, half
# of them with a row (SQLite), a quarter of them orphans and a quarter unfinished removals,
# each folder holding one small file. The claim under test: memory stays bounded (under
# 64 MiB at 100,000 folders) because the walk streams the layout and looks rows up in
# batches; it must not grow with the number of folders.
#
#   bash benches/orphan_scan.sh                   # 100,000 folders, ~1 minute after the build
#   options: --folders N (default 100000), --dir SCRATCH_PARENT (default /tmp), --bin PATH
#
# Runs the scan twice: listing only, and with --count (every folder's tree walked). The
# scratch directory is removed on exit. Results and the machine are in benches/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FOLDERS=100000
PARENT=/tmp
BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --folders) FOLDERS="$2"; shift ;;
    --dir) PARENT="$2"; shift ;;
    --bin) BIN="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [ -z "$BIN" ]; then
  log "building the release binary"
  (cd "$ROOT" && cargo build --release --bin vfolder-controller >&2)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/vfolder-controller"
fi
SCRATCH=$(mktemp -d "$PARENT/vfc-orphan-bench-XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$SCRATCH/volume"
cat > "$SCRATCH/config.toml" <<EOF
database_url = "sqlite://$SCRATCH/vfc.db"
[[volumes]]
host = "local:volume1"
mount = "$SCRATCH/volume"
require_mount_point = false
EOF

log "seeding $FOLDERS folder directories and $((FOLDERS / 2)) rows"
"$BIN" --config "$SCRATCH/config.toml" migrate >/dev/null
python3 - "$SCRATCH" "$FOLDERS" <<'PY'
import os, sqlite3, sys, uuid
scratch, n = sys.argv[1], int(sys.argv[2])
vol = os.path.join(scratch, "volume")
db = sqlite3.connect(os.path.join(scratch, "vfc.db"))
rows = []
scopes = [uuid.uuid4() for _ in range(max(1, n // 100))]
for i in range(n):
    fid, scope = uuid.uuid4(), scopes[i % len(scopes)]
    h = fid.hex
    d = os.path.join(vol, scope.hex, h[0:2], h[2:4], h[4:])
    os.makedirs(d)
    with open(os.path.join(d, "data"), "w") as f:
        f.write("x" * 100)
    if i % 2 == 0:
        status = "ready" if i % 4 == 0 else "delete-complete"
        rows.append((str(fid), "local:volume1", f"user:{scope}", f"f{i}", status))
db.executemany(
    "INSERT INTO vfolders (id, host, quota_scope_id, name, status) VALUES (?, ?, ?, ?, ?)", rows)
db.commit()
PY

for mode in list count; do
  args=(--config "$SCRATCH/config.toml" --json orphans scan)
  [ "$mode" = count ] && args+=(--count)
  log "scan ($mode)"
  /usr/bin/time -v "$BIN" "${args[@]}" > "$SCRATCH/report.jsonl" 2> "$SCRATCH/time.txt"
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$SCRATCH/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$SCRATCH/time.txt")
  summary=$(tail -n 1 "$SCRATCH/report.jsonl")
  printf '%-5s folders=%d max_rss=%sMiB wall=%s summary=%s\n' \
    "$mode" "$FOLDERS" "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')" "$wall" "$summary"
done
