#!/usr/bin/env bash
# N local shards of one set on the local broker (README, "Scaling out").
#   ops/shards.sh start [N]   start N shards (default 3) on 127.0.0.1:8081.., set "local"
#   ops/shards.sh stop        stop them (SIGTERM: each hands its partitions to the others first)
#   ops/shards.sh status
# Each has its own data directory under ~/.cache/stepview/shards/; any of them answers any query.
# Settings: STEPVIEW_BROKER_PORT (default 9092), SHARDS_TOPIC (default bkjob.gse.events),
# SHARDS_FIRST_PORT (default 8081); authentication is off (a local trial). The members' secret is
# made once, in ~/.cache/stepview/shards/members.secret (0600), and read by every shard.
set -euo pipefail
. "$(dirname "$0")/env.sh"

dir="$STEPVIEW_HOME/shards"
broker_port="${STEPVIEW_BROKER_PORT:-9092}"
first_port="${SHARDS_FIRST_PORT:-8081}"
topic="${SHARDS_TOPIC:-bkjob.gse.events}"

pids() { cat "$dir"/*.pid 2>/dev/null || true; }

case "${1:-start}" in
  start)
    n="${2:-3}"
    ensure_packages
    announce_first_build
    ensure_tansu
    build_stepview
    STEPVIEW_BROKER_PORT="$broker_port" "$STEPVIEW_ROOT/ops/broker.sh" start
    mkdir -p "$dir"
    secret="$dir/members.secret"
    if [ ! -s "$secret" ]; then
      (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret")
    fi
    for ((i = 0; i < n; i++)); do
      port=$((first_port + i))
      if [ -f "$dir/$port.pid" ] && kill -0 "$(cat "$dir/$port.pid")" 2>/dev/null; then
        say "shard on port $port already running"
        continue
      fi
      STEPVIEW_LOG="${STEPVIEW_LOG:-info}" nohup "$STEPVIEW_BIN" serve --auth false \
        --data-dir "$dir/data-$port" --listen "127.0.0.1:$port" \
        --brokers "127.0.0.1:$broker_port" --topic "$topic" \
        --cluster local --advertise "http://127.0.0.1:$port" \
        --cluster-secret-file "$secret" >"$dir/$port.log" 2>&1 &
      echo $! >"$dir/$port.pid"
      say "shard $((i + 1))/$n on http://127.0.0.1:$port (log $dir/$port.log)"
    done
    for ((i = 0; i < n; i++)); do
      port=$((first_port + i))
      wait_for_port 127.0.0.1 "$port" 60 || die "the shard on port $port did not start (log: $dir/$port.log)"
    done
    sleep 4 # members hear each other, owners settle
    for ((i = 0; i < n; i++)); do
      port=$((first_port + i))
      members=$(curl -sf "http://127.0.0.1:$port/metrics" | awk '/^stepview_cluster_members / {print $2}')
      reads=$(curl -sf "http://127.0.0.1:$port/metrics" | grep -c '^stepview_consumer_lag_messages{' || true)
      echo "  http://127.0.0.1:$port: hears $members other members, reads $reads partitions"
    done
    ;;
  stop)
    for pid in $(pids); do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $(pids); do
      for _ in $(seq 700); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -f "$dir"/*.pid
    say "shards stopped"
    ;;
  status)
    for f in "$dir"/*.pid; do
      [ -e "$f" ] || { echo "no shards"; exit 1; }
      port=$(basename "$f" .pid)
      if kill -0 "$(cat "$f")" 2>/dev/null; then echo "shard on port $port: running"; else echo "shard on port $port: stopped"; fi
    done
    ;;
  *) die "usage: ops/shards.sh start [N] | stop | status" ;;
esac
