//! SQLite backend (the embedded default), one file in the data directory.
use super::*;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Schema migrations, applied in order at open; `user_version` records how
/// many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, full_name TEXT NOT NULL);
CREATE TABLE objects (moid TEXT PRIMARY KEY, ty TEXT NOT NULL, name TEXT NOT NULL, parent TEXT, attrs TEXT NOT NULL);
CREATE TABLE permissions (entity TEXT NOT NULL, principal TEXT NOT NULL, is_group INTEGER NOT NULL,
    role_id INTEGER NOT NULL, propagate INTEGER NOT NULL, PRIMARY KEY (entity, principal, is_group));
CREATE TABLE sessions (token TEXT PRIMARY KEY, key TEXT NOT NULL, user_name TEXT NOT NULL, login_time INTEGER NOT NULL,
    last_active INTEGER NOT NULL, locale TEXT NOT NULL, ip TEXT NOT NULL, user_agent TEXT NOT NULL);
"#,
    r#"
CREATE TABLE tasks (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, record TEXT NOT NULL);
CREATE TABLE extensions (key TEXT PRIMARY KEY, record TEXT NOT NULL);
"#,
    r#"
ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET live = 1 WHERE CASE WHEN json_valid(record) THEN json_extract(record, '$.state') IN ('queued', 'running') AND json_extract(record, '$.vcd') IS NULL ELSE 0 END;
CREATE INDEX tasks_live ON tasks (owner) WHERE live;
CREATE TABLE nodes (id TEXT PRIMARY KEY, lease_until INTEGER NOT NULL);
"#,
];

/// Task sequence numbers handed out at a time.
const SEQ_BLOCK: i64 = 1024;

