#!/usr/bin/env bash
# A private MariaDB server on 127.0.0.1 for the change-data-capture tests (tests/cdc/): binlog in
# ROW format with full row images, as Debezium's MySQL connector requires (and full row metadata,
# from which the replication client in tests/cdc/ takes the column names).
#   ops/mariadb.sh start | stop | status
# Port: STEPVIEW_MARIADB_PORT (default 13306). Data: $STEPVIEW_HOME/mariadb/<port>, wiped and
# initialized again on every start, so each test run begins with an empty server.
# Clients connect over TCP as root with password STEPVIEW_MARIADB_PASSWORD (default "stepview"),
# a user with every privilege, replication included.
set -euo pipefail
. "$(dirname "$0")/env.sh"

port="${STEPVIEW_MARIADB_PORT:-13306}"
password="${STEPVIEW_MARIADB_PASSWORD:-stepview}"
dir="$STEPVIEW_HOME/mariadb/$port"
datadir="$dir/data"
socket="$dir/mariadb.sock"
pidfile="$dir/mariadb.pid"
logfile="$dir/mariadb.log"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

client() { mariadb --protocol=socket --socket="$socket" -uroot "$@"; }

case "${1:-start}" in
  install) ensure_packages mariadb-server ;;
  start)
    package_installed mariadb-server || ensure_packages mariadb-server
    if running; then say "MariaDB already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; exit 0; fi
    if wait_for_port 127.0.0.1 "$port" 0; then die "port $port is taken by another process: set STEPVIEW_MARIADB_PORT"; fi
    rm -rf "$dir"
    mkdir -p "$datadir"
    # Initialized without the distribution's /etc/mysql settings (--no-defaults): nothing of a
    # system server's configuration leaks in.
    mariadb-install-db --no-defaults --user=root --datadir="$datadir" --auth-root-authentication-method=normal \
      --skip-test-db >"$dir/install.log" 2>&1 || { tail -20 "$dir/install.log" >&2; die "mariadb-install-db failed (log: $dir/install.log)"; }
    nohup mariadbd --no-defaults --user=root --datadir="$datadir" \
      --bind-address=127.0.0.1 --port="$port" --socket="$socket" --pid-file="$pidfile" \
      --log-error="$logfile" --server-id=1 --log-bin="$dir/binlog" --binlog-format=ROW \
      --binlog-row-image=FULL --binlog-row-metadata=FULL --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
      --innodb-buffer-pool-size=128M --max-connections=200 --skip-name-resolve \
      >"$dir/stdout.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 300); do
      client -e 'SELECT 1' >/dev/null 2>&1 && break
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$logfile" >&2; die "mariadbd exited at start (log: $logfile)"; }
      sleep 0.1
    done
    client -e 'SELECT 1' >/dev/null 2>&1 || { tail -20 "$logfile" >&2; die "MariaDB did not accept connections within 30 s (log: $logfile)"; }
    # root over TCP with a password (127.0.0.1: --skip-name-resolve matches by address).
    client -e "CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '$password';
      GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
      FLUSH PRIVILEGES;" || die "cannot create the TCP user (log: $logfile)"
    wait_for_port 127.0.0.1 "$port" 30 || { tail -20 "$logfile" >&2; die "MariaDB does not listen on 127.0.0.1:$port (log: $logfile)"; }
    say "MariaDB running on 127.0.0.1:$port (pid $(cat "$pidfile"), user root, password \$STEPVIEW_MARIADB_PASSWORD or 'stepview', log $logfile)"
    ;;
  stop)
    if running; then
      pid="$(cat "$pidfile")"
      kill "$pid" # SIGTERM: mariadbd shuts down cleanly
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; say "MariaDB on port $port did not stop in 30 s: killed"; else say "MariaDB on port $port stopped"; fi
    fi
    rm -f "$pidfile"
    ;;
  status)
    if running; then echo "running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "not running"; exit 1; fi
    ;;
  *) die "usage: ops/mariadb.sh install|start|stop|status" ;;
esac
