#!/usr/bin/env bash
# stepview's main job on one machine: the local broker, stepview consuming it, a simulated
# workload of BlueKing Job jobs, and example queries (printed, then run).
#   ops/demo.sh         start (again) from scratch and run the demo; the service keeps running,
#                       and a slow simulator keeps a job moving for the live page
#   ops/demo.sh stop    stop the simulator, stepview and the broker
# Settings: STEPVIEW_DEMO_PORT (HTTP, default 8080), STEPVIEW_BROKER_PORT (default 9092),
# DEMO_HOSTS (hosts per step, default 2000), DEMO_RATE (events/s, default 20000).
set -euo pipefail
. "$(dirname "$0")/env.sh"

demo="$STEPVIEW_HOME/demo"
http_port="${STEPVIEW_DEMO_PORT:-8080}"
broker_port="${STEPVIEW_BROKER_PORT:-9092}"
base="http://127.0.0.1:$http_port"
pidfile="$demo/stepview.pid"
simpid="$demo/simulate.pid"

stop_simulator() {
  if [ -f "$simpid" ] && kill -0 "$(cat "$simpid")" 2>/dev/null; then kill "$(cat "$simpid")"; fi
  rm -f "$simpid"
}

stop_service() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.2; done
    say "stepview stopped"
  fi
  rm -f "$pidfile"
}

if [ "${1:-}" = stop ]; then
  stop_simulator
  stop_service
  STEPVIEW_BROKER_PORT="$broker_port" "$STEPVIEW_ROOT/ops/broker.sh" stop
  exit 0
fi

ensure_packages
announce_first_build
ensure_tansu
build_stepview
STEPVIEW_BROKER_PORT="$broker_port" "$STEPVIEW_ROOT/ops/broker.sh" start

stop_simulator
stop_service
rm -rf "$demo/data"
mkdir -p "$demo"
app=bk-job-demo
secret=demo-secret
cat >"$demo/stepview.toml" <<TOML
# Demo configuration (see README, "Configuration").
data_dir = "$demo/data"

[http]
listen = "127.0.0.1:$http_port"

[kafka]
brokers = "127.0.0.1:$broker_port"
topic = "bkjob.gse.events"

[[apps]]
code = "$app"
secret_sha256 = "$("$STEPVIEW_BIN" hash-secret "$secret")"
scopes = ["biz:2"]
TOML

say "starting stepview (config $demo/stepview.toml, log $demo/stepview.log)"
nohup "$STEPVIEW_BIN" serve --config "$demo/stepview.toml" >"$demo/stepview.log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 300); do
  curl -sf "$base/readyz" >/dev/null && break
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$demo/stepview.log" >&2; die "stepview exited"; }
  sleep 0.2
done
curl -sf "$base/readyz" >/dev/null || die "stepview not ready after 60 s (log: $demo/stepview.log)"

job=$(date +%s) # fresh job ids each run, so reruns on the same broker do not mix
hosts="${DEMO_HOSTS:-2000}"
say "simulating 3 jobs x 3 steps x $hosts hosts (3 rolling batches, retries, 1% duplicates, 5% reordered)"
"$STEPVIEW_BIN" simulate --brokers "127.0.0.1:$broker_port" --jobs 3 --steps-per-job 3 \
  --hosts "$hosts" --batches 3 --duplicates 0.01 --reorder 0.05 --first-job-id "$job" \
  --rate "${DEMO_RATE:-20000}"

say "waiting for stepview to catch up"
sleep 2.5 # lag is reported from fetch responses every second: let it see the last events
for _ in $(seq 300); do
  lag=$(curl -sf "$base/metrics" | awk '/^stepview_consumer_lag_messages/ {s += $2} END {print s + 0}')
  [ "$lag" = 0 ] && break
  sleep 0.2
done
curl -sf "$base/metrics" | grep -E '^stepview_(events_total|index_hosts)' || true

auth="{\"bk_app_code\":\"$app\",\"bk_app_secret\":\"$secret\",\"bk_username\":\"admin\"}"
api="$base/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=$job"
script_step=$((job * 100 + 1))
file_step=$((job * 100 + 2))
run() { # what it shows, the command
  printf '\n# %s\n\033[1m$ %s\033[0m\n' "$1" "$2"
  eval "$2" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), ensure_ascii=False, indent=1)[:1500])'
}
say "example queries (the service keeps running; stop it with: ops/demo.sh stop)"
run "a script step: every (status, tag) group with its first host" "curl -s -H 'X-Bkapi-Authorization: $auth' '$api&step_instance_id=$script_step&max_host_num_per_group=1'"
run "in English: failed hosts (status 104) whose output contains 'error'" "curl -s -H 'X-Bkapi-Authorization: $auth' -H 'Blueking-Language: en' '$api&step_instance_id=$script_step&status=104&keyword=error&max_host_num_per_group=2'"
run "a file step, rolling batch 2, hosts whose IP contains 10.0.3." "curl -s -H 'X-Bkapi-Authorization: $auth' '$api&step_instance_id=$file_step&batch=2&search_ip=10.0.3.&max_host_num_per_group=2'"
run "the first try (execute_count=0): group sizes only" "curl -s -H 'X-Bkapi-Authorization: $auth' '$api&step_instance_id=$script_step&execute_count=0&max_host_num_per_group=0'"
run "no credentials: refused with 401" "curl -s '$api&step_instance_id=$script_step'"
etag=$(curl -s -o /dev/null -D - -H "X-Bkapi-Authorization: $auth" "$api&step_instance_id=$script_step&max_host_num_per_group=0" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
run "with the ETag of the last answer ($etag) and Prefer: wait=2: held until the step changes, else 304 after 2 s" "curl -s -o /dev/null -w '{\"http_status\": %{http_code}, \"seconds\": %{time_total}}' -H 'X-Bkapi-Authorization: $auth' -H 'If-None-Match: $etag' -H 'Prefer: wait=2' '$api&step_instance_id=$script_step'"
run "the job and its steps (get_job_instance_status)" "curl -s -H 'X-Bkapi-Authorization: $auth' '$base/api/v3/get_job_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=$job'"
run "one host's script output (get_job_instance_ip_log)" "curl -s -H 'X-Bkapi-Authorization: $auth' '$base/api/v3/get_job_instance_ip_log?bk_scope_type=biz&bk_scope_id=2&job_instance_id=$job&step_instance_id=$script_step&bk_host_id=1000'"

# A job that keeps running slowly, to watch on the live page.
live_job=$((job + 10))
say "a live job: simulating job $live_job slowly in the background (ops/demo.sh stop ends it)"
nohup "$STEPVIEW_BIN" simulate --brokers "127.0.0.1:$broker_port" --jobs 1 --steps-per-job 3 \
  --hosts "$hosts" --batches 3 --first-job-id "$live_job" --rate "${DEMO_LIVE_RATE:-60}" \
  >"$demo/simulate.log" 2>&1 &
echo $! >"$simpid"
page="$base/?bk_scope_type=biz&bk_scope_id=2&job_instance_id=$live_job&step_instance_id=$((live_job * 100 + 1))#app=$app&secret=$secret"
printf '\nLive step page (open in a browser; groups move as the simulator runs):\n  %s\n' "$page"
printf "\nEvent stream: curl -N -H 'X-Bkapi-Authorization: %s' '%s'\n" "$auth" "$base/api/v3/watch_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=$live_job&step_instance_id=$((live_job * 100 + 1))&max_host_num_per_group=0"
printf 'OpenAPI: %s/openapi.json    Metrics: curl -s %s/metrics | grep ^stepview_    Readiness: curl %s/readyz\n' "$base" "$base" "$base"
