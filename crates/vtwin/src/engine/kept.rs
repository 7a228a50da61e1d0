//! vim25 values as the engine stores them (task records, CNS volume
//! metadata): in vmodl's kept form (`vmodl::kept`), which names every type,
//! keeps every field of the model and does not change with a wire
//! release. Earlier builds stored them in VI/JSON; that is read too.
use serde::{Deserialize, Serialize};
use vmodl::{json, kept, types, TypeRef, Value};

/// A stored vim25 value. Earlier builds (up to e4d0207) held these values
/// in VI/JSON (`{"_typeName": …}`, vSAN 9.1's encoding): they are read as
/// such and written back in the kept form.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept(pub Value);

impl Kept {
    /// The value a stored JSON form holds: the kept form, or the VI/JSON of
    /// an earlier build's record.
    pub fn read(j: &serde_json::Value) -> Result<Kept, vmodl::DecodeError> {
        if kept::is_kept(j) {
            return kept::from_kept(j).map(Kept);
        }
        json::decode(j, TypeRef { ty: types::anyType, array: false }, "stored")?
            .map(Kept)
            .ok_or_else(|| vmodl::DecodeError::Malformed("an empty stored value".into()))
    }
}

/// A kept value of a record, or none (for `#[serde(deserialize_with)]`):
/// a value that no longer reads (a type the model has dropped) is left out,
/// with a warning, and the rest of the record is kept.
pub fn readable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Kept>, D::Error> {
    let Some(j) = Option::<serde_json::Value>::deserialize(d)? else { return Ok(None) };
    match Kept::read(&j) {
        Ok(k) => Ok(Some(k)),
        Err(e) => {
            tracing::warn!("a stored value no longer reads ({e}); it is left out");
            Ok(None)
        }
    }
}

impl From<Value> for Kept {
    fn from(v: Value) -> Kept {
        Kept(v)
    }
}

impl From<vmodl::Data> for Kept {
    fn from(d: vmodl::Data) -> Kept {
        Kept(d.into())
    }
}

impl Serialize for Kept {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        kept::to_kept(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Kept {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kept, D::Error> {
        let j = serde_json::Value::deserialize(d)?;
        Kept::read(&j).map_err(serde::de::Error::custom)
    }
}
