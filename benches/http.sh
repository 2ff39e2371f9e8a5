#!/usr/bin/env bash
# HTTP throughput with keep-alive (benches/http.rs): installs wrk from Debian when it is missing,
# then runs the benchmark with the scripts' build directory.
#   benches/http.sh            (BENCH_SECONDS=10 per measurement)
set -euo pipefail
. "$(dirname "$0")/../ops/env.sh"
ensure_packages
package_installed wrk || { as_root apt-get update -qq; as_root apt-get install -y -qq wrk >/dev/null; }
cd "$(dirname "$0")/.."
cargo bench --bench http
