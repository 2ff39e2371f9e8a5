#!/usr/bin/env python3
"""bk-job's own tables, written the way bk-job writes them, and bk-job's own answer read back from them.

    bkjob.py setup  --mysql HOST:PORT
    bkjob.py write  --mysql HOST:PORT --phase 1|2|3 --logs FILE
    bkjob.py oracle --mysql HOST:PORT --logs FILE [--pretty]

setup drops and creates `job_manage` and `job_execute` and applies bkjob_ddl.sql (bk-job's DDL).

write makes the row changes bk-job makes while it runs jobs (see README.md, "What the writes cover"):
phase 1 = rows that exist before the translator starts (shipped as a snapshot), phase 2 = live changes
afterwards (shipped from the binlog), phase 3 = bk-job's archiving deletes of an old finished job (run
after the oracle is taken: the oracle is bk-job's answer before the deletes). Script output chunks are
appended to --logs FILE, one MongoDB document per line as bk-job's log service inserts them into
`joblog.job_log_script_<yyyy_MM_dd>` (the day, UTC, of the step's create time), plus a `collection`
field naming that collection. Every phase is deterministic: the same phases give the same rows.

oracle prints bk-job's answer as JSON on stdout (shapes in README.md): for every script or file step,
every execute_count and batch filter, the (status, tag) groups of its hosts, and for every host row
the script output bk-job's log reader would return.

Connection: user root (STEPVIEW_MARIADB_USER), password STEPVIEW_MARIADB_PASSWORD (default
"stepview", what ops/mariadb.sh sets up). Needs pymysql (a dependency of mysql-replication, which
ops/env.sh installs).
"""

import argparse
import collections
import datetime
import json
import os
import sys

try:
    import pymysql
except ImportError:  # pragma: no cover
    sys.exit("error: pymysql is missing: run `. ops/env.sh; ensure_python_packages` "
             "(or pip install mysql-replication==1.0.17, which brings it)")

HERE = os.path.dirname(os.path.abspath(__file__))
DDL = os.path.join(HERE, "bkjob_ddl.sql")

# ExecuteObjectTaskStatusEnum (bk-job): every code; valOf maps anything else to UNKNOWN_ERROR (0).
HOST_STATUSES = {0, 1, 2, 3, 5, 7, 9, 11, 12, 13, 15, 16, 17, 18, 101, 102, 103, 104, 202, 203, 301,
                 303, 310, 311, 312, 320, 321, 329, 399, 403, 404, 500}
WAITING, RUNNING, SUCCESS = 5, 7, 9
# RunStatusEnum (bk-job): step and job status.
BLANK, R_RUNNING, R_SUCCESS, R_FAIL, R_IGNORE_ERROR, R_ROLLING_WAITING = 1, 2, 3, 4, 6, 15

SCRIPT, FILE = 1, 2
EXEC_TABLE = {SCRIPT: "gse_script_execute_obj_task", FILE: "gse_file_execute_obj_task"}
LEGACY_TABLE = {SCRIPT: "gse_script_agent_task", FILE: "gse_file_agent_task"}
BATCH_ROWS = 2000  # bk-job saves and updates result rows 2 000 at a time (BatchUtil.executeBatch)

APP_BIZ = (2, "biz", "2")
APP_BIZ_SET = (3, "biz_set", "9991001")


def die(msg):
    sys.exit("error: " + msg)


def ms(iso):
    """Epoch milliseconds of an ISO time in UTC ('2025-06-30T23:58:00')."""
    t = datetime.datetime.fromisoformat(iso).replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1000)


def collection_of(create_time_ms):
    day = datetime.datetime.fromtimestamp(create_time_ms / 1000, datetime.timezone.utc)
    return "job_log_script_" + day.strftime("%Y_%m_%d")


def connect(hostport, database=None):
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        die(f"--mysql wants HOST:PORT, got {hostport!r}")
    user = os.environ.get("STEPVIEW_MARIADB_USER", "root")
    password = os.environ.get("STEPVIEW_MARIADB_PASSWORD", "stepview")
    try:
        return pymysql.connect(host=host, port=int(port), user=user, password=password,
                               database=database, charset="utf8mb4", autocommit=False)
    except pymysql.err.OperationalError as e:
        die(f"cannot connect to MariaDB at {hostport} as {user}: {e}. Start it with "
            f"`ops/mariadb.sh start` (STEPVIEW_MARIADB_PORT picks the port; the password is "
            f"STEPVIEW_MARIADB_PASSWORD, default 'stepview')")


# ---------------------------------------------------------------------------------------------
# Hosts and targets, as bk-job serializes them into step_instance.target_servers

ALL_HOSTS = {}  # hostId -> host, every host made below (file sources are not in their step's targets)


def host(n, agent=True):
    """Host number n: CMDB-like id, an IPv4 (none for one IPv6-only host), some IPv6, two clouds."""
    h = {"hostId": 2000000 + n}
    ALL_HOSTS[h["hostId"]] = h
    h["agentId"] = f"020000000052540{n:019x}" if agent else ""
    cloud = 2 if n % 5 == 4 else 0
    h["cloudAreaId"] = cloud
    h["bkCloudName"] = "Cloud-Shanghai" if cloud else "Default Area"
    if n != 12:
        h["ip"] = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
    if n % 7 == 3 or n == 12:
        h["ipv6"] = f"fd00::a:{n:x}"
    h["alive"] = 1 if agent else 0
    h["osType"] = "1"
    h["hostname"] = f"node-{n}"
    return h


def container(cid, node):
    return {"id": cid, "containerId": f"containerd://{cid:064x}", "name": "nginx",
            "nodeHostId": node["hostId"], "nodeIp": node.get("ip"), "nodeAgentId": node["agentId"],
            "clusterId": 7, "clusterUID": "BCS-K8S-00007", "clusterName": "prod", "namespaceId": 3,
            "namespace": "default", "podName": f"nginx-{cid}", "workloadType": "Deployment"}


def targets_json(hosts, containers=()):
    """ExecuteTargetDTO of a 3.9+ step: the resolved executeObjects, plus the input host list."""
    objs = [{"id": f"1:{h['hostId']}", "type": 1, "resourceId": h["hostId"], "host": h,
             "invalid": False} for h in hosts]
    objs += [{"id": f"2:{c['id']}", "type": 2, "resourceId": c["id"], "container": c,
              "invalid": False} for c in containers]
    ts = {"staticIpList": [{"hostId": h["hostId"]} for h in hosts]}
    if containers:
        ts["staticContainerList"] = [{"id": c["id"]} for c in containers]
    ts["executeObjects"] = objs
    return json.dumps(ts, separators=(",", ":"), ensure_ascii=False)