fn task_row(r: &rusqlite::Row) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        key: r.get(0)?,
        seq: r.get(1)?,
        version: r.get(2)?,
        owner: r.get(3)?,
        live: r.get(4)?,
        record: r.get(5)?,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        let s = SqliteStore { conn: Mutex::new(conn) };
        s.migrate()?;
        Ok(s)
    }

    /// Run one statement through the connection's statement cache.
    fn exec<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize> {
        self.conn.lock().prepare_cached(sql)?.execute(p)
    }

    fn migrate(&self) -> Result<()> {
        let mut c = self.conn.lock();
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
            tx.execute_batch(m).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

impl Store for SqliteStore {
    fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.conn.lock().query_row("SELECT value FROM meta WHERE key=?1", [key], |r| r.get(0)).optional().map_err(err)
    }
    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.exec(
            "INSERT INTO meta(key,value) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            params![key, value],
        )
        .map(|_| ())
        .map_err(err)
    }
    fn put_user(&self, u: &UserRecord) -> Result<()> {
        self.exec("INSERT INTO users(name,password_hash,full_name) VALUES(?1,?2,?3) ON CONFLICT(name) DO UPDATE SET password_hash=excluded.password_hash, full_name=excluded.full_name",
                params![u.name, u.password_hash, u.full_name],
            )
            .map(|_| ())
            .map_err(err)
    }
    fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.conn
            .lock()
            .query_row("SELECT name,password_hash,full_name FROM users WHERE name=?1", [name], |r| {
                Ok(UserRecord { name: r.get(0)?, password_hash: r.get(1)?, full_name: r.get(2)? })
            })
            .optional()
            .map_err(err)
    }
    fn list_users(&self) -> Result<Vec<UserRecord>> {
        let c = self.conn.lock();
        let mut st = c.prepare_cached("SELECT name,password_hash,full_name FROM users ORDER BY name").map_err(err)?;
        let rows = st
            .query_map([], |r| Ok(UserRecord { name: r.get(0)?, password_hash: r.get(1)?, full_name: r.get(2)? }))
            .map_err(err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(err)
    }
    fn put_objects(&self, objs: &[ObjectRecord]) -> Result<()> {
        let mut c = self.conn.lock();
        let tx = c.transaction().map_err(err)?;
        {
            let mut st = tx
                .prepare_cached("INSERT INTO objects(moid,ty,name,parent,attrs) VALUES(?1,?2,?3,?4,?5) ON CONFLICT(moid) DO UPDATE SET ty=excluded.ty,name=excluded.name,parent=excluded.parent,attrs=excluded.attrs")
                .map_err(err)?;
            for o in objs {
                st.execute(params![o.moid, o.ty, o.name, o.parent, o.attrs.to_string()]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
    fn delete_object(&self, moid: &str) -> Result<()> {
        self.exec("DELETE FROM objects WHERE moid=?1", [moid]).map(|_| ()).map_err(err)
    }
    fn list_objects(&self) -> Result<Vec<ObjectRecord>> {
        let c = self.conn.lock();
        let mut st = c.prepare_cached("SELECT moid,ty,name,parent,attrs FROM objects ORDER BY rowid").map_err(err)?;
        let rows = st
            .query_map([], |r| {
                let attrs: String = r.get(4)?;
                Ok(ObjectRecord {
                    moid: r.get(0)?,
                    ty: r.get(1)?,
                    name: r.get(2)?,
                    parent: r.get(3)?,
                    attrs: serde_json::from_str(&attrs).unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(err)
    }
    fn put_permission(&self, p: &PermissionRecord) -> Result<()> {
        self.exec("INSERT INTO permissions(entity,principal,is_group,role_id,propagate) VALUES(?1,?2,?3,?4,?5) ON CONFLICT(entity,principal,is_group) DO UPDATE SET role_id=excluded.role_id, propagate=excluded.propagate",
                params![p.entity, p.principal, p.group, p.role_id, p.propagate],
            )
            .map(|_| ())
            .map_err(err)
    }
    fn remove_permission(&self, entity: &str, principal: &str, group: bool) -> Result<bool> {
        self.exec(
            "DELETE FROM permissions WHERE entity=?1 AND principal=?2 AND is_group=?3",
            params![entity, principal, group],
        )
        .map(|n| n > 0)
        .map_err(err)
    }
    fn list_permissions(&self) -> Result<Vec<PermissionRecord>> {
        let c = self.conn.lock();
        let mut st =
            c.prepare_cached("SELECT entity,principal,is_group,role_id,propagate FROM permissions").map_err(err)?;
        let rows = st
            .query_map([], |r| {
                Ok(PermissionRecord {
                    entity: r.get(0)?,
                    principal: r.get(1)?,
                    group: r.get(2)?,
                    role_id: r.get(3)?,
                    propagate: r.get(4)?,
                })
            })
            .map_err(err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(err)
    }
    fn get_session(&self, token: &str) -> Result<Option<SessionRecord>> {
        self.conn
            .lock()
            .query_row(
                "SELECT token,key,user_name,login_time,last_active,locale,ip,user_agent FROM sessions WHERE token=?1",
                [token],
                |r| {
                    Ok(SessionRecord {
                        token: r.get(0)?,
                        key: r.get(1)?,
                        user: r.get(2)?,
                        login_time: r.get(3)?,
                        last_active: r.get(4)?,
                        locale: r.get(5)?,
                        ip: r.get(6)?,
                        user_agent: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(err)
    }
    fn apply_sessions(&self, ops: &[SessionOp]) -> Result<()> {
        let mut c = self.conn.lock();
        let tx = c.transaction().map_err(err)?;
        for op in ops {
            match op {
                SessionOp::Put(s) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO sessions(token,key,user_name,login_time,last_active,locale,ip,user_agent) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)")
                        .and_then(|mut st| st.execute(params![s.token, s.key, s.user, s.login_time, s.last_active, s.locale, s.ip, s.user_agent]))
                        .map_err(err)?;
                }
                SessionOp::Delete(t) => {
                    tx.prepare_cached("DELETE FROM sessions WHERE token=?1")
                        .and_then(|mut st| st.execute([t]))
                        .map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)
    }
    fn insert_task(&self, t: &TaskRow) -> Result<()> {
        self.exec(
            "INSERT INTO tasks(key,seq,version,owner,live,record) VALUES(?1,?2,?3,?4,?5,?6)",
            params![t.key, t.seq, t.version, t.owner, t.live, t.record],
        )
        .map(|_| ())
        .map_err(err)
    }
    fn update_task(&self, key: &str, version: i64, live: bool, record: &str) -> Result<Option<i64>> {
        let n = self
            .exec(
                "UPDATE tasks SET record=?3, live=?4, version=version+1 WHERE key=?1 AND version=?2",
                params![key, version, record, live],
            )
            .map_err(err)?;
        Ok((n == 1).then_some(version + 1))
    }
    fn get_tasks(&self, keys: &[String]) -> Result<Vec<TaskRow>> {
        let c = self.conn.lock();
        let mut st =
            c.prepare_cached("SELECT key,seq,version,owner,live,record FROM tasks WHERE key=?1").map_err(err)?;
        let mut out = vec![];
        for k in keys {
            if let Some(r) = st.query_row([k], task_row).optional().map_err(err)? {
                out.push(r);
            }
        }
        Ok(out)
    }
    fn delete_tasks(&self, keys: &[String]) -> Result<()> {
        let mut c = self.conn.lock();
        let tx = c.transaction().map_err(err)?;
        for k in keys {
            tx.prepare_cached("DELETE FROM tasks WHERE key=?1").and_then(|mut st| st.execute([k])).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
    fn list_tasks(&self) -> Result<Vec<TaskRow>> {
        let c = self.conn.lock();
        let mut st =
            c.prepare_cached("SELECT key,seq,version,owner,live,record FROM tasks ORDER BY seq").map_err(err)?;
        let rows = st.query_map([], task_row).map_err(err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(err)
    }
    fn task_seqs(&self) -> Result<(i64, i64)> {
        let mut c = self.conn.lock();
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        let kept: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key='task_seq'", [], |r| r.get(0)).optional().map_err(err)?;
        let max: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM tasks", [], |r| r.get(0)).map_err(err)?;
        let next = kept.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0).max(max);
        tx.execute("INSERT OR REPLACE INTO meta(key,value) VALUES('task_seq',?1)", [(next + SEQ_BLOCK).to_string()])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((next + 1, SEQ_BLOCK))
    }
    fn heartbeat(&self, node: &str, lease_ms: i64) -> Result<()> {
        self.exec("INSERT OR REPLACE INTO nodes(id,lease_until) VALUES(?1,?2)", params![node, now_ms() + lease_ms])
            .map(|_| ())
            .map_err(err)
    }
    fn release(&self, node: &str) -> Result<()> {
        self.exec("DELETE FROM nodes WHERE id=?1", [node]).map(|_| ()).map_err(err)
    }
    /// One process serves a SQLite store: every other owner is gone.
    fn claim_orphans(&self, node: &str, _previous: &str) -> Result<Vec<TaskRow>> {
        let mut c = self.conn.lock();
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        let rows = {
            let mut st = tx
                .prepare_cached("SELECT key,seq,version+1,owner,live,record FROM tasks WHERE live AND owner<>?1")
                .map_err(err)?;
            let rows = st
                .query_map([node], task_row)
                .map_err(err)?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(err)?;
            rows
        };
        tx.execute("UPDATE tasks SET owner=?1, version=version+1 WHERE live AND owner<>?1", [node]).map_err(err)?;
        tx.execute("DELETE FROM nodes WHERE id<>?1", [node]).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(rows)
    }
    fn object_ids(&self, _at_least: i64) -> Result<bool> {
        Ok(false)
    }
    fn next_object_id(&self) -> Result<i64> {
        Err(StoreError::Unsupported("the embedded store has one node: inventory ids are its own".into()))
    }
    fn watch_tasks(&self, _node: &str, _on: Box<dyn Fn(TaskNote) + Send + Sync>) -> Result<bool> {
        Ok(false)
    }
    fn put_extension(&self, key: &str, record: &str) -> Result<()> {
        self.exec("INSERT OR REPLACE INTO extensions(key,record) VALUES(?1,?2)", params![key, record])
            .map(|_| ())
            .map_err(err)
    }
    fn delete_extension(&self, key: &str) -> Result<bool> {
        self.exec("DELETE FROM extensions WHERE key=?1", [key]).map(|n| n > 0).map_err(err)
    }
    fn list_extensions(&self) -> Result<Vec<(String, String)>> {
        let c = self.conn.lock();
        let mut st = c.prepare_cached("SELECT key,record FROM extensions ORDER BY key").map_err(err)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(err)
    }
    fn external_version(&self) -> Result<i64> {
        self.conn.lock().query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(err)
    }
}
