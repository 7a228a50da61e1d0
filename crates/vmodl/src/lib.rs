//! The vim25 + vsan type model, generated from the VMODL registry, and the
//! two codecs over it: SOAP (XML) and VI/JSON. No HTTP in here.
pub mod json;
pub mod kept;
pub mod schema;
pub mod soap;
pub mod value;
pub mod xml;

pub use schema::{find_method, types, Kind, MethodDef, PropDef, TypeDef, TypeId, TypeRef, VersionDef, VersionId};
pub use value::{Data, MoRef, Value};

/// A decoding error: the input does not fit the schema. The wire layers turn
/// it into an InvalidRequest / InvalidArgument fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unknown type {0}")]
    UnknownType(String),
    #[error("invalid value for {path}: {msg}")]
    InvalidValue { path: String, msg: String },
    #[error("unknown method {0}")]
    UnknownMethod(String),
}
