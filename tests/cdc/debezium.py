#!/usr/bin/env python3
"""Change events in the format of Debezium's MySQL and MongoDB connectors, made from real row changes.

    debezium.py snapshot --mysql HOST:PORT --brokers B --state FILE [--prefix bkjob] [--partitions 3]
    debezium.py binlog   --mysql HOST:PORT --brokers B --state FILE [--prefix bkjob] [--partitions 3]
    debezium.py logs     --brokers B --logs FILE [--from-line N | --state FILE] [--prefix bkjob]
    debezium.py dump     --brokers B [--prefix bkjob] [--samples]

snapshot: every row of bk-job's tables (bkjob_ddl.sql) as an `op: "r"` event, read in one consistent
snapshot whose binlog position (SHOW MASTER STATUS, taken under a global read lock as Debezium does)
is written to --state. binlog: the row changes from that position up to the server's position at the
start of the run, read with mysql-replication's BinLogStreamReader, one event per row (`c`, `u` with
`before` and `after`, `d` with `before`, then a tombstone); the new position is written back.
logs: each script-output document of bkjob.py's --logs file as a Debezium MongoDB insert event on
`<prefix>.joblog.<collection>`, from line --from-line (0-based; or the `log_lines` kept in --state).

Value format: Debezium's JSON converter with `schemas.enable=false`, default envelope. Keys are the
row's primary key as JSON ({"id": 20000000201}); topics `<prefix>.<db>.<table>` are created with
--partitions partitions when missing; messages are partitioned by key with murmur2 (as Debezium's Java
producer does), so one row's changes stay in one partition, in order. Every message is flushed and its
delivery checked; any failure exits non-zero.

Column values as Debezium gives them: integer columns as JSON numbers (`tinyint(1)` too, or booleans
with --tinyint1-boolean, as with Debezium's TINYINT(1) converter), strings and TEXT as strings, NULL as
null, DATETIME as epoch milliseconds (io.debezium.time.Timestamp).
"""

import argparse
import calendar
import datetime
import decimal
import json
import os
import signal
import sys
import time

try:
    import pymysql
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import RotateEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
except ImportError as e:  # pragma: no cover
    sys.exit(f"error: {e}: run `. ops/env.sh; ensure_python_packages` (installs mysql-replication and "
             "confluent-kafka from PyPI)")

DEBEZIUM_VERSION = "2.7.3.Final"
# The tables stepview cdc reads, in snapshot order, with their primary keys.
TABLES = [
    ("job_manage", "application", "app_id"),
    ("job_execute", "task_instance", "id"),
    ("job_execute", "step_instance", "id"),
    ("job_execute", "gse_script_execute_obj_task", "id"),
    ("job_execute", "gse_file_execute_obj_task", "id"),
    ("job_execute", "gse_script_agent_task", "id"),
    ("job_execute", "gse_file_agent_task", "id"),
]
PK = {(db, t): pk for db, t, pk in TABLES}


def die(msg):
    sys.exit("error: " + msg)


def now_ms():
    return int(time.time() * 1000)


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# MariaDB

def mysql_settings(hostport):
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        die(f"--mysql wants HOST:PORT, got {hostport!r}")
    return {"host": host, "port": int(port), "user": os.environ.get("STEPVIEW_MARIADB_USER", "root"),
            "passwd": os.environ.get("STEPVIEW_MARIADB_PASSWORD", "stepview")}


def connect(hostport):
    s = mysql_settings(hostport)
    try:
        return pymysql.connect(host=s["host"], port=s["port"], user=s["user"], password=s["passwd"],
                               charset="utf8mb4", autocommit=True)
    except pymysql.err.OperationalError as e:
        die(f"cannot connect to MariaDB at {hostport}: {e}. Start it with `ops/mariadb.sh start` "
            f"(password: STEPVIEW_MARIADB_PASSWORD, default 'stepview')")


def check_binlog(conn, hostport):
    cur = conn.cursor()
    cur.execute("SHOW VARIABLES WHERE Variable_name IN "
                "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata')")
    v = {k.lower(): str(val).upper() for k, val in cur.fetchall()}
    want = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}
    bad = [f"{k}={v.get(k)} (wants {w})" for k, w in want.items() if v.get(k) != w]
    if bad:
        die(f"MariaDB at {hostport} cannot feed change events: {', '.join(bad)}. Start it with "
            f"`ops/mariadb.sh start`, which sets log_bin, binlog_format=ROW, binlog_row_image=FULL and "
            f"binlog_row_metadata=FULL")


