//! A schema-typed value tree: what both codecs read and write, and what the
//! managed-object code builds. Data objects carry their concrete type, so a
//! value in an `anyType` slot can always be written with its wire type.
use crate::schema::{types, Kind, TypeId};
use chrono::{DateTime, Utc};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    pub ty: TypeId,
    pub value: String,
}

impl MoRef {
    pub fn new(ty: TypeId, value: impl Into<String>) -> MoRef {
        MoRef { ty, value: value.into() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    String(String),
    /// A string of a specific primitive (anyURI, TypeName, MethodName,
    /// PropertyPath) or enum type.
    Typed(TypeId, String),
    DateTime(DateTime<Utc>),
    Binary(Vec<u8>),
    MoRef(MoRef),
    Data(Box<Data>),
    /// Elements and their declared element type.
    Array(TypeId, Vec<Value>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    pub ty: TypeId,
    pub fields: Vec<(&'static str, Value)>,
}

impl Data {
    pub fn new(ty: TypeId) -> Data {
        debug_assert!(matches!(ty.kind(), Kind::Data), "{} is not a data type", ty.name());
        Data { ty, fields: Vec::new() }
    }
    /// Set a property. Names are checked against the schema: setting a
    /// property the type does not have is a programming error.
    pub fn set(&mut self, name: &str, v: impl Into<Value>) -> &mut Self {
        let p = self.ty.prop(name).unwrap_or_else(|| panic!("{} has no property {}", self.ty.name(), name));
        let v = v.into();
        if let Some(slot) = self.fields.iter_mut().find(|(n, _)| *n == p.name) {
            slot.1 = v;
        } else {
            self.fields.push((p.name, v));
        }
        self
    }
    pub fn with(mut self, name: &str, v: impl Into<Value>) -> Self {
        self.set(name, v);
        self
    }
    /// Set only when `v` is Some.
    pub fn with_opt<V: Into<Value>>(mut self, name: &str, v: Option<V>) -> Self {
        if let Some(v) = v {
            self.set(name, v);
        }
        self
    }
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    pub fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.fields.iter().position(|(n, _)| *n == name)?;
        Some(self.fields.remove(i).1)
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }
}

impl Value {
    pub fn data(d: Data) -> Value {
        Value::Data(Box::new(d))
    }
    pub fn enum_value(ty: TypeId, v: impl Into<String>) -> Value {
        Value::Typed(ty, v.into())
    }
    pub fn array_of_strings<I: IntoIterator<Item = S>, S: Into<String>>(it: I) -> Value {
        Value::Array(types::string, it.into_iter().map(|s| Value::String(s.into())).collect())
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Typed(_, s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Byte(x) => Some(*x as i64),
            Value::Short(x) => Some(*x as i64),
            Value::Int(x) => Some(*x as i64),
            Value::Long(x) => Some(*x),
            _ => None,
        }
    }
    pub fn as_data(&self) -> Option<&Data> {
        match self {
            Value::Data(d) => Some(d),
            _ => None,
        }
    }
    pub fn as_moref(&self) -> Option<&MoRef> {
        match self {
            Value::MoRef(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, v) => Some(v),
            _ => None,
        }
    }
    /// The wire type of this value as it would be named in `xsi:type` /
    /// `_typeName` when it sits in an anyType slot.
    pub fn wire_type(&self) -> String {
        match self {
            Value::Bool(_) => "boolean".into(),
            Value::Byte(_) => "byte".into(),
            Value::Short(_) => "short".into(),
            Value::Int(_) => "int".into(),
            Value::Long(_) => "long".into(),
            Value::Float(_) => "float".into(),
            Value::Double(_) => "double".into(),
            Value::String(_) => "string".into(),
            Value::Typed(t, _) => t.name().into(),
            Value::DateTime(_) => "dateTime".into(),
            Value::Binary(_) => "base64Binary".into(),
            Value::MoRef(_) => "ManagedObjectReference".into(),
            Value::Data(d) => d.ty.name().into(),
            Value::Array(t, _) => array_name(*t),
        }
    }
}

/// `ArrayOfString`, `ArrayOfManagedObjectReference`, `ArrayOfDatastoreSummary`…
pub fn array_name(elem: TypeId) -> String {
    let n = elem.name();
    let mut c = n.chars();
    match c.next() {
        Some(f) => format!("ArrayOf{}{}", f.to_ascii_uppercase(), c.as_str()),
        None => "ArrayOf".into(),
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Long(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.into())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(v)
    }
}
impl From<MoRef> for Value {
    fn from(v: MoRef) -> Value {
        Value::MoRef(v)
    }
}
impl From<Data> for Value {
    fn from(v: Data) -> Value {
        Value::Data(Box::new(v))
    }
}
impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Value {
        Value::DateTime(v)
    }
}

/// Decoded method parameters, by parameter name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args(pub Vec<(&'static str, Value)>);

impl Args {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }
    pub fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.remove(i).1)
    }
}