def legacy_targets_json(hosts):
    """ExecuteTargetDTO of a step from before bk-job 3.9: the resolved hosts in ipList."""
    ip_list = [{k: h[k] for k in ("hostId", "agentId", "cloudAreaId", "bkCloudName", "ip", "alive") if k in h}
               for h in hosts]
    return json.dumps({"staticIpList": [{"hostId": h["hostId"]} for h in hosts], "ipList": ip_list},
                      separators=(",", ":"))


def parse_targets(target_servers):
    """(hosts by id, is_3_9_step): hosts of executeObjects of type 1, or ipList before 3.9."""
    ts = json.loads(target_servers) if target_servers else {}
    objs = ts.get("executeObjects")
    if objs:
        hosts = [o["host"] for o in objs if o.get("type") == 1 and o.get("host")]
        return collections.OrderedDict((h["hostId"], h) for h in hosts), True
    return collections.OrderedDict((h["hostId"], h) for h in ts.get("ipList") or []), False


# ---------------------------------------------------------------------------------------------
# Script output: MongoDB documents, one JSON object per line

class Logs:
    """Appends chunk documents to the logs file; each host's output offset continues across phases."""

    def __init__(self, path):
        self.path = path
        self.ends = collections.defaultdict(int)
        self.count = 0
        if os.path.exists(path):
            for doc in read_logs(path):
                self.count += 1
                self.ends[self._key(doc)] = max(self.ends[self._key(doc)], int(doc["offset"]))
        self.out = open(path, "a", encoding="utf-8")

    @staticmethod
    def _key(doc):
        obj = doc.get("executeObjectId") or f"1:{doc.get('hostId')}"
        return doc["collection"], doc["stepId"], doc["executeCount"], doc.get("batch", 0), obj

    def chunk(self, step, ec, batch, obj, content, t_ms, kind="normal"):
        """One chunk of obj's output. offset = the END of the chunk in UTF-8 bytes, as GSE reports it.
        kind "reuse": a bk-job system line that reuses the current end offset; "jchars": one that adds
        its length in Java characters instead of UTF-8 bytes."""
        self.count += 1
        oid = f"{t_ms // 1000:08x}a1b2c3d4e5{self.count:06x}"
        doc = {"collection": collection_of(step.create_time), "_id": oid, "stepId": step.id,
               "executeCount": ec}
        if batch > 0:
            doc["batch"] = batch
        if step.legacy:  # documents from before 3.9: hostId and the host's "cloud:ip"
            hid = int(obj.split(":")[1])
            doc["hostId"] = hid
            h = ALL_HOSTS.get(hid, {})
            if h.get("ip"):
                doc["ip"] = f"{h.get('cloudAreaId', 0)}:{h['ip']}"
        else:
            doc["executeObjectId"] = obj
        key = self._key(doc)
        end = self.ends[key]
        if kind == "reuse":
            offset = end
        elif kind == "jchars":
            offset = end + len(content)
        else:
            offset = end + len(content.encode("utf-8"))
        self.ends[key] = max(end, offset)
        doc["content"] = content
        doc["offset"] = offset
        self.out.write(json.dumps(doc, ensure_ascii=False) + "\n")

    def close(self):
        self.out.close()


def read_logs(path):
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except ValueError as e:
                    die(f"{path}:{n}: not a JSON document ({e})")
    return docs


# ---------------------------------------------------------------------------------------------
# Writes

TASK_FIELDS_SCRIPT = ["gse_task_id", "status", "start_time", "end_time", "total_time", "error_code",
                      "exit_code", "tag", "log_offset"]
TASK_FIELDS_FILE = ["gse_task_id", "status", "start_time", "end_time", "total_time", "error_code"]


class Writer:
    def __init__(self, conn, logs):
        self.conn = conn
        self.cur = conn.cursor()
        self.logs = logs
        self.gse_task_id = 50000000000  # set per phase (cmd_write): gse_task ids are not in these tables

    def execute(self, sql, args=None):
        self.cur.execute(sql, args)

    def insert(self, table, rows):
        """One multi-row INSERT per 2 000 rows and one commit each, as bk-job's batch saves."""
        if not rows:
            return
        cols = list(rows[0])
        sql = (f"INSERT INTO {table} ({', '.join('`%s`' % c for c in cols)}) "
               f"VALUES ({', '.join(['%s'] * len(cols))})")
        for i in range(0, len(rows), BATCH_ROWS):
            self.cur.executemany(sql, [[r[c] for c in cols] for r in rows[i:i + BATCH_ROWS]])
            self.conn.commit()

    def commit(self):
        self.conn.commit()

    def next_id(self, table, floor):
        self.cur.execute(f"SELECT COALESCE(MAX(id), %s) FROM {table}", (floor,))
        return self.cur.fetchone()[0] + 1

    def new_gse_task(self):
        self.gse_task_id += 1
        return self.gse_task_id

    # --- applications, jobs and steps -------------------------------------------------------

    def application(self, app, name):
        app_id, scope_type, scope_id = app
        self.insert("job_manage.application", [{
            "app_id": app_id, "app_name": name, "maintainers": "admin", "bk_supplier_account": "0",
            "app_type": 1 if scope_type == "biz" else 3, "timezone": "Asia/Shanghai",
            "language": "1", "bk_scope_type": scope_type, "bk_scope_id": scope_id,
            "attrs": None if scope_type == "biz" else '{"subBizIds":[2,5]}', "is_deleted": 0,
            "tenant_id": "default"}])

    def job(self, job_id, app, name, create_time, steps):
        """A job as bk-job creates it: the task_instance row, then every step_instance row (status 1,
        BLANK: not started), target_servers written once; a rolling step's rolling_config_id by an
        UPDATE after its insert (StepInstanceDAOImpl.updateStepRollingConfigId)."""
        self.insert("job_execute.task_instance", [{
            "id": job_id, "app_id": app[0], "task_id": 1000 + job_id % 1000,
            "task_template_id": 2000 + job_id % 1000, "name": name, "type": 0, "operator": "admin",
            "status": BLANK, "current_step_id": 0, "startup_mode": 1, "total_time": None,
            "callback_url": None, "is_debug_task": 0, "cron_task_id": 0, "create_time": create_time,
            "start_time": None, "end_time": None, "app_code": "bk_job"}])
        for order, s in enumerate(steps, 1):
            self.insert("job_execute.step_instance", [{
                "id": s["id"], "step_id": 3000 + s["id"] % 1000, "task_instance_id": job_id,
                "app_id": app[0], "name": s["name"], "type": s["type"], "operator": "admin",
                "status": BLANK, "execute_count": 0, "batch": 0, "target_servers": s["targets"],
                "abnormal_agent_ip_list": None, "start_time": None, "end_time": None,
                "total_time": None, "total_ip_num": s.get("total", 0), "create_time": create_time,
                "ignore_error": 1 if s.get("ignore_error") else 0, "step_num": len(steps),
                "step_order": order}])
            if s.get("rolling_config_id"):
                self.execute("UPDATE job_execute.step_instance SET rolling_config_id = %s WHERE id = %s",
                             (s["rolling_config_id"], s["id"]))
            self.commit()

    def job_status(self, job_id, status, t, start=False, end=False, step_id=None):
        sets, args = ["status = %s"], [status]
        if start:
            sets.append("start_time = %s")
            args.append(t)
        if end:
            sets += ["end_time = %s", "total_time = %s - start_time"]
            args += [t, t]
        if step_id:
            sets.append("current_step_id = %s")
            args.append(step_id)
        self.execute(f"UPDATE job_execute.task_instance SET {', '.join(sets)} WHERE id = %s", args + [job_id])
        self.commit()

    def step(self, step_id):
        return Step(self, step_id)