def master_status(cur):
    cur.execute("SHOW MASTER STATUS")
    row = cur.fetchone()
    if not row:
        die("SHOW MASTER STATUS is empty: the server has no binlog (start it with `ops/mariadb.sh start`)")
    return {"file": row[0], "pos": int(row[1])}


def column_info(conn):
    """(db, table) -> [(column, is_tinyint1)] in table order."""
    cur = conn.cursor()
    cur.execute("SELECT table_schema, table_name, column_name, column_type FROM information_schema.columns "
                "WHERE table_schema IN ('job_manage', 'job_execute') ORDER BY table_schema, table_name, "
                "ordinal_position")
    cols = {}
    for db, table, col, ctype in cur.fetchall():
        cols.setdefault((db, table), []).append((col, ctype.lower().startswith("tinyint(1)")))
    missing = [f"{db}.{t}" for db, t, _ in TABLES if (db, t) not in cols]
    if missing:
        die(f"tables missing: {', '.join(missing)}: run `tests/cdc/bkjob.py setup --mysql HOST:PORT` first")
    return cols


def convert(value, tinyint1_bool, is_tinyint1):
    """A column value as Debezium's JSON converter writes it."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return value if tinyint1_bool and is_tinyint1 else int(value)
    if isinstance(value, int):
        return bool(value) if tinyint1_bool and is_tinyint1 else value
    if isinstance(value, datetime.datetime):  # DATETIME: io.debezium.time.Timestamp, the value read as UTC
        return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000
    if isinstance(value, datetime.date):
        return (value - datetime.date(1970, 1, 1)).days
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (str, float)):
        return value
    die(f"a column value of type {type(value).__name__} has no Debezium form here: {value!r}")


def row_json(values, columns, tinyint1_bool):
    """values: column -> value. In the table's column order, as Debezium writes the struct."""
    missing = [c for c, _ in columns if c not in values]
    if missing:
        die(f"the binlog row lacks columns {missing[:5]} (got {sorted(values)[:5]}...): is "
            f"binlog_row_metadata=FULL? (`ops/mariadb.sh start` sets it)")
    return {c: convert(values[c], tinyint1_bool, t1) for c, t1 in columns}


# ---------------------------------------------------------------------------------------------
# Kafka

class Sink:
    def __init__(self, brokers, partitions):
        self.brokers = brokers
        self.partitions = partitions
        self.errors = []
        self.sent = {}
        conf = {"bootstrap.servers": brokers, "socket.timeout.ms": 10000}
        self.admin = AdminClient(conf)
        try:
            self.topics = set(self.admin.list_topics(timeout=10).topics)
        except KafkaException as e:
            die(f"cannot reach the broker at {brokers}: {e}. Start one with "
                f"`STEPVIEW_BROKER_PORT=19092 ops/broker.sh start` and pass --brokers 127.0.0.1:19092")
        self.producer = Producer({"bootstrap.servers": brokers, "partitioner": "murmur2_random", "acks": "all",
                                  "linger.ms": 5, "message.max.bytes": 4 * 1024 * 1024,
                                  "message.timeout.ms": 60000})

    def ensure_topics(self, names):
        new = [n for n in names if n not in self.topics]
        if not new:
            return
        futures = self.admin.create_topics([NewTopic(n, num_partitions=self.partitions, replication_factor=1)
                                            for n in new], operation_timeout=30)
        for name, fut in futures.items():
            try:
                fut.result()
            except KafkaException as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
                    die(f"cannot create topic {name} on {self.brokers}: {e}")
            self.topics.add(name)
        # the producer must see the new topics' partitions before keyed messages go out
        deadline = time.time() + 30
        while time.time() < deadline:
            md = self.admin.list_topics(timeout=10).topics
            if all(n in md and len(md[n].partitions) > 0 and md[n].error is None for n in new):
                return
            time.sleep(0.2)
        die(f"topics {new} did not appear on {self.brokers} within 30 s")

    def _delivered(self, err, msg):
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")

    def send(self, topic, key, value):
        k = compact(key).encode()
        v = None if value is None else compact(value).encode()
        while True:
            try:
                self.producer.produce(topic, key=k, value=v, on_delivery=self._delivered)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)
        self.sent[topic] = self.sent.get(topic, 0) + 1

    def close(self):
        left = self.producer.flush(120)
        if left:
            die(f"{left} messages not delivered to {self.brokers} within 120 s")
        if self.errors:
            die(f"{len(self.errors)} messages failed to be delivered, first: {self.errors[0]}")
        for topic in sorted(self.sent):
            print(f"  {topic}: {self.sent[topic]} messages", file=sys.stderr)


