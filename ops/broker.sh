#!/usr/bin/env bash
# The local Kafka-protocol broker (Tansu, in memory) on 127.0.0.1, for demos and tests.
#   ops/broker.sh install | start | stop | status
# Port: STEPVIEW_BROKER_PORT (default 9092). Topics are created by stepview itself
# (serve and simulate create the events topic and its dead-letter topic when missing).
set -euo pipefail
. "$(dirname "$0")/env.sh"

port="${STEPVIEW_BROKER_PORT:-9092}"
pidfile="$STEPVIEW_HOME/broker-$port.pid"
logfile="$STEPVIEW_HOME/broker-$port.log"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-start}" in
  install) ensure_tansu ;;
  start)
    ensure_tansu
    if running; then say "broker already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; exit 0; fi
    if wait_for_port 127.0.0.1 "$port" 0; then die "port $port is taken by another process: set STEPVIEW_BROKER_PORT"; fi
    url="tcp://127.0.0.1:$port" # advertise IPv4: librdkafka may resolve localhost to ::1
    nohup tansu broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine memory://tansu/ >"$logfile" 2>&1 &
    echo $! >"$pidfile"
    wait_for_port 127.0.0.1 "$port" 30 || { tail -20 "$logfile" >&2; die "broker did not start (log: $logfile)"; }
    say "broker running on 127.0.0.1:$port (pid $(cat "$pidfile"), log $logfile)"
    ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; say "broker on port $port stopped"; fi
    rm -f "$pidfile"
    ;;
  status)
    if running; then echo "running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "not running"; exit 1; fi
    ;;
  *) die "usage: ops/broker.sh install|start|stop|status" ;;
esac
