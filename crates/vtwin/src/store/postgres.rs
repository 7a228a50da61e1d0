//! PostgreSQL backend: the same store interface for several nodes on one
//! database. Connections live on their own threads (the `postgres` client
//! runs its own runtime, which must not be entered from the server's async
//! workers); a call hands its work to one of them and waits for the answer.
//! Migrations run at open under an advisory lock, so nodes starting
//! together apply each once. Every tenant of a database may use its own
//! schema (`?schema=NAME` in the URL, created when missing).
use super::*;
use ::postgres::{Client, NoTls};
use std::sync::mpsc;
use std::sync::Arc;

type Job = Box<dyn FnOnce(&mut Client) + Send>;

pub struct PgStore {
    jobs: mpsc::Sender<Job>,
    /// The server URL (without the schema), for the watch connection.
    url: String,
    /// The NOTIFY channel of this schema's task changes.
    channel: String,
    /// This node's id, set when it watches: notes name their sender, so a
    /// node skips its own.
    me: std::sync::OnceLock<String>,
    /// The values of `vtwin_version` this handle's own changes made: they
    /// are not news to it.
    own: Arc<parking_lot::Mutex<Own>>,
}

/// What `external_version` has seen: the counter, how many of its steps
/// were other handles' changes, and own steps not yet passed.
#[derive(Default)]
struct Own {
    last: i64,
    foreign: i64,
    mine: std::collections::BTreeSet<i64>,
}

fn err(e: ::postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Database(format!("{}: {}", d.code().code(), d.message())),
        None => StoreError::Database(e.to_string()),
    }
}

/// Schema migrations, applied in order at open; `vtwin_schema` records how
/// many have run. Changes to users, permissions, objects and extensions
/// bump `vtwin_version`, which other nodes watch.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, full_name TEXT NOT NULL);
CREATE TABLE objects (moid TEXT PRIMARY KEY, ty TEXT NOT NULL, name TEXT NOT NULL, parent TEXT, attrs TEXT NOT NULL);
CREATE TABLE permissions (entity TEXT NOT NULL, principal TEXT NOT NULL, is_group BOOLEAN NOT NULL,
    role_id INTEGER NOT NULL, propagate BOOLEAN NOT NULL, PRIMARY KEY (entity, principal, is_group));
CREATE TABLE sessions (token TEXT PRIMARY KEY, key TEXT NOT NULL, user_name TEXT NOT NULL, login_time BIGINT NOT NULL,
    last_active BIGINT NOT NULL, locale TEXT NOT NULL, ip TEXT NOT NULL, user_agent TEXT NOT NULL);
CREATE TABLE tasks (key TEXT PRIMARY KEY, seq BIGINT NOT NULL, record TEXT NOT NULL);
CREATE TABLE extensions (key TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE vtwin_version (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO vtwin_version VALUES (1, 0);
"#,
    r#"
ALTER TABLE tasks ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN live BOOLEAN NOT NULL DEFAULT FALSE;
-- Unfinished tasks of the first step's nodes (text match: a record that is
-- not JSON must not stop the migration; a finished task marked by mistake
-- is only looked at once, when it is claimed).
UPDATE tasks SET live = TRUE WHERE (record LIKE '%"state":"queued"%' OR record LIKE '%"state":"running"%') AND record NOT LIKE '%"vcd":{%';
CREATE INDEX tasks_live ON tasks (owner) WHERE live;
CREATE TABLE nodes (id TEXT PRIMARY KEY, lease_until TIMESTAMPTZ NOT NULL, lock_key BIGINT NOT NULL DEFAULT -1);
CREATE SEQUENCE task_seq INCREMENT BY 64;
CREATE SEQUENCE object_seq;
SELECT setval('task_seq', (SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks), false);
"#,
];

/// Task sequence numbers per `nextval` (the sequence's increment).
const SEQ_BLOCK: i64 = 64;

const TASK_COLUMNS: &str = "key,seq,version,owner,live,record";

fn task_row(r: &::postgres::Row) -> TaskRow {
    TaskRow { key: r.get(0), seq: r.get(1), version: r.get(2), owner: r.get(3), live: r.get(4), record: r.get(5) }
}

const BUMP: &str = "UPDATE vtwin_version SET n = n + 1 WHERE id = 1 RETURNING n";