def mysql_source(prefix, ts_ms, snapshot, db, table, server_id, file, pos, row):
    return {"version": DEBEZIUM_VERSION, "connector": "mysql", "name": prefix, "ts_ms": ts_ms,
            "snapshot": snapshot, "db": db, "sequence": None, "table": table, "server_id": server_id,
            "gtid": None, "file": file, "pos": pos, "row": row, "thread": None, "query": None}


def envelope(before, after, source, op):
    return {"before": before, "after": after, "source": source, "op": op, "ts_ms": now_ms(), "transaction": None}


def topic_of(prefix, db, table):
    return f"{prefix}.{db}.{table}"


# ---------------------------------------------------------------------------------------------
# State

def read_state(path, required=True):
    if not os.path.exists(path):
        if required:
            die(f"no state file {path}: run `debezium.py snapshot ... --state {path}` first")
        return {}
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as e:
            die(f"{path} is not the JSON state this script writes ({e}): run snapshot again")


def write_state(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Commands

def cmd_snapshot(args):
    conn = connect(args.mysql)
    check_binlog(conn, args.mysql)
    columns = column_info(conn)
    sink = Sink(args.brokers, args.partitions)
    sink.ensure_topics([topic_of(args.prefix, db, t) for db, t, _ in TABLES])
    cur = conn.cursor()
    # Debezium's snapshot: a global read lock, a consistent-snapshot transaction, the binlog position,
    # unlock, then read every table inside that transaction.
    cur.execute("FLUSH TABLES WITH READ LOCK")
    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    pos = master_status(cur)
    cur.execute("UNLOCK TABLES")
    rows = []
    for db, table, pk in TABLES:
        cols = columns[(db, table)]
        cur.execute(f"SELECT {', '.join('`%s`' % c for c, _ in cols)} FROM `{db}`.`{table}` ORDER BY `{pk}`")
        for r in cur.fetchall():
            rows.append((db, table, pk, dict(zip([c for c, _ in cols], r))))
    cur.execute("COMMIT")
    ts = now_ms()
    for i, (db, table, pk, values) in enumerate(rows):
        after = row_json(values, columns[(db, table)], args.tinyint1_boolean)
        flag = "first" if i == 0 else "last" if i == len(rows) - 1 else "true"
        src = mysql_source(args.prefix, ts, flag, db, table, 0, pos["file"], pos["pos"], 0)
        sink.send(topic_of(args.prefix, db, table), {pk: after[pk]}, envelope(None, after, src, "r"))
    sink.close()
    state = read_state(args.state, required=False)
    state.update(pos)
    write_state(args.state, state)
    print(f"snapshot: {len(rows)} rows; binlog position {pos['file']}:{pos['pos']} in {args.state}", file=sys.stderr)


def binlog_index(name):
    return int(name.rsplit(".", 1)[1])


def cmd_binlog(args):
    state = read_state(args.state)
    if "file" not in state or "pos" not in state:
        die(f"{args.state} has no binlog position: run `debezium.py snapshot ... --state {args.state}` first")
    conn = connect(args.mysql)
    check_binlog(conn, args.mysql)
    columns = column_info(conn)
    end = master_status(conn.cursor())
    start = (state["file"], state["pos"])
    if (binlog_index(end["file"]), end["pos"]) <= (binlog_index(start[0]), start[1]):
        print(f"binlog: nothing new after {start[0]}:{start[1]}", file=sys.stderr)
        return
    sink = Sink(args.brokers, args.partitions)
    sink.ensure_topics([topic_of(args.prefix, db, t) for db, t, _ in TABLES])
    stream = BinLogStreamReader(
        connection_settings=mysql_settings(args.mysql), server_id=5400 + os.getpid() % 1000,
        # file and position (is_mariadb=True would resume by GTID instead); quiet: errors are ours to tell
        resume_stream=True, log_file=start[0], log_pos=start[1], blocking=False, enable_logging=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, RotateEvent],
        only_schemas=["job_manage", "job_execute"])
    end_key = (binlog_index(end["file"]), end["pos"])
    counts = {"c": 0, "u": 0, "d": 0}
    # the reader reconnects forever on a lost connection: bound the whole read
    signal.signal(signal.SIGALRM, lambda *_: die(
        f"reading the binlog from {start[0]}:{start[1]} took over {args.timeout} s (is MariaDB at {args.mysql} "
        f"up? `ops/mariadb.sh status`); nothing was saved to {args.state}"))
    signal.alarm(args.timeout)
    try:
        for ev in stream:
            if isinstance(ev, RotateEvent):
                continue
            # the event's start in the binlog, and where it ends (log_pos: the next event's position)
            file = stream.log_file
            ev_end = ev.packet.log_pos
            if (binlog_index(file), ev_end) > end_key:
                break
            key = (ev.schema, ev.table)
            if key not in PK:
                continue
            pk, cols = PK[key], columns[key]
            topic = topic_of(args.prefix, *key)
            ts = ev.timestamp * 1000
            ev_pos = ev_end - ev.event_size
            for i, row in enumerate(ev.rows):
                src = mysql_source(args.prefix, ts, "false", ev.schema, ev.table, ev.packet.server_id, file,
                                   ev_pos, i)
                if isinstance(ev, WriteRowsEvent):
                    after = row_json(row["values"], cols, args.tinyint1_boolean)
                    sink.send(topic, {pk: after[pk]}, envelope(None, after, src, "c"))
                    counts["c"] += 1
                elif isinstance(ev, UpdateRowsEvent):
                    before = row_json(row["before_values"], cols, args.tinyint1_boolean)
                    after = row_json(row["after_values"], cols, args.tinyint1_boolean)
                    sink.send(topic, {pk: after[pk]}, envelope(before, after, src, "u"))
                    counts["u"] += 1
                elif isinstance(ev, DeleteRowsEvent):
                    before = row_json(row["values"], cols, args.tinyint1_boolean)
                    sink.send(topic, {pk: before[pk]}, envelope(before, None, src, "d"))
                    sink.send(topic, {pk: before[pk]}, None)  # the tombstone Debezium sends after a delete
                    counts["d"] += 1
    except pymysql.err.OperationalError as e:
        die(f"reading the binlog from {start[0]}:{start[1]} failed: {e}. If the server was restarted "
            f"(ops/mariadb.sh start wipes it), run setup, the writes and snapshot again")
    finally:
        signal.alarm(0)
        stream.close()
    sink.close()
    state.update(end)
    write_state(args.state, state)
    print(f"binlog: {counts['c']} inserts, {counts['u']} updates, {counts['d']} deletes from {start[0]}:{start[1]} "
          f"to {end['file']}:{end['pos']}", file=sys.stderr)