class Step:
    """A step as stored, with its result rows, loaded from the database (so a later phase continues
    where the previous one stopped)."""

    def __init__(self, w, step_id):
        self.w = w
        cur = w.conn.cursor(pymysql.cursors.DictCursor)
        cur.execute("SELECT * FROM job_execute.step_instance WHERE id = %s", (step_id,))
        row = cur.fetchone()
        if row is None:
            die(f"step {step_id} is not in job_execute.step_instance: run the earlier write phases first "
                f"(setup, write --phase 1, then 2, then 3)")
        self.id = step_id
        self.job = row["task_instance_id"]
        self.type = row["type"]
        self.create_time = row["create_time"]
        self.execute_count = row["execute_count"]
        self.hosts, supported = parse_targets(row["target_servers"])
        self.legacy = not supported
        self.table = "job_execute." + (LEGACY_TABLE if self.legacy else EXEC_TABLE)[self.type]
        self.fields = TASK_FIELDS_SCRIPT if self.type == SCRIPT else TASK_FIELDS_FILE
        cur.execute(f"SELECT * FROM {self.table} WHERE step_instance_id = %s ORDER BY id", (step_id,))
        self.rows = collections.OrderedDict()
        for r in cur.fetchall():
            obj = f"1:{r['host_id']}" if self.legacy else r["execute_obj_id"]
            self.rows[(r["execute_count"], r["batch"], r.get("mode", 1), obj)] = r

    # --- step-level changes ---

    def status(self, status, t=None, start=False, end=False, batch=None, execute_count=None):
        sets, args = ["status = %s"], [status]
        if start:
            sets.append("start_time = %s")
            args.append(t)
        if end:
            sets += ["end_time = %s", "total_time = %s - start_time"]
            args += [t, t]
        if batch is not None:
            sets.append("batch = %s")
            args.append(batch)
        if execute_count is not None:
            sets.append("execute_count = %s")
            args.append(execute_count)
            self.execute_count = execute_count
        self.w.execute(f"UPDATE job_execute.step_instance SET {', '.join(sets)} WHERE id = %s",
                       args + [self.id])
        self.w.commit()

    def retry_reset(self):
        """Retry: execute_count + 1 (addStepExecuteCount), then resetStepExecuteInfoForRetry."""
        self.w.execute("UPDATE job_execute.step_instance SET execute_count = execute_count + 1 WHERE id = %s",
                       (self.id,))
        self.w.execute("UPDATE job_execute.step_instance SET status = %s, end_time = NULL, total_time = NULL "
                       "WHERE id = %s", (R_RUNNING, self.id))
        self.w.commit()
        self.execute_count += 1

    # --- result rows ---

    def start_rows(self, objs, ec, batch=0, actual=None, gse_task_id=0, mode=1, t=None, agentless=()):
        """Result rows inserted when a step run starts: status 5 (WAITING), tag NULL; a host without an
        agent gets 18 (AGENT_NOT_INSTALLED) with its times set (buildInitialExecuteObjectTasks)."""
        table_id_floor = 30000000000 if self.legacy else 120000000000
        next_id = self.w.next_id(self.table, table_id_floor)
        rows = []
        for obj in objs:
            hid = int(obj.split(":")[1])
            no_agent = obj in agentless
            r = {"id": next_id, "task_instance_id": self.job, "step_instance_id": self.id,
                 "execute_count": ec, "actual_execute_count": actual, "batch": batch}
            next_id += 1
            if self.legacy:
                r["host_id"] = hid
                r["agent_id"] = ALL_HOSTS[hid]["agentId"]
            else:
                r["execute_obj_type"] = int(obj.split(":")[0])
                r["execute_obj_id"] = obj
            if self.type == FILE:
                r["mode"] = mode
            r.update({"gse_task_id": gse_task_id, "status": 18 if no_agent else WAITING,
                      "start_time": t if no_agent else None, "end_time": t if no_agent else None,
                      "total_time": 0 if no_agent else None, "error_code": 0})
            if self.type == SCRIPT:
                r.update({"exit_code": None, "tag": None, "log_offset": 0})
            rows.append(r)
        self._insert(rows)

    def _insert(self, rows):
        self.w.insert(self.table, rows)
        for r in rows:
            obj = f"1:{r['host_id']}" if self.legacy else r["execute_obj_id"]
            self.rows[(r["execute_count"], r["batch"], r.get("mode", 1), obj)] = dict(r)

    def legacy_insert_without_status(self, obj, ec, t):
        """A legacy row whose status was never written: the column's default, -1 (an unknown code)."""
        hid = int(obj.split(":")[1])
        next_id = self.w.next_id(self.table, 30000000000)
        self.w.execute(f"INSERT INTO {self.table} (id, step_instance_id, execute_count, actual_execute_count, "
                       "batch, host_id, agent_id, gse_task_id, start_time, task_instance_id) "
                       "VALUES (%s, %s, %s, %s, 0, %s, %s, %s, %s, %s)",
                       (next_id, self.id, ec, ec, hid, ALL_HOSTS[hid]["agentId"], self.w.new_gse_task(), t,
                        self.job))
        self.w.commit()

    def update(self, changes, ec, batch=0, mode=1):
        """changes: [(obj, {field: value})]. Each row updated with all of its task fields, keyed as
        bk-job keys it (task instance, step, execute_count, batch, execute object), 2 000 per commit."""
        for i in range(0, len(changes), BATCH_ROWS):
            for obj, fields in changes[i:i + BATCH_ROWS]:
                row = self.rows[(ec, batch, mode, obj)]
                row.update(fields)
                sets = ", ".join(f"`{f}` = %s" for f in self.fields)
                where = ("task_instance_id = %s AND step_instance_id = %s AND execute_count = %s AND batch = %s AND "
                         + ("host_id = %s" if self.legacy else "execute_obj_id = %s"))
                args = [row[f] for f in self.fields] + [self.job, self.id, ec, batch,
                                                          int(obj.split(":")[1]) if self.legacy else obj]
                if self.type == FILE:
                    where += " AND mode = %s"
                    args.append(mode)
                self.w.execute(f"UPDATE {self.table} SET {sets} WHERE {where}", args)
            self.w.commit()

    def run(self, objs, ec, t, batch=0, mode=1, gse_task_id=None):
        """Rows go 5 -> 7 (RUNNING, start time)."""
        self.update([(o, {"status": RUNNING, "start_time": t,
                          **({"gse_task_id": gse_task_id} if gse_task_id else {})}) for o in objs],
                    ec, batch, mode)

    def finish(self, results, ec, t, batch=0, mode=1):
        """results: [(obj, status, tag, exit_code)] -> end time, total time, error code."""
        changes = []
        for obj, status, tag, exit_code in results:
            row = self.rows[(ec, batch, mode, obj)]
            f = {"status": status, "end_time": t, "total_time": t - (row["start_time"] or t),
                 "error_code": 0 if status in (SUCCESS, 3) else 1}
            if self.type == SCRIPT:
                f.update({"tag": tag, "exit_code": exit_code})
            changes.append((obj, f))
        self.update(changes, ec, batch, mode)

    def out(self, obj, ec, content, t, batch=0, kind="normal"):
        self.w.logs.chunk(self, ec, batch, obj, content, t, kind)


