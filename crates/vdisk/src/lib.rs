//! The disk engine: virtual disks as VMDK files that qemu-img reads. A base
//! disk is a descriptor plus a flat extent kept as a sparse file; a snapshot
//! freezes the current top and chains a delta (descriptor plus a
//! hosted-sparse "KDMV" extent) to it through `parentCID` and
//! `parentFileNameHint`. No HTTP and no vim25 types in here.
pub mod cbt;
pub mod chain;
pub mod descriptor;
pub mod disk;
pub mod sparse;
pub mod vmfiles;

pub use chain::{Chain, Provisioning};
pub use descriptor::{Descriptor, Extent, ExtentKind};
pub use disk::{Changes, Disk, QueryError};

pub const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a disk we can read: {msg}")]
    Format { path: String, msg: String },
    #[error("offset {offset} + {len} is beyond the disk's {capacity} bytes")]
    OutOfRange { offset: u64, len: u64, capacity: u64 },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

pub(crate) fn format_err(path: &std::path::Path, msg: impl Into<String>) -> Error {
    Error::Format { path: path.display().to_string(), msg: msg.into() }
}