def extended_json(doc, n):
    """The document as Debezium's MongoDB connector puts it in `after`: a string of MongoDB extended JSON.
    ObjectId as $oid, the Long stepId (and executeCount, hostId) as $numberLong, batch as $numberInt;
    offset alternates between a plain number and $numberLong, so that readers meet both forms."""
    out = {"_id": {"$oid": doc["_id"]},
           "stepId": {"$numberLong": str(doc["stepId"])},
           "executeCount": {"$numberLong": str(doc["executeCount"])}}
    if "batch" in doc:
        out["batch"] = {"$numberInt": str(doc["batch"])}
    if "executeObjectId" in doc:
        out["executeObjectId"] = doc["executeObjectId"]
    if "hostId" in doc:
        out["hostId"] = {"$numberLong": str(doc["hostId"])}
    for k in ("ip", "ipv6"):
        if k in doc:
            out[k] = doc[k]
    out["content"] = doc["content"]
    out["offset"] = doc["offset"] if n % 2 == 0 else {"$numberLong": str(doc["offset"])}
    return json.dumps(out, ensure_ascii=False)  # Java's JsonWriter spacing: {"k": v, "k2": v2}


def cmd_logs(args):
    state = read_state(args.state, required=False) if args.state else {}
    first = args.from_line if args.from_line is not None else state.get("log_lines", 0)
    if not os.path.exists(args.logs):
        die(f"no logs file {args.logs}: `tests/cdc/bkjob.py write ... --logs {args.logs}` writes it")
    with open(args.logs, encoding="utf-8") as f:
        lines = f.readlines()
    docs = []
    for n, line in enumerate(lines[first:], first):
        if not line.strip():
            continue
        try:
            docs.append((n, json.loads(line)))
        except ValueError as e:
            die(f"{args.logs}:{n + 1}: not a JSON document ({e})")
    sink = Sink(args.brokers, args.partitions)
    sink.ensure_topics(sorted({f"{args.prefix}.joblog.{d['collection']}" for _, d in docs}))
    for n, d in docs:
        oid_time = int(d["_id"][:8], 16) * 1000
        src = {"version": DEBEZIUM_VERSION, "connector": "mongodb", "name": args.prefix, "ts_ms": oid_time,
               "snapshot": "false", "db": "joblog", "sequence": None, "rs": "rs0",
               "collection": d["collection"], "ord": 1, "lsid": None, "txnNumber": None, "wallTime": oid_time}
        value = {"before": None, "after": extended_json(d, n), "updateDescription": None, "source": src,
                 "op": "c", "ts_ms": now_ms(), "transaction": None}
        sink.send(f"{args.prefix}.joblog.{d['collection']}", {"id": json.dumps({"$oid": d["_id"]})}, value)
    sink.close()
    if args.state:
        state["log_lines"] = len(lines)
        write_state(args.state, state)
    print(f"logs: {len(docs)} documents from line {first} of {args.logs}; next --from-line {len(lines)}",
          file=sys.stderr)