def H(*ns):
    return [host(n) for n in ns]


def objs(hosts):
    return [f"1:{h['hostId']}" for h in hosts]


# Jobs and steps (ids in bk-job's ranges: job and step ids from 20000000000)
JOB_A, S1, S2, S3 = 20000000101, 20000000201, 20000000202, 20000000203  # biz 2: script, file, not started
JOB_B, S4 = 20000000102, 20000000204  # biz_set: rolling script step, 3 batches
JOB_F, S6 = 20000000103, 20000000206  # biz_set: "retry failed" (execute_count 0 -> 1)
JOB_G, S5 = 20000000104, 20000000205  # biz 2: hosts and containers
JOB_C, S7 = 20000000105, 20000000207  # biz 2: 2 100 hosts
JOB_D, S9, S10 = 20000000090, 20000000190, 20000000191  # biz 2: from before bk-job 3.9 (legacy tables)
JOB_E, S11, S12 = 20000000050, 20000000150, 20000000151  # biz 2: old finished job, archived in phase 3

A_HOSTS, A_SOURCE = H(1, 2, 3, 4, 5), host(6)
B_HOSTS = H(11, 12, 13, 14, 15, 16)
F_HOSTS = H(21, 22, 23, 24) + [host(25, agent=False)]
G_HOSTS = H(31, 32)
G_CONTAINERS = [container(9001, G_HOSTS[0]), container(9002, G_HOSTS[1])]
C_HOSTS = [host(n) for n in range(1001, 3101)]
D_SCRIPT_HOSTS, D_FILE_HOSTS, D_SOURCE = H(41, 42, 43), H(44, 45), host(46)
E_SCRIPT_HOSTS, E_FILE_HOSTS, E_SOURCE = H(51, 52, 53), H(54, 55), host(56)

T_A = ms("2025-06-30T23:58:00")  # job A runs across midnight: its output stays in the 2025_06_30 collection
T_B = ms("2025-07-01T00:05:00")
T_F = ms("2025-07-01T00:20:00")
T_G = ms("2025-07-01T00:30:00")
T_C = ms("2025-07-02T08:00:00")  # a new day's collection appears during the live phase
T_D = ms("2023-11-20T03:00:00")
T_E = ms("2025-05-01T02:00:00")