/// Connections kept open.
const CONNECTIONS: usize = 4;

impl PgStore {
    /// Connect to `url` (`postgres://user:pw@host:port/db[?schema=NAME]`)
    /// and apply the migrations.
    pub fn open(url: &str) -> Result<PgStore> {
        let (url, schema) = split_schema(url)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..CONNECTIONS {
            let mut c = Client::connect(&url, NoTls).map_err(err)?;
            if i == 0 {
                // One node at a time makes the schema and migrates it.
                c.batch_execute("SELECT pg_advisory_lock(7270161)").map_err(err)?;
                let r = (|| {
                    if let Some(s) = &schema {
                        c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"")).map_err(err)?;
                    }
                    if let Some(s) = &schema {
                        c.batch_execute(&format!("SET search_path TO \"{s}\"")).map_err(err)?;
                    }
                    migrate(&mut c)
                })();
                c.batch_execute("SELECT pg_advisory_unlock(7270161)").map_err(err)?;
                r?;
            } else if let Some(s) = &schema {
                c.batch_execute(&format!("SET search_path TO \"{s}\"")).map_err(err)?;
            }
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("vtwin-pg-{i}"))
                .spawn(move || loop {
                    let job = { rx.lock().recv() };
                    match job {
                        Ok(job) => job(&mut c),
                        Err(_) => break,
                    }
                })
                .map_err(|e| StoreError::Database(e.to_string()))?;
        }
        let channel = channel(schema.as_deref());
        let store = PgStore { jobs: tx, url, channel, me: Default::default(), own: Default::default() };
        // Changes made before this handle opened are not news to it.
        store.own.lock().last =
            store.run(|c| Ok(c.query_one("SELECT n FROM vtwin_version WHERE id=1", &[])?.get(0)))?;
        Ok(store)
    }

    /// The payload telling other nodes that this one changed `key`.
    fn note(&self, key: &str) -> String {
        format!("{} {key}", self.me.get().map_or("-", String::as_str))
    }

    /// Run `f` on a connection and wait for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, ::postgres::Error> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| StoreError::Unavailable("the database connections are gone".into()))?;
        rx.recv().map_err(|_| StoreError::Unavailable("the database connection failed".into()))?.map_err(err)
    }
}

/// LISTEN on the task channel and hand other nodes' changes to `on`, in
/// batches: everything that arrived while the last batch was handled. A
/// lost connection is made again, and then everything is read afresh.
fn watch(first: Client, url: &str, chan: &str, node: &str, on: Box<dyn Fn(TaskNote) + Send + Sync>) {
    use ::postgres::fallible_iterator::FallibleIterator;
    // The first connection LISTENs before the watch starts (see
    // `watch_tasks`); every (re)connection then reads everything once, so
    // nothing changed before or between connections is missed.
    let mut client = Some(first);
    loop {
        let mut c = match client.take() {
            Some(c) => c,
            None => match Client::connect(url, NoTls).and_then(|mut c| listen(&mut c, chan, node).map(|_| c)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "task watch: cannot reconnect");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    continue;
                }
            },
        };
        on(TaskNote::Resync);
        loop {
            let mut keys: Vec<String> = vec![];
            let mut take = |payload: &str| {
                // "<node> <key>": keys have no spaces, node names may.
                if let Some((from, key)) = payload.rsplit_once(' ') {
                    if from != node && !keys.iter().any(|k| k == key) {
                        keys.push(key.to_string());
                    }
                }
            };
            // Wake now and then to see that the connection still stands: a
            // connection that died silently would otherwise wait for ever.
            let first = c
                .notifications()
                .timeout_iter(std::time::Duration::from_secs(5))
                .next()
                .map(|m| m.map(|m| m.payload().to_string()));
            match first {
                Ok(Some(p)) => take(&p),
                Ok(None) => {
                    if let Err(e) = c.simple_query("SELECT 1") {
                        tracing::warn!(error = %e, "task watch: connection lost");
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "task watch: connection lost");
                    break;
                }
            }
            {
                let mut n = c.notifications();
                let mut more = n.iter();
                while let Ok(Some(m)) = more.next() {
                    take(m.payload());
                }
            }
            if !keys.is_empty() {
                on(TaskNote::Changed(keys));
            }
        }
    }
}