def cmd_dump(args):
    """Reads every partition of the prefix's topics from the start: counts by topic and op, checks that
    a key never spans two partitions, prints one sample of each (topic kind, op)."""
    from confluent_kafka import Consumer, TopicPartition
    sink = Sink(args.brokers, 1)
    md = sink.admin.list_topics(timeout=10).topics
    topics = sorted(t for t in md if t.startswith(args.prefix + ".") and not t.endswith(".dlq"))
    if not topics:
        die(f"no topics {args.prefix}.* on {args.brokers}: run snapshot, binlog or logs first")
    # Read to the end by idleness, not by high watermarks: the test broker (Tansu) can report a high
    # watermark below the partition's last offset, which would end the read early.
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": "cdc-dump", "enable.auto.commit": False})
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in sorted(md[t].partitions)])
    counts = {t: {} for t in topics}
    key_parts, samples, bad = {}, {}, []
    idle_since = time.time()
    while time.time() - idle_since < args.idle:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        idle_since = time.time()
        if msg.error():
            die(f"{msg.topic()}: {msg.error()}")
        topic = msg.topic()
        key = msg.key().decode() if msg.key() is not None else None
        if key_parts.setdefault((topic, key), msg.partition()) != msg.partition():
            bad.append(f"{topic} key {key} in partitions {key_parts[(topic, key)]} and {msg.partition()}")
        if msg.value() is None:
            op = "tombstone"
        else:
            value = json.loads(msg.value())
            op = value.get("op")
            if op is None or "source" not in value:
                bad.append(f"{topic}@{msg.partition()}:{msg.offset()} is not an envelope")
        counts[topic][op] = counts[topic].get(op, 0) + 1
        kind = "joblog" if ".joblog." in topic else topic.split(".")[2]
        samples.setdefault((kind, op), (topic, key, msg.value()))
    consumer.close()
    report = {t: (len(md[t].partitions), counts[t]) for t in topics}
    for topic, (nparts, counts) in report.items():
        print(f"{topic} ({nparts} partitions): " + ", ".join(f"{op} {n}" for op, n in sorted(counts.items())))
    if args.samples:
        for (kind, op), (topic, key, value) in sorted(samples.items()):
            print(f"\n--- {kind} {op}: {topic} key {key}\n{value.decode() if value else 'null'}")
    if bad:
        die(f"{len(bad)} problems, first: {bad[0]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(s, mysql=True):
        if mysql:
            s.add_argument("--mysql", required=True, metavar="HOST:PORT")
        s.add_argument("--brokers", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:19092")
        s.add_argument("--prefix", default="bkjob", help="Debezium's topic prefix (default bkjob)")
        s.add_argument("--partitions", type=int, default=3, help="partitions of topics created here (default 3)")

    s = sub.add_parser("snapshot", help="every row as op r, then record the binlog position")
    common(s)
    s.add_argument("--state", required=True, metavar="FILE")
    s.add_argument("--tinyint1-boolean", action="store_true", help="tinyint(1) columns as JSON booleans")
    s = sub.add_parser("binlog", help="row changes since the recorded position")
    common(s)
    s.add_argument("--state", required=True, metavar="FILE")
    s.add_argument("--timeout", type=int, default=300, help="give up reading the binlog after this many seconds")
    s.add_argument("--tinyint1-boolean", action="store_true", help="tinyint(1) columns as JSON booleans")
    s = sub.add_parser("logs", help="script-output documents as MongoDB change events")
    common(s, mysql=False)
    s.add_argument("--logs", required=True, metavar="FILE")
    s.add_argument("--from-line", type=int, default=None, metavar="N", help="first line to send, 0-based")
    s.add_argument("--state", metavar="FILE", help="keep the next line to send here (log_lines)")
    s = sub.add_parser("dump", help="count the events in the prefix's topics by op, check keys, show samples")
    s.add_argument("--brokers", required=True)
    s.add_argument("--prefix", default="bkjob")
    s.add_argument("--samples", action="store_true", help="print one message of each table and op")
    s.add_argument("--idle", type=float, default=3, help="stop after this many seconds without a message")
    args = p.parse_args()
    {"snapshot": cmd_snapshot, "binlog": cmd_binlog, "logs": cmd_logs, "dump": cmd_dump}[args.cmd](args)


if __name__ == "__main__":
    main()