def phase1(w):
    w.application(APP_BIZ, "BlueKing")
    w.application(APP_BIZ_SET, "Game ops (business set)")

    # --- job A: a script step (ignore_error), a file step, and a step that never starts ---
    w.job(JOB_A, APP_BIZ, "deploy nginx", T_A, [
        {"id": S1, "name": "check disk", "type": SCRIPT, "targets": targets_json(A_HOSTS), "total": 5,
         "ignore_error": True},
        {"id": S2, "name": "push nginx.conf", "type": FILE, "targets": targets_json(A_HOSTS[:4]), "total": 4},
        {"id": S3, "name": "reload nginx", "type": SCRIPT, "targets": targets_json(A_HOSTS[:3]), "total": 3}])
    w.job_status(JOB_A, R_RUNNING, T_A + 1000, start=True, step_id=S1)
    s1 = w.step(S1)
    t = T_A + 2000
    gse = w.new_gse_task()
    s1.start_rows(objs(A_HOSTS), 0, actual=0, gse_task_id=gse)
    s1.status(R_RUNNING, t, start=True)
    h1, h2, h3, h4, h5 = objs(A_HOSTS)
    s1.run([h1, h2, h3, h4, h5], 0, t + 500)
    s1.out(h1, 0, "[2025-06-30 23:58:03] df -h /data\n", t + 1000)
    s1.out(h2, 0, "[2025-06-30 23:58:03] 检查磁盘 /data ...\n", t + 1000)
    s1.out(h3, 0, "[2025-06-30 23:58:03] partial output before the timeout\n", t + 1000)
    s1.out(h4, 0, "[2025-06-30 23:58:03] df -h /data\n", t + 1000)
    s1.out(h5, 0, "[2025-06-30 23:58:03] waiting for lock\n", t + 1000)
    t2 = ms("2025-07-01T00:00:05")  # after midnight: still the job's own day's collection
    s1.out(h1, 0, "/dev/vdb  100G  41G  59G  41% /data\n", t2)
    s1.out(h2, 0, "磁盘空间不足：/data 使用率 98%，请清理日志目录\n", t2)
    s1.out(h4, 0, "/dev/vdb  100G  12G  88G  12% /data\n", t2)
    # bk-job's own system lines: one reuses the current end offset, one adds its length in Java chars
    s1.out(h3, 0, "[2025-07-01 00:00:05][ERROR] Script execution timeout\n", t2 + 10, kind="reuse")
    s1.out(h5, 0, "[2025-07-01 00:00:05] 脚本执行超时，强制终止\n", t2 + 10, kind="jchars")
    s1.finish([(h1, SUCCESS, "", 0), (h2, 104, "disk full", 1), (h3, 102, None, None),
               (h4, SUCCESS, None, 0), (h5, 16, None, None)], 0, t2 + 20)
    s1.status(R_IGNORE_ERROR, t2 + 30, end=True)

    # the file step starts: the upload side (mode 0) and the targets (mode 1)
    s2 = w.step(S2)
    t = t2 + 1000
    w.job_status(JOB_A, R_RUNNING, t, step_id=S2)
    gse = w.new_gse_task()
    s2.start_rows([f"1:{A_SOURCE['hostId']}"], 0, actual=0, gse_task_id=gse, mode=0)
    s2.start_rows(objs(A_HOSTS[:4]), 0, actual=0, gse_task_id=gse, mode=1)
    s2.status(R_RUNNING, t, start=True)
    s2.run([f"1:{A_SOURCE['hostId']}"], 0, t + 100, mode=0)
    s2.run(objs(A_HOSTS[:2]), 0, t + 200)

    # --- job B: rolling script step, 3 batches of 2; every batch's rows inserted at batch 1 ---
    w.job(JOB_B, APP_BIZ_SET, "rolling upgrade", T_B, [
        {"id": S4, "name": "upgrade agent (rolling)", "type": SCRIPT, "targets": targets_json(B_HOSTS),
         "total": 6, "rolling_config_id": 1001}])
    w.job_status(JOB_B, R_RUNNING, T_B + 1000, start=True, step_id=S4)
    s4 = w.step(S4)
    t = T_B + 2000
    s4.status(R_RUNNING, t, start=True, batch=1)  # updateStepCurrentBatch, then RUNNING
    gse = w.new_gse_task()
    b = objs(B_HOSTS)
    for batch in (1, 2, 3):
        s4.start_rows(b[2 * batch - 2:2 * batch], 0, batch=batch, actual=0 if batch == 1 else None,
                      gse_task_id=gse if batch == 1 else 0)
    s4.run(b[0:2], 0, t + 500, batch=1)
    s4.out(b[0], 0, "upgrading gse_agent 2.1.5 -> 2.1.6\n", t + 1000, batch=1)
    s4.out(b[1], 0, "upgrading gse_agent 2.1.5 -> 2.1.6\n", t + 1000, batch=1)

    # --- job F: "retry failed" scenario, execute_count 0 fails ---
    w.job(JOB_F, APP_BIZ_SET, "fetch package", T_F, [
        {"id": S6, "name": "curl package", "type": SCRIPT, "targets": targets_json(F_HOSTS), "total": 5}])
    w.job_status(JOB_F, R_RUNNING, T_F + 1000, start=True, step_id=S6)
    s6 = w.step(S6)
    t = T_F + 2000
    f = objs(F_HOSTS)
    s6.start_rows(f, 0, actual=0, gse_task_id=w.new_gse_task(), t=t, agentless={f[4]})
    s6.status(R_RUNNING, t, start=True)
    s6.run(f[:4], 0, t + 300)
    for i, o in enumerate(f[:4]):
        s6.out(o, 0, f"curl -O http://repo/pkg.tar.gz (try 1 on host {i + 21})\n", t + 1000)
    s6.out(f[0], 0, "downloaded 12 MB\n", t + 2000)
    s6.out(f[1], 0, "downloaded 12 MB\n", t + 2000)
    s6.out(f[2], 0, "curl: (28) Operation timed out\n", t + 2000)
    s6.out(f[3], 0, "连接超时\n", t + 2000)
    s6.finish([(f[0], SUCCESS, "ok", 0), (f[1], SUCCESS, "ok", 0), (f[2], 104, "curl timeout", 28),
               (f[3], 104, "curl timeout", 7)], 0, t + 3000)
    s6.status(R_FAIL, t + 3100, end=True)
    w.job_status(JOB_F, R_FAIL, t + 3200, end=True)

    # --- job D: from before bk-job 3.9 (ipList targets, results keyed by host_id) ---
    w.job(JOB_D, APP_BIZ, "legacy inspection", T_D, [
        {"id": S9, "name": "inspect", "type": SCRIPT, "targets": legacy_targets_json(D_SCRIPT_HOSTS),
         "total": 3, "ignore_error": True},
        {"id": S10, "name": "collect logs", "type": FILE, "targets": legacy_targets_json(D_FILE_HOSTS),
         "total": 2}])
    w.job_status(JOB_D, R_RUNNING, T_D + 1000, start=True, step_id=S9)
    s9 = w.step(S9)
    t = T_D + 2000
    d = objs(D_SCRIPT_HOSTS)
    s9.start_rows(d[:2], 0, actual=0, gse_task_id=w.new_gse_task())
    s9.legacy_insert_without_status(d[2], 0, t)  # status -1: bk-job shows UNKNOWN_ERROR (0)
    s9.status(R_RUNNING, t, start=True)
    s9.run(d[:2], 0, t + 100)
    s9.out(d[0], 0, "uptime: 300 days\n", t + 500)
    s9.out(d[1], 0, "uptime: 2 days\n", t + 500)
    s9.out(d[1], 0, "kernel too old\n", t + 600)
    s9.finish([(d[0], SUCCESS, "", 0), (d[1], 104, "legacy fail", 3)], 0, t + 1000)
    s9.status(R_IGNORE_ERROR, t + 1100, end=True)
    s10 = w.step(S10)
    t = T_D + 5000
    w.job_status(JOB_D, R_RUNNING, t, step_id=S10)
    gse = w.new_gse_task()
    s10.start_rows([f"1:{D_SOURCE['hostId']}"], 0, actual=0, gse_task_id=gse, mode=0)
    s10.start_rows(objs(D_FILE_HOSTS), 0, actual=0, gse_task_id=gse, mode=1)
    s10.status(R_RUNNING, t, start=True)
    s10.run([f"1:{D_SOURCE['hostId']}"], 0, t + 100, mode=0)
    s10.finish([(f"1:{D_SOURCE['hostId']}", SUCCESS, None, None)], 0, t + 900, mode=0)
    s10.run(objs(D_FILE_HOSTS), 0, t + 200)
    s10.finish([(objs(D_FILE_HOSTS)[0], SUCCESS, None, None)], 0, t + 800)

    # --- job E: an old finished job (archived in phase 3) ---
    w.job(JOB_E, APP_BIZ, "old cleanup", T_E, [
        {"id": S11, "name": "clean tmp", "type": SCRIPT, "targets": targets_json(E_SCRIPT_HOSTS), "total": 3},
        {"id": S12, "name": "fetch report", "type": FILE, "targets": targets_json(E_FILE_HOSTS), "total": 2}])
    w.job_status(JOB_E, R_RUNNING, T_E + 1000, start=True, step_id=S11)
    s11 = w.step(S11)
    t = T_E + 2000
    e = objs(E_SCRIPT_HOSTS)
    s11.start_rows(e, 0, actual=0, gse_task_id=w.new_gse_task())
    s11.status(R_RUNNING, t, start=True)
    s11.run(e, 0, t + 100)
    for o in e:
        s11.out(o, 0, "removed 1024 files\n", t + 500)
    s11.finish([(o, SUCCESS, "", 0) for o in e], 0, t + 900)
    s11.status(R_SUCCESS, t + 1000, end=True)
    s12 = w.step(S12)
    t = T_E + 3000
    w.job_status(JOB_E, R_RUNNING, t, step_id=S12)
    gse = w.new_gse_task()
    src = f"1:{E_SOURCE['hostId']}"
    s12.start_rows([src], 0, actual=0, gse_task_id=gse, mode=0)
    s12.start_rows(objs(E_FILE_HOSTS), 0, actual=0, gse_task_id=gse, mode=1)
    s12.status(R_RUNNING, t, start=True)
    s12.run([src], 0, t + 100, mode=0)
    s12.run(objs(E_FILE_HOSTS), 0, t + 100)
    s12.finish([(src, SUCCESS, None, None)], 0, t + 700, mode=0)
    s12.finish([(o, SUCCESS, None, None) for o in objs(E_FILE_HOSTS)], 0, t + 800)
    s12.status(R_SUCCESS, t + 900, end=True)
    w.job_status(JOB_E, R_SUCCESS, t + 1000, end=True)