/// LISTEN on the channel, and hold this life's advisory lock on the same
/// session: it is held while the process lives and its connection stands,
/// so other nodes see at once (in `pg_locks`) that a killed node is gone,
/// without waiting for its lease to run out.
fn listen(c: &mut Client, chan: &str, node: &str) -> std::result::Result<(), ::postgres::Error> {
    c.batch_execute(&format!("LISTEN \"{chan}\""))?;
    c.execute("SELECT pg_advisory_lock(7270162, $1)", &[&life_key(node)]).map(|_| ())
}

/// The advisory-lock key of a node's life (0 ..= i32::MAX).
fn life_key(node: &str) -> i32 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(node.as_bytes());
    (u32::from_be_bytes([h[0], h[1], h[2], h[3]]) & 0x7fff_ffff) as i32
}

/// The NOTIFY channel of a schema's task changes (a hash: channel names
/// are at most 63 bytes, schema names may be longer).
fn channel(schema: Option<&str>) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(schema.unwrap_or("public").as_bytes());
    format!("vtwin_tasks_{}", &hex::encode(h)[..24])
}

/// `?schema=NAME` off the URL (letters, digits, `_` only).
fn split_schema(url: &str) -> Result<(String, Option<String>)> {
    let Some((base, q)) = url.split_once('?') else { return Ok((url.to_string(), None)) };
    let mut rest = vec![];
    let mut schema = None;
    for kv in q.split('&') {
        match kv.split_once('=') {
            Some(("schema", s)) => {
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(StoreError::Config(format!("schema '{s}' must be letters, digits and _")));
                }
                schema = Some(s.to_string());
            }
            _ => rest.push(kv),
        }
    }
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    Ok((url, schema))
}

fn migrate(c: &mut Client) -> Result<()> {
    // The caller holds the advisory lock: one node migrates at a time.
    let mut tx = c.transaction().map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS vtwin_schema (version INTEGER NOT NULL)").map_err(err)?;
    let v: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM vtwin_schema", &[]).map_err(err)?.get(0);
    for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        tx.batch_execute(m).map_err(err)?;
        tx.execute("INSERT INTO vtwin_schema (version) VALUES ($1)", &[&((i + 1) as i32)]).map_err(err)?;
    }
    tx.commit().map_err(err)
}