/// Parse the text form of a primitive or enum value of type `ty`.
pub fn parse_primitive(ty: TypeId, s: &str) -> Result<Value, String> {
    let t = s.trim();
    let num = |e: std::num::ParseIntError| e.to_string();
    Ok(match ty.name() {
        "boolean" => match t {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("'{t}' is not a boolean")),
        },
        "byte" => Value::Byte(t.parse().map_err(num)?),
        "short" => Value::Short(t.parse().map_err(num)?),
        "int" => Value::Int(t.parse().map_err(num)?),
        "long" => Value::Long(t.parse().map_err(num)?),
        "float" => Value::Float(t.parse().map_err(|e: std::num::ParseFloatError| e.to_string())?),
        "double" => Value::Double(t.parse().map_err(|e: std::num::ParseFloatError| e.to_string())?),
        "string" | "anyType" => Value::String(s.to_string()),
        "dateTime" => Value::DateTime(
            DateTime::parse_from_rfc3339(t)
                .map(|d| d.with_timezone(&Utc))
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc()))
                .map_err(|e| format!("'{t}' is not a dateTime: {e}"))?,
        ),
        "base64Binary" => {
            use base64::Engine;
            Value::Binary(base64::engine::general_purpose::STANDARD.decode(t).map_err(|e| e.to_string())?)
        }
        _ => {
            if ty.kind() == Kind::Enum {
                if !ty.def().values.contains(&t) {
                    return Err(format!("'{t}' is not a value of {}", ty.name()));
                }
                Value::Typed(ty, t.to_string())
            } else if ty.kind() == Kind::Primitive {
                Value::Typed(ty, s.to_string())
            } else {
                return Err(format!("{} is not a primitive type", ty.name()));
            }
        }
    })
}

/// The text form of a primitive value (SOAP element text).
pub fn format_primitive(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Byte(x) => x.to_string(),
        Value::Short(x) => x.to_string(),
        Value::Int(x) => x.to_string(),
        Value::Long(x) => x.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        Value::String(s) | Value::Typed(_, s) => s.clone(),
        Value::DateTime(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        Value::Binary(b) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        Value::MoRef(m) => m.value.clone(),
        Value::Data(_) | Value::Array(..) => String::new(),
    }
}

impl Data {
    /// Paths of required (non-optional) properties left unset, recursively:
    /// what a strict client would refuse to parse.
    pub fn missing_required(&self, path: &str, out: &mut Vec<String>) {
        for p in self.ty.all_props() {
            match self.get(p.name) {
                None if !p.optional => out.push(format!("{path}.{}", p.name)),
                Some(v) => v.missing_required(&format!("{path}.{}", p.name), out),
                None => {}
            }
        }
    }
}

impl Value {
    pub fn missing_required(&self, path: &str, out: &mut Vec<String>) {
        match self {
            Value::Data(d) => d.missing_required(path, out),
            Value::Array(_, items) => {
                for (i, it) in items.iter().enumerate() {
                    it.missing_required(&format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
}