def phase2(w):
    # --- job A: the file step finishes, one target fails: the step and the job fail; S3 never starts ---
    s2 = w.step(S2)
    t = ms("2025-07-01T00:01:00")
    a = objs(A_HOSTS[:4])
    src = f"1:{A_SOURCE['hostId']}"
    s2.run(a[2:], 0, t)
    s2.finish([(src, SUCCESS, None, None)], 0, t + 1000, mode=0)
    s2.finish([(a[0], SUCCESS, None, None), (a[1], SUCCESS, None, None), (a[2], SUCCESS, None, None),
               (a[3], 202, None, None)], 0, t + 2000)
    s2.status(R_FAIL, t + 2100, end=True)
    w.job_status(JOB_A, R_FAIL, t + 2200, end=True)

    # --- job B: batch 1 finishes, the step waits for the user, batch 2 runs and one host fails ---
    s4 = w.step(S4)
    b = objs(B_HOSTS)
    t = T_B + 10000
    s4.out(b[0], 0, "done\n", t, batch=1)
    s4.out(b[1], 0, "完成\n", t, batch=1)
    s4.finish([(b[0], SUCCESS, "v2.1.6", 0), (b[1], SUCCESS, "v2.1.6", 0)], 0, t + 100, batch=1)
    s4.status(R_ROLLING_WAITING, t + 200)
    t += 60000
    s4.status(R_RUNNING, t, batch=2)
    gse = w.new_gse_task()
    # later batches: only actual_execute_count and gse_task_id change when they start (updateTaskFields)
    for o in b[2:4]:
        w.execute("UPDATE job_execute.gse_script_execute_obj_task SET actual_execute_count = %s, gse_task_id = %s "
                  "WHERE task_instance_id = %s AND step_instance_id = %s AND execute_count = 0 AND batch = 2 "
                  "AND execute_obj_id = %s", (0, gse, JOB_B, S4, o))
        s4.rows[(0, 2, 1, o)].update({"actual_execute_count": 0, "gse_task_id": gse})
    w.commit()
    s4.run(b[2:4], 0, t + 100, batch=2)
    s4.out(b[2], 0, "upgrading gse_agent 2.1.5 -> 2.1.6\n", t + 500, batch=2)
    s4.out(b[3], 0, "upgrading gse_agent 2.1.5 -> 2.1.6\n", t + 500, batch=2)
    s4.out(b[3], 0, "health check failed: port 48668 closed\n", t + 900, batch=2)
    s4.finish([(b[2], SUCCESS, "v2.1.6", 0), (b[3], 104, "health check failed", 2)], 0, t + 1000, batch=2)
    s4.status(R_FAIL, t + 1100, end=True)  # batch 3 never runs: its rows stay 5
    w.job_status(JOB_B, R_FAIL, t + 1200, end=True)

    # --- job F: "retry failed" -> execute_count 1 ---
    s6 = w.step(S6)
    t = T_F + 600000
    w.job_status(JOB_F, R_RUNNING, t)  # resetTaskExecuteInfoForRetry
    s6.retry_reset()
    gse = w.new_gse_task()
    copied = []
    for (ec, batch, mode, obj), old in list(s6.rows.items()):
        if ec != 0:
            continue
        r = {k: v for k, v in old.items() if k not in ("row_create_time", "row_update_time")}
        r["execute_count"] = 1
        succeeded = old["status"] in (SUCCESS, 3)
        executable = obj != objs(F_HOSTS)[4]
        if not succeeded:
            if executable:  # resetTaskInitialStatus: the old tag stays
                r.update({"actual_execute_count": 1, "status": WAITING, "start_time": None, "end_time": None,
                          "total_time": None, "error_code": 0, "log_offset": 0, "exit_code": None})
            r["gse_task_id"] = gse
        copied.append(r)
    next_id = w.next_id(s6.table, 120000000000)
    for r in copied:
        r["id"] = next_id
        next_id += 1
    s6._insert(copied)
    f = objs(F_HOSTS)
    s6.run(f[2:4], 1, t + 300)
    s6.out(f[2], 1, "curl -O http://repo/pkg.tar.gz (try 2)\n", t + 1000)
    s6.out(f[3], 1, "curl -O http://repo/pkg.tar.gz (try 2)\n", t + 1000)
    s6.out(f[2], 1, "downloaded 12 MB\n", t + 2000)
    s6.out(f[3], 1, "下载完成 12 MB\n", t + 2000)
    s6.finish([(f[2], SUCCESS, "ok", 0), (f[3], SUCCESS, "ok", 0)], 1, t + 3000)
    s6.status(R_FAIL, t + 3100, end=True)  # the host without an agent still fails the step
    w.job_status(JOB_F, R_FAIL, t + 3200, end=True)

    # --- job G: hosts and containers (containers are skipped by the v3 API and by stepview) ---
    w.job(JOB_G, APP_BIZ, "container check", T_G, [
        {"id": S5, "name": "check pods", "type": SCRIPT, "targets": targets_json(G_HOSTS, G_CONTAINERS),
         "total": 4}])
    w.job_status(JOB_G, R_RUNNING, T_G + 1000, start=True, step_id=S5)
    s5 = w.step(S5)
    t = T_G + 2000
    g = objs(G_HOSTS) + [f"2:{c['id']}" for c in G_CONTAINERS]
    s5.start_rows(g, 0, actual=0, gse_task_id=w.new_gse_task())
    s5.status(R_RUNNING, t, start=True)
    s5.run(g, 0, t + 100)
    for o in g:
        s5.out(o, 0, f"ps aux | grep nginx ({o})\n", t + 500)
    s5.finish([(g[0], SUCCESS, "", 0), (g[1], SUCCESS, "", 0), (g[2], SUCCESS, "", 0),
               (g[3], 104, "no nginx", 1)], 0, t + 1000)
    s5.status(R_FAIL, t + 1100, end=True)
    w.job_status(JOB_G, R_FAIL, t + 1200, end=True)

    # --- job C: 2 100 hosts (rows saved and updated 2 000 at a time) ---
    w.job(JOB_C, APP_BIZ, "fleet inventory", T_C, [
        {"id": S7, "name": "collect inventory", "type": SCRIPT, "targets": targets_json(C_HOSTS),
         "total": len(C_HOSTS)}])
    w.job_status(JOB_C, R_RUNNING, T_C + 1000, start=True, step_id=S7)
    s7 = w.step(S7)
    t = T_C + 2000
    c = objs(C_HOSTS)
    s7.start_rows(c, 0, actual=0, gse_task_id=w.new_gse_task())
    s7.status(R_RUNNING, t, start=True)
    s7.run(c, 0, t + 500)
    results = []
    for i, o in enumerate(c):
        n = 1001 + i
        s7.out(o, 0, f"host {n}: cpu=8 mem=16G\n", t + 1000 + i)
        if n % 50 == 0:
            s7.out(o, 0, f"host {n}: 采集失败 (exit 1)\n", t + 5000 + i)
            results.append((o, 104, "exit 1", 1))
        elif n % 97 == 0:
            results.append((o, SUCCESS, "slow", 0))
        elif n % 13 == 0:
            results.append((o, SUCCESS, None, 0))  # NULL tag: the same group as ''
        else:
            results.append((o, SUCCESS, "", 0))
    s7.finish(results, 0, t + 9000)
    s7.status(R_FAIL, t + 9100, end=True)
    w.job_status(JOB_C, R_FAIL, t + 9200, end=True)

    # --- job D (legacy): the last file target finishes ---
    s10 = w.step(S10)
    t = T_D + 7000
    s10.finish([(objs(D_FILE_HOSTS)[1], SUCCESS, None, None)], 0, t)
    s10.status(R_SUCCESS, t + 100, end=True)
    w.job_status(JOB_D, R_SUCCESS, t + 200, end=True)


