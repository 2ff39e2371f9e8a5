#!/usr/bin/env bash
# HTTP throughput with keep-alive on this machine: capped queries of a 100 000-host step, against
# a baseline measured in the same run (GET /healthz: the HTTP stack with no work behind it).
#   benches/http.sh            (uses wrk from Debian; installs it when missing)
# Prints requests/s and latency percentiles for both, and their ratio.
set -euo pipefail
. "$(dirname "$0")/../ops/env.sh"
ensure_packages
package_installed wrk || { as_root apt-get update -qq; as_root apt-get install -y -qq wrk >/dev/null; }
build_stepview

work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
say "generating and loading one step of 100 000 hosts"
"$STEPVIEW_BIN" simulate --jobs 1 --steps-per-job 1 --hosts 100000 --out "$work/events.jsonl" >/dev/null
"$STEPVIEW_BIN" load --data-dir "$work/data" "$work/events.jsonl"
port=$((20000 + RANDOM % 10000))
STEPVIEW_LOG=warn "$STEPVIEW_BIN" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --auth false &
pid=$!
wait_for_port 127.0.0.1 "$port" 60 || die "stepview did not start"
api="http://127.0.0.1:$port/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=1&step_instance_id=101&execute_count=0"
curl -sf "$api&max_host_num_per_group=0" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print("groups:", len(d["step_result_group_list"]), "hosts:", sum(g["host_size"] for g in d["step_result_group_list"]))'
bench() { wrk -t1 -c32 -d"${BENCH_SECONDS:-10}"s --latency "$1"; }
rate() { awk '/Requests\/sec/ {print $2}'; }
say "baseline: GET /healthz"
base=$(bench "http://127.0.0.1:$port/healthz"); echo "$base" | grep -E 'Requests/sec|50%|99%'
b=$(echo "$base" | rate)
for cap in 1 100; do
  bytes=$(curl -sf "$api&max_host_num_per_group=$cap" | wc -c)
  say "query: max_host_num_per_group=$cap ($bytes bytes per answer)"
  out=$(bench "$api&max_host_num_per_group=$cap"); echo "$out" | grep -E 'Requests/sec|50%|99%'
  q=$(echo "$out" | rate)
  python3 -c "print(f'cap $cap: {float($q):.0f} req/s vs baseline {float($b):.0f} req/s: ratio {float($q)/float($b):.3f} (target >= 20000 req/s)')"
done
