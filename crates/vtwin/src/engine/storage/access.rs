//! Datastore file access from outside the managed-object API: the `/folder`
//! HTTP file service and NBD transfer tickets. The wire layers ask here which
//! privilege an access needs and whether a ticket may be issued; they never
//! choose a privilege themselves.
use crate::engine::disks::{Ticket, TICKET_TTL_MS};
use crate::engine::Engine;
use vmodl::{types, MoRef};

/// What a client wants to do with a datastore's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAccess {
    /// Read files (GET/HEAD on `/folder`, a read-only NBD export).
    Read,
    /// Create, change or delete files (PUT/DELETE on `/folder`, a writable
    /// NBD export).
    Write,
}

impl FileAccess {
    /// The privilege on the datastore: reading needs `Datastore.Browse`,
    /// changing `Datastore.FileManagement`. The vSphere guide's "Privilege
    /// Requirements for HTTP Access" names both for `/folder` without a
    /// per-method split; the split follows the privileges' own descriptions
    /// (Browse: browse and download; FileManagement: low-level file
    /// operations).
    pub fn privilege(self) -> &'static str {
        match self {
            FileAccess::Read => "Datastore.Browse",
            FileAccess::Write => "Datastore.FileManagement",
        }
    }
}

/// The client's request for an NBD export of a first-class disk.
pub struct TicketRequest<'a> {
    pub disk: &'a str,
    /// The datastore's managed-object id.
    pub datastore: &'a str,
    /// A snapshot id: that state, read-only. None: the live disk.
    pub snapshot: Option<&'a str>,
    pub write: bool,
}

/// An issued ticket: the export name and when it stops being accepted.
pub struct Issued {
    pub name: String,
    pub expires_ms: i64,
}

/// Why a ticket was not issued.
#[derive(Debug, PartialEq, Eq)]
pub enum TicketRefused {
    /// The user lacks `privilege` on the datastore.
    Forbidden {
        privilege: &'static str,
    },
    NoDisk,
    NoSnapshot,
    /// A snapshot is exported read-only.
    SnapshotWritable,
}

impl std::fmt::Display for TicketRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TicketRefused::Forbidden { privilege } => write!(f, "{privilege} on the datastore is needed"),
            TicketRefused::NoDisk => f.write_str("no such disk on that datastore"),
            TicketRefused::NoSnapshot => f.write_str("no such snapshot of that disk"),
            TicketRefused::SnapshotWritable => f.write_str("a snapshot is exported read-only"),
        }
    }
}

impl std::error::Error for TicketRefused {}

/// Why `/folder`'s datacenter and datastore names find no datastore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FolderMiss {
    Datacenter,
    Datastore,
}

impl Engine {
    /// The datastore `/folder?dcPath=…&dsName=…` names: its reference and
    /// mount path. The datacenter is matched by name or by the last element
    /// of its inventory path.
    pub fn folder_datastore(&self, dc_path: &str, ds_name: &str) -> Result<(MoRef, String), FolderMiss> {
        let inv = self.inv.read();
        let last = dc_path.trim_matches('/').rsplit('/').next().unwrap_or("");
        let dc = inv
            .objects
            .values()
            .find(|e| e.moref.ty == types::Datacenter && (e.name == dc_path || e.name == last))
            .ok_or(FolderMiss::Datacenter)?;
        inv.in_datacenter(&dc.moref.value, types::Datastore)
            .into_iter()
            .filter_map(|m| inv.get(&m.value))
            .find(|e| e.name == ds_name)
            .map(|e| (e.moref.clone(), e.attr("path").unwrap_or_default().to_string()))
            .ok_or(FolderMiss::Datastore)
    }

    /// Whether `user` may access the files of datastore `ds` that way.
    pub fn may_access_files(&self, user: &str, ds: &MoRef, access: FileAccess) -> bool {
        self.has_privilege(user, ds, access.privilege())
    }

    /// Issues an NBD ticket for `user`: the same privilege as `/folder` for
    /// that access, on the disk's datastore; a snapshot only read-only and
    /// only if the disk has it. Tickets last [`TICKET_TTL_MS`].
    pub fn issue_nbd_ticket(&self, user: &str, req: &TicketRequest<'_>) -> Result<Issued, TicketRefused> {
        let access = if req.write { FileAccess::Write } else { FileAccess::Read };
        let ds = MoRef::new(types::Datastore, req.datastore);
        if !self.may_access_files(user, &ds, access) {
            return Err(TicketRefused::Forbidden { privilege: access.privilege() });
        }
        let disk = self.disks.get(req.disk, req.datastore).map_err(|_| TicketRefused::NoDisk)?;
        if let Some(s) = req.snapshot {
            if req.write {
                return Err(TicketRefused::SnapshotWritable);
            }
            if disk.lock().map_or(true, |d| d.snapshot(s).is_none()) {
                return Err(TicketRefused::NoSnapshot);
            }
        }
        let expires_ms = chrono::Utc::now().timestamp_millis() + TICKET_TTL_MS;
        let name = self.disks.issue_ticket(Ticket {
            disk: req.disk.into(),
            datastore: req.datastore.into(),
            snapshot: req.snapshot.map(str::to_string),
            write: req.write,
            expires_ms,
        });
        Ok(Issued { name, expires_ms })
    }
}