def phase3(w):
    """bk-job's archiving: every row of an old finished job is deleted (after it was copied to the
    archive database), results first, then steps, then the job."""
    for table in ("gse_script_execute_obj_task", "gse_file_execute_obj_task"):
        w.execute(f"DELETE FROM job_execute.{table} WHERE task_instance_id = %s", (JOB_E,))
        w.commit()
    w.execute("DELETE FROM job_execute.step_instance WHERE task_instance_id = %s", (JOB_E,))
    w.commit()
    w.execute("DELETE FROM job_execute.task_instance WHERE id = %s", (JOB_E,))
    w.commit()


# ---------------------------------------------------------------------------------------------
# The oracle: bk-job's answer from the same tables

def val_of(status):
    """ExecuteObjectTaskStatusEnum.valOf: an unknown code is UNKNOWN_ERROR (0)."""
    return status if status in HOST_STATUSES else 0


def identity(h, hid):
    if h is None:
        return {"bk_host_id": hid, "ip": None, "ipv6": None, "bk_agent_id": None, "bk_cloud_id": None}
    return {"bk_host_id": hid, "ip": h.get("ip"), "ipv6": h.get("ipv6"), "bk_agent_id": h.get("agentId"),
            "bk_cloud_id": h.get("cloudAreaId")}