impl Store for PgStore {
    fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.run(move |c| Ok(c.query_opt("SELECT value FROM meta WHERE key=$1", &[&key])?.map(|r| r.get(0))))
    }
    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT INTO meta(key,value) VALUES($1,$2) ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
                &[&key, &value],
            )
            .map(|_| ())
        })
    }
    fn put_user(&self, u: &UserRecord) -> Result<()> {
        let u = u.clone();
        let own = self.own.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO users(name,password_hash,full_name) VALUES($1,$2,$3) ON CONFLICT (name) DO UPDATE SET password_hash=EXCLUDED.password_hash, full_name=EXCLUDED.full_name",
                &[&u.name, &u.password_hash, &u.full_name],
            )?;
            let bumped: i64 = tx.query_one(BUMP, &[])?.get(0);
            tx.commit()?;
            own.lock().mine.insert(bumped);
            Ok(())
        })
    }
    fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let name = name.to_string();
        self.run(move |c| {
            Ok(c.query_opt("SELECT name,password_hash,full_name FROM users WHERE name=$1", &[&name])?
                .map(|r| UserRecord { name: r.get(0), password_hash: r.get(1), full_name: r.get(2) }))
        })
    }
    fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.run(|c| {
            Ok(c.query("SELECT name,password_hash,full_name FROM users ORDER BY name", &[])?
                .iter()
                .map(|r| UserRecord { name: r.get(0), password_hash: r.get(1), full_name: r.get(2) })
                .collect())
        })
    }
    fn put_objects(&self, objs: &[ObjectRecord]) -> Result<()> {
        let objs = objs.to_vec();
        let own = self.own.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(
                "INSERT INTO objects(moid,ty,name,parent,attrs) VALUES($1,$2,$3,$4,$5) ON CONFLICT (moid) DO UPDATE SET ty=EXCLUDED.ty, name=EXCLUDED.name, parent=EXCLUDED.parent, attrs=EXCLUDED.attrs",
            )?;
            for o in &objs {
                tx.execute(&st, &[&o.moid, &o.ty, &o.name, &o.parent, &o.attrs.to_string()])?;
            }
            let bumped: i64 = tx.query_one(BUMP, &[])?.get(0);
            tx.commit()?;
            own.lock().mine.insert(bumped);
            Ok(())
        })
    }
    fn delete_object(&self, moid: &str) -> Result<()> {
        let moid = moid.to_string();
        let own = self.own.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM objects WHERE moid=$1", &[&moid])?;
            let bumped: i64 = tx.query_one(BUMP, &[])?.get(0);
            tx.commit()?;
            own.lock().mine.insert(bumped);
            Ok(())
        })
    }
    fn list_objects(&self) -> Result<Vec<ObjectRecord>> {
        self.run(|c| {
            Ok(c.query("SELECT moid,ty,name,parent,attrs FROM objects", &[])?
                .iter()
                .map(|r| ObjectRecord {
                    moid: r.get(0),
                    ty: r.get(1),
                    name: r.get(2),
                    parent: r.get(3),
                    attrs: serde_json::from_str(r.get::<_, &str>(4)).unwrap_or(serde_json::Value::Null),
                })
                .collect())
        })
    }
    fn put_permission(&self, p: &PermissionRecord) -> Result<()> {
        let p = p.clone();
        let own = self.own.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO permissions(entity,principal,is_group,role_id,propagate) VALUES($1,$2,$3,$4,$5) ON CONFLICT (entity,principal,is_group) DO UPDATE SET role_id=EXCLUDED.role_id, propagate=EXCLUDED.propagate",
                &[&p.entity, &p.principal, &p.group, &p.role_id, &p.propagate],
            )?;
            let bumped: i64 = tx.query_one(BUMP, &[])?.get(0);
            tx.commit()?;
            own.lock().mine.insert(bumped);
            Ok(())
        })
    }
    fn remove_permission(&self, entity: &str, principal: &str, group: bool) -> Result<bool> {
        let (entity, principal) = (entity.to_string(), principal.to_string());
        let own = self.own.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM permissions WHERE entity=$1 AND principal=$2 AND is_group=$3",
                &[&entity, &principal, &group],
            )?;
            let bumped: i64 = tx.query_one(BUMP, &[])?.get(0);
            tx.commit()?;
            own.lock().mine.insert(bumped);
            Ok(n > 0)
        })
    }
    fn list_permissions(&self) -> Result<Vec<PermissionRecord>> {
        self.run(|c| {
            Ok(c.query("SELECT entity,principal,is_group,role_id,propagate FROM permissions", &[])?
                .iter()
                .map(|r| PermissionRecord {
                    entity: r.get(0),
                    principal: r.get(1),
                    group: r.get(2),
                    role_id: r.get(3),
                    propagate: r.get(4),
                })
                .collect())
        })
    }
    fn get_session(&self, token: &str) -> Result<Option<SessionRecord>> {
        let token = token.to_string();
        self.run(move |c| {
            Ok(c.query_opt(
                "SELECT token,key,user_name,login_time,last_active,locale,ip,user_agent FROM sessions WHERE token=$1",
                &[&token],
            )?
            .map(|r| SessionRecord {
                token: r.get(0),
                key: r.get(1),
                user: r.get(2),
                login_time: r.get(3),
                last_active: r.get(4),
                locale: r.get(5),
                ip: r.get(6),
                user_agent: r.get(7),
            }))
        })
    }
    fn apply_sessions(&self, ops: &[SessionOp]) -> Result<()> {
        let ops = ops.to_vec();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            for op in &ops {
                match op {
                    SessionOp::Put(s) => {
                        tx.execute(
                            "INSERT INTO sessions(token,key,user_name,login_time,last_active,locale,ip,user_agent) VALUES($1,$2,$3,$4,$5,$6,$7,$8)
                             ON CONFLICT (token) DO UPDATE SET key=EXCLUDED.key, user_name=EXCLUDED.user_name, login_time=EXCLUDED.login_time,
                             last_active=EXCLUDED.last_active, locale=EXCLUDED.locale, ip=EXCLUDED.ip, user_agent=EXCLUDED.user_agent",
                            &[&s.token, &s.key, &s.user, &s.login_time, &s.last_active, &s.locale, &s.ip, &s.user_agent],
                        )?;
                    }
                    SessionOp::Delete(t) => {
                        tx.execute("DELETE FROM sessions WHERE token=$1", &[t])?;
                    }
                }
            }
            tx.commit()
        })
    }
    fn insert_task(&self, t: &TaskRow) -> Result<()> {
        let (t, chan, note) = (t.clone(), self.channel.clone(), self.note(&t.key));
        self.run(move |c| {
            c.execute(
                "WITH i AS (INSERT INTO tasks(key,seq,version,owner,live,record) VALUES($1,$2,$3,$4,$5,$6) RETURNING key) SELECT pg_notify($7, $8) FROM i",
                &[&t.key, &t.seq, &t.version, &t.owner, &t.live, &t.record, &chan, &note],
            )
            .map(|_| ())
        })
    }
    fn update_task(&self, key: &str, version: i64, live: bool, record: &str) -> Result<Option<i64>> {
        let (key, record, chan, note) = (key.to_string(), record.to_string(), self.channel.clone(), self.note(key));
        self.run(move |c| {
            Ok(c.query_opt(
                "WITH u AS (UPDATE tasks SET record=$3, live=$4, version=version+1 WHERE key=$1 AND version=$2 RETURNING version)
                 SELECT version, pg_notify($5, $6) FROM u",
                &[&key, &version, &record, &live, &chan, &note],
            )?
            .map(|r| r.get(0)))
        })
    }
    fn get_tasks(&self, keys: &[String]) -> Result<Vec<TaskRow>> {
        let keys = keys.to_vec();
        self.run(move |c| {
            Ok(c.query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE key = ANY($1)"), &[&keys])?
                .iter()
                .map(task_row)
                .collect())
        })
    }
    fn delete_tasks(&self, keys: &[String]) -> Result<()> {
        let (keys, chan, me) = (keys.to_vec(), self.channel.clone(), self.note(""));
        self.run(move |c| c.execute("WITH d AS (DELETE FROM tasks WHERE key = ANY($1) RETURNING key) SELECT pg_notify($2, $3 || key) FROM d", &[&keys, &chan, &me]).map(|_| ()))
    }
    fn list_tasks(&self) -> Result<Vec<TaskRow>> {
        self.run(|c| {
            Ok(c.query(&format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY seq"), &[])?.iter().map(task_row).collect())
        })
    }
    fn task_seqs(&self) -> Result<(i64, i64)> {
        self.run(|c| Ok((c.query_one("SELECT nextval('task_seq')", &[])?.get(0), SEQ_BLOCK)))
    }
    fn heartbeat(&self, node: &str, lease_ms: i64) -> Result<()> {
        let (node, key) = (node.to_string(), life_key(node));
        self.run(move |c| {
            c.execute(
                "INSERT INTO nodes(id,lease_until,lock_key) VALUES($1, clock_timestamp() + make_interval(secs => $2::BIGINT / 1000.0), $3)
                 ON CONFLICT (id) DO UPDATE SET lease_until=EXCLUDED.lease_until",
                &[&node, &lease_ms, &(key as i64)],
            )
            .map(|_| ())
        })
    }
    fn release(&self, node: &str) -> Result<()> {
        let node = node.to_string();
        self.run(move |c| c.execute("DELETE FROM nodes WHERE id=$1", &[&node]).map(|_| ()))
    }
    fn claim_orphans(&self, node: &str, previous: &str) -> Result<Vec<TaskRow>> {
        let (node, previous, chan) = (node.to_string(), previous.to_string(), self.channel.clone());
        self.run(move |c| {
            let mut tx = c.transaction()?;
            // Rows another node is claiming are skipped, not waited for:
            // each orphan goes to exactly one node.
            let rows: Vec<TaskRow> = tx
                .query(
                    "WITH o AS (
                            SELECT key, owner FROM tasks WHERE live AND owner<>$1
                              AND (starts_with(owner, $2) OR owner NOT IN (
                                  SELECT id FROM nodes WHERE lease_until > clock_timestamp()
                                    AND lock_key IN (SELECT objid::BIGINT FROM pg_locks WHERE locktype='advisory' AND classid=7270162 AND objsubid=2 AND granted)))
                            FOR UPDATE SKIP LOCKED)
                         UPDATE tasks t SET owner=$1, version=t.version+1 FROM o WHERE t.key=o.key
                         RETURNING t.key, t.seq, t.version, o.owner, t.live, t.record",
                    &[&node, &previous],
                )?
                .iter()
                .map(task_row)
                .collect();
            for r in &rows {
                tx.execute("SELECT pg_notify($1, $2)", &[&chan, &format!("{node} {}", r.key)])?;
            }
            tx.execute("DELETE FROM nodes WHERE lease_until < clock_timestamp() - interval '1 minute' OR (starts_with(id, $1) AND id<>$2)", &[&previous, &node])?;
            tx.commit()?;
            Ok(rows)
        })
    }
    fn watch_tasks(&self, node: &str, on: Box<dyn Fn(TaskNote) + Send + Sync>) -> Result<bool> {
        let _ = self.me.set(node.to_string());
        let (url, chan, node) = (self.url.clone(), self.channel.clone(), node.to_string());
        // Connect once now, so a bad URL shows at start (on a thread of its
        // own: the caller may be on the server's runtime).
        // LISTEN before returning: changes from now on are heard.
        let (u, ch) = (url.clone(), chan.clone());
        let me = node.clone();
        let first = std::thread::spawn(move || {
            Client::connect(&u, NoTls).and_then(|mut c| listen(&mut c, &ch, &me).map(|_| c))
        })
        .join()
        .map_err(|_| StoreError::Unavailable("connecting the task watch failed".into()))?
        .map_err(err)?;
        std::thread::Builder::new()
            .name("vtwin-pg-watch".into())
            .spawn(move || watch(first, &url, &chan, &node, on))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(true)
    }
    fn put_extension(&self, key: &str, record: &str) -> Result<()> {
        let (key, record) = (key.to_string(), record.to_string());
        let own = self.own.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("INSERT INTO extensions(key,record) VALUES($1,$2) ON CONFLICT (key) DO UPDATE SET record=EXCLUDED.record", &[&key, &record])?;
            let bumped: i64 = tx.query_one(BUMP, &[])?.get(0);
            tx.commit()?;
            own.lock().mine.insert(bumped);
            Ok(())
        })
    }
    fn delete_extension(&self, key: &str) -> Result<bool> {
        let key = key.to_string();
        let own = self.own.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let n = tx.execute("DELETE FROM extensions WHERE key=$1", &[&key])?;
            let bumped: i64 = tx.query_one(BUMP, &[])?.get(0);
            tx.commit()?;
            own.lock().mine.insert(bumped);
            Ok(n > 0)
        })
    }
    fn list_extensions(&self) -> Result<Vec<(String, String)>> {
        self.run(|c| {
            Ok(c.query("SELECT key,record FROM extensions ORDER BY key", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }
    /// How many of the counter's steps were other handles' changes. An own
    /// change whose step is read before it is recorded counts as news (a
    /// needless reload); another's never counts as own.
    fn external_version(&self) -> Result<i64> {
        let n: i64 = self.run(|c| Ok(c.query_one("SELECT n FROM vtwin_version WHERE id=1", &[])?.get(0)))?;
        let mut own = self.own.lock();
        if n > own.last {
            let last = own.last;
            if n - last > 100_000 {
                own.foreign += 1;
            } else {
                for v in last + 1..=n {
                    if !own.mine.remove(&v) {
                        own.foreign += 1;
                    }
                }
            }
            own.last = n;
            own.mine.retain(|v| *v > n);
        }
        Ok(own.foreign)
    }
    fn object_ids(&self, at_least: i64) -> Result<bool> {
        // Only ever forward, and only when behind (the first node's
        // bootstrap): a node opening while others number objects leaves the
        // counter alone.
        self.run(move |c| {
            c.execute("SELECT setval('object_seq', $1) WHERE (SELECT last_value FROM object_seq) < $1", &[&at_least])
                .map(|_| ())
        })?;
        Ok(true)
    }
    fn next_object_id(&self) -> Result<i64> {
        self.run(|c| Ok(c.query_one("SELECT nextval('object_seq')", &[])?.get(0)))
    }
}
