#!/usr/bin/env bash
# Runs every test: installs what is missing (Debian packages, schemathesis, the broker), starts a
# real broker for the Kafka tests and MariaDB for the change-data-capture tests (tests/cdc/), runs
# `cargo test`, checks the Prometheus alert rules with promtool, and stops the broker and MariaDB.
set -euo pipefail
. "$(dirname "$0")/env.sh"

ensure_packages prometheus chromium openssl mariadb-server
ensure_python_packages
announce_first_build
ensure_tansu
prune_build_dir

export STEPVIEW_BROKER_PORT="${STEPVIEW_TEST_BROKER_PORT:-19092}"
export STEPVIEW_MARIADB_PORT="${STEPVIEW_TEST_MARIADB_PORT:-13306}"
trap '"$STEPVIEW_ROOT/ops/broker.sh" stop; "$STEPVIEW_ROOT/ops/mariadb.sh" stop' EXIT
"$STEPVIEW_ROOT/ops/broker.sh" start
# MariaDB with bk-job's tables and a row-format binlog, for the change-data-capture tests.
"$STEPVIEW_ROOT/ops/mariadb.sh" start
export STEPVIEW_TEST_BROKERS="127.0.0.1:$STEPVIEW_BROKER_PORT"
export STEPVIEW_TEST_MARIADB="127.0.0.1:$STEPVIEW_MARIADB_PORT"

cd "$STEPVIEW_ROOT"
if [ -f ops/prometheus/alerts.yml ]; then
  say "promtool check rules"
  promtool check rules ops/prometheus/alerts.yml
fi
say "cargo test (release: the same build the service and benchmarks use)"
cargo test --release --locked -- --test-threads "${STEPVIEW_TEST_THREADS:-4}"