def oracle(conn, logs_path):
    cur = conn.cursor(pymysql.cursors.DictCursor)
    cur.execute("SELECT app_id, bk_scope_type, bk_scope_id FROM job_manage.application")
    apps = {r["app_id"]: (r["bk_scope_type"], r["bk_scope_id"]) for r in cur.fetchall()}

    docs = read_logs(logs_path) if logs_path and os.path.exists(logs_path) else []
    chunks = collections.defaultdict(list)  # (collection, step, executeCount, batch, obj) -> docs
    for d in docs:
        obj = d.get("executeObjectId") or (f"1:{d['hostId']}" if d.get("hostId") is not None else None)
        chunks[(d["collection"], int(d["stepId"]), int(d["executeCount"]), int(d.get("batch") or 0), obj)].append(d)

    cur.execute("SELECT * FROM job_execute.step_instance WHERE type IN (1, 2) ORDER BY id")
    steps_out, logs_out = [], []
    for st in cur.fetchall():
        scope_type, scope_id = apps.get(st["app_id"], (None, None))
        hosts, supported = parse_targets(st["target_servers"])
        rolling = bool(st["rolling_config_id"])
        if supported:
            table = EXEC_TABLE[st["type"]]
            sql = (f"SELECT * FROM job_execute.{table} WHERE step_instance_id = %s AND execute_obj_type = 1 "
                   "AND execute_obj_id LIKE '1:%%'")
        else:
            table = LEGACY_TABLE[st["type"]]
            sql = f"SELECT * FROM job_execute.{table} WHERE step_instance_id = %s AND host_id > 0"
        if st["type"] == FILE:
            sql += " AND mode = 1"  # the upload side is not a target's result
        cur.execute(sql + " ORDER BY id", (st["id"],))
        rows = cur.fetchall()
        for r in rows:
            r["_host"] = int(r["execute_obj_id"][2:]) if supported else r["host_id"]
        base = {"bk_scope_type": scope_type, "bk_scope_id": scope_id, "job_instance_id": st["task_instance_id"],
                "step_instance_id": st["id"]}
        collection = collection_of(st["create_time"])
        for ec in range(0, st["execute_count"] + 1):
            at_ec = [r for r in rows if r["execute_count"] == ec]
            batches = [None] + (sorted({r["batch"] for r in at_ec if r["batch"] > 0}) if rolling else [])
            for batch in batches:
                sel = at_ec if batch is None else [r for r in at_ec if r["batch"] == batch]
                items = [(val_of(r["status"]), r.get("tag") or "", r["_host"]) for r in sel]
                if not rolling and batch is None:
                    # a target without a row at this execute_count (a step not started yet) waits
                    present = {r["_host"] for r in sel}
                    items += [(WAITING, "", hid) for hid in hosts if hid not in present]
                groups = collections.defaultdict(list)
                for status, tag, hid in items:
                    groups[(status, tag)].append(hid)
                steps_out.append(dict(base, execute_count=ec, batch=batch, groups=[
                    {"status": status, "tag": tag,
                     "hosts": [identity(hosts.get(hid), hid) for hid in sorted(groups[(status, tag)])]}
                    for status, tag in sorted(groups)]))
            if st["type"] != SCRIPT:
                continue
            for r in sorted(at_ec, key=lambda r: (r["batch"], r["_host"])):
                # bk-job's reader: the retry named by actual_execute_count (execute_count > 0 only), the
                # row's batch when > 0, the collection of the step's create day; chunks by (offset, _id)
                actual = r["actual_execute_count"] if ec > 0 and r["actual_execute_count"] is not None else ec
                found = chunks.get((collection, st["id"], actual, r["batch"], f"1:{r['_host']}"), [])
                content = "".join(d["content"] for d in sorted(found, key=lambda d: (int(d["offset"]), d["_id"])))
                logs_out.append(dict(base, execute_count=ec, batch=r["batch"], bk_host_id=r["_host"],
                                     content=content))
    return {"steps": steps_out, "logs": logs_out}


# ---------------------------------------------------------------------------------------------

def split_sql(text):
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";").strip()]


def cmd_setup(args):
    conn = connect(args.mysql)
    cur = conn.cursor()
    for db in ("job_manage", "job_execute"):
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
    with open(DDL, encoding="utf-8") as f:
        for stmt in split_sql(f.read()):
            cur.execute(stmt.rstrip(";"))
    conn.commit()
    print(f"created job_manage and job_execute from {os.path.relpath(DDL)}", file=sys.stderr)


def cmd_write(args):
    conn = connect(args.mysql)
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema IN ('job_manage', 'job_execute')")
    if cur.fetchone()[0] < 7:
        die(f"bk-job's tables are missing: run `tests/cdc/bkjob.py setup --mysql {args.mysql}` first")
    if args.phase == 1:
        cur.execute("SELECT COUNT(*) FROM job_manage.application")
        if cur.fetchone()[0]:
            die("phase 1 has run already: run setup again (and truncate the logs file) to start over")
        if os.path.exists(args.logs) and os.path.getsize(args.logs):
            die(f"{args.logs} is not empty: phase 1 starts the logs file (remove it first)")
    logs = Logs(args.logs)
    w = Writer(conn, logs)
    w.gse_task_id = 50000000000 + {1: 0, 2: 1000, 3: 2000}[args.phase]
    try:
        {1: phase1, 2: phase2, 3: phase3}[args.phase](w)
    except pymysql.err.IntegrityError as e:
        die(f"phase {args.phase} collides with rows already there ({e}): each phase runs once, in order, "
            f"after setup")
    finally:
        logs.close()
    print(f"phase {args.phase} written; {logs.count} log documents in {args.logs}", file=sys.stderr)


def cmd_oracle(args):
    conn = connect(args.mysql)
    result = oracle(conn, args.logs)
    json.dump(result, sys.stdout, ensure_ascii=False, indent=1 if args.pretty else None)
    sys.stdout.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="drop and create job_manage and job_execute with bk-job's DDL")
    s.add_argument("--mysql", required=True, metavar="HOST:PORT")
    s = sub.add_parser("write", help="bk-job-like writes of one phase")
    s.add_argument("--mysql", required=True, metavar="HOST:PORT")
    s.add_argument("--phase", required=True, type=int, choices=(1, 2, 3))
    s.add_argument("--logs", required=True, metavar="FILE", help="script-output documents are appended here")
    s = sub.add_parser("oracle", help="bk-job's answer from the tables, as JSON on stdout")
    s.add_argument("--mysql", required=True, metavar="HOST:PORT")
    s.add_argument("--logs", required=True, metavar="FILE")
    s.add_argument("--pretty", action="store_true", help="indent the JSON")
    args = p.parse_args()
    {"setup": cmd_setup, "write": cmd_write, "oracle": cmd_oracle}[args.cmd](args)


if __name__ == "__main__":
    main()
