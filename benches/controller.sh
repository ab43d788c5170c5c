#!/usr/bin/env bash
# Controller benchmark on PostgreSQL (not a test): convergence rate at 10,000 and 100,000 rows
# (with the controller's peak RSS and where the time went), wake-up latency, the plans, times
# and idle cost of the periodic queries with 10,000,000 `ready` rows in the table, and one
# folder of 100,000 files end to end against `rm -rf` (on the filesystem of /tmp).
#
#   bash benches/controller.sh            # full run (about 10 minutes on 2 cores)
#   bash benches/controller.sh --quick    # 1,000 / 10,000 / 100,000 rows, for a smoke test
#   bash benches/controller.sh --converge N   # only the convergence of N rows, with its
#                                             # database profile (commits, flushes, statements)
#   bash benches/controller.sh --end-to-end   # only (d): one folder of 100,000 files end to end
#   VFC_BENCH_WORKERS=N bash benches/controller.sh ...   # N removal slots instead of 16
#   VFC_BENCH_REMOVAL_THREADS=N bash benches/controller.sh ...   # N threads per removal
#                                             # instead of the default (one per core)
#   VFC_BENCH_BINARY=/path/to/vfolder-controller bash benches/controller.sh ...   # measure
#                                             # another build (A/B) with the same bench
#   VFC_BENCH_TRASH=200000 bash benches/controller.sh ...  # that many folders in the trash
#                                             # (delete-pending, in place) throughout
#   VFC_BENCH_TRASH_MOVED=1 VFC_BENCH_TRASH=N ...   # the volume moves its trash, and those
#                                             # N folders are already moved
#   VFC_BENCH_RTT_US=500 bash benches/controller.sh ...   # the controller reaches the database
#                                             # through benches/tools' delay_proxy, 250 us each
#                                             # way: a database on another host
#
# It starts a private PostgreSQL instance (its own data directory and port, with auto_explain
# loaded; the bench switches it on for part (c) only, so (a) and (b) run at full speed; a
# larger max_wal_size so that loading 10M rows is not a series of forced checkpoints),
# builds the release binary and runs benches/controller_bench.rs against it. The shared
# server on 5432 is not touched. Results are printed as a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
converge=""
e2e=0
case "${1:-}" in
  --quick) quick=1 ;;
  --converge) converge="${2:?--converge needs a row count}" ;;
  --end-to-end) e2e=1 ;;
esac
# Another controller binary to measure (an A/B against an older build), instead of this tree's.
binary="${VFC_BENCH_BINARY:-}"

bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
work=$(mktemp -d /tmp/vfc-bench.XXXXXX)
chown postgres:postgres "$work"
port=$((20000 + RANDOM % 20000))
cleanup() {
  runuser -u postgres -- "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

runuser -u postgres -- "$bin/initdb" -A trust -U postgres -D "$work/data" >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$work/data" -w -l "$work/server.log" \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c shared_preload_libraries=auto_explain,pg_stat_statements \
      -c auto_explain.log_min_duration=-1 -c fsync=on -c max_wal_size=8GB" start >/dev/null

cargo build --release --bin vfolder-controller --quiet
binary="${binary:-${CARGO_TARGET_DIR:-target}/release/vfolder-controller}"
tools_target="$PWD/target/bench-tools"
cargo build --quiet --release --manifest-path benches/tools/Cargo.toml --target-dir "$tools_target"
controller_url="postgres://postgres@127.0.0.1:$port/postgres"
if [ -n "${VFC_BENCH_RTT_US:-}" ]; then
  proxy_port=$((port + 1))
  "$tools_target/release/delay_proxy" "127.0.0.1:$proxy_port" "127.0.0.1:$port" \
    $((VFC_BENCH_RTT_US / 2)) &
  proxy=$!
  trap 'kill $proxy 2>/dev/null || true; cleanup' EXIT
  controller_url="postgres://postgres@127.0.0.1:$proxy_port/postgres"
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break
    sleep 0.1
  done
fi
cargo bench --bench controller_bench --quiet -- \
  --database-url "postgres://postgres@127.0.0.1:$port/postgres" \
  --controller-database-url "$controller_url" \
  --server-log "$work/server.log" \
  --binary "$binary" \
  --mktree "$tools_target/release/mktree" \
  --quick "$quick" --end-to-end-only "$e2e" ${converge:+--converge-only "$converge"}
