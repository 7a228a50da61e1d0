//! VI/JSON codec over the generated model: `_typeName` discriminators,
//! `{"_typeName":"int","_value":5}` boxing in anyType slots, plain MoRef
//! objects, and plain MethodFaults where SOAP has a LocalizedMethodFault.
use crate::schema::{types, Kind, MethodDef, TypeId, TypeRef, VersionId};
use crate::value::{format_primitive, parse_primitive, Args, Data, MoRef, Value};
use crate::DecodeError;
use serde_json::{Map, Value as J};

fn invalid(path: &str, msg: impl Into<String>) -> DecodeError {
    DecodeError::InvalidValue { path: path.into(), msg: msg.into() }
}

/// Decode a method's request body. The root `_typeName` is ignored.
pub fn decode_args(body: &J, m: &MethodDef) -> Result<Args, DecodeError> {
    let mut args = Args::default();
    let obj = match body {
        J::Null => return Ok(args),
        J::Object(o) => o,
        _ => return Err(DecodeError::Malformed("request body must be a JSON object".into())),
    };
    for k in obj.keys() {
        if k != "_typeName" && k != "_this" && !m.params.iter().any(|p| p.name == k) {
            return Err(invalid(k, format!("{} has no parameter {k}", m.name)));
        }
    }
    for p in m.params {
        if let Some(v) = obj.get(p.name) {
            if let Some(v) = decode(v, p.ty, p.name)? {
                args.0.push((p.name, v));
            }
        }
    }
    Ok(args)
}

pub fn decode(v: &J, declared: TypeRef, path: &str) -> Result<Option<Value>, DecodeError> {
    if v.is_null() {
        return Ok(None);
    }
    if declared.array {
        let items = match v {
            J::Array(a) => a,
            J::Object(o) if o.get("_value").is_some_and(J::is_array) => o["_value"].as_array().unwrap(),
            _ => return Err(invalid(path, "expected an array")),
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            if let Some(x) = decode_one(it, declared.ty, &format!("{path}[{i}]"))? {
                out.push(x);
            }
        }
        let elem = if declared.ty.kind() == Kind::Managed { types::ManagedObjectReference } else { declared.ty };
        return Ok(Some(Value::Array(elem, out)));
    }
    decode_one(v, declared.ty, path)
}

fn decode_one(v: &J, declared: TypeId, path: &str) -> Result<Option<Value>, DecodeError> {
    if v.is_null() {
        return Ok(None);
    }
    if let J::Object(o) = v {
        let tn = o.get("_typeName").and_then(J::as_str);
        if let Some(tn) = tn {
            if let Some(elem) = crate::soap::array_elem_type(tn) {
                let items =
                    o.get("_value").and_then(J::as_array).ok_or_else(|| invalid(path, "array without _value"))?;
                return decode(&J::Array(items.clone()), TypeRef { ty: elem, array: true }, path);
            }
        }
        let ty = match tn {
            Some(tn) => TypeId::by_name(tn).ok_or_else(|| DecodeError::UnknownType(tn.to_string()))?,
            None => declared,
        };
        if ty == types::ManagedObjectReference || ty.kind() == Kind::Managed {
            let t = o.get("type").and_then(J::as_str).ok_or_else(|| invalid(path, "MoRef without type"))?;
            let val = o.get("value").and_then(J::as_str).ok_or_else(|| invalid(path, "MoRef without value"))?;
            let mt = TypeId::by_name(t)
                .filter(|t| t.kind() == Kind::Managed)
                .ok_or_else(|| invalid(path, format!("unknown managed object type {t}")))?;
            return Ok(Some(Value::MoRef(MoRef::new(mt, val))));
        }
        match ty.kind() {
            Kind::Primitive | Kind::Enum => {
                let inner = o.get("_value").ok_or_else(|| invalid(path, "boxed primitive without _value"))?;
                return decode_prim(inner, ty, path).map(Some);
            }
            Kind::Data => {
                if declared != types::anyType && !ty.is_a(declared) {
                    // VI/JSON sends a plain MethodFault where SOAP has a LocalizedMethodFault.
                    if declared == types::LocalizedMethodFault && ty.is_fault() {
                        let inner = decode_data(o, ty, path)?;
                        return Ok(Some(Value::data(Data::new(types::LocalizedMethodFault).with("fault", inner))));
                    }
                    return Err(invalid(path, format!("{} is not a {}", ty.name(), declared.name())));
                }
                if ty == types::DataObject {
                    return Err(invalid(path, "abstract DataObject without _typeName"));
                }
                return decode_data(o, ty, path).map(|d| Some(Value::data(d)));
            }
            Kind::Managed => unreachable!(),
        }
    }
    if declared == types::ManagedObjectReference || declared.kind() == Kind::Managed || declared.kind() == Kind::Data {
        return Err(invalid(path, format!("expected a {} object", declared.name())));
    }
    decode_prim(v, declared, path).map(Some)
}

fn decode_data(o: &Map<String, J>, ty: TypeId, path: &str) -> Result<Data, DecodeError> {
    let mut d = Data::new(ty);
    for (k, fv) in o {
        if k == "_typeName" {
            continue;
        }
        let p = ty.prop(k).ok_or_else(|| invalid(path, format!("{} has no property {k}", ty.name())))?;
        if let Some(x) = decode(fv, p.ty, &format!("{path}.{k}"))? {
            d.fields.push((p.name, x));
        }
    }
    Ok(d)
}

fn decode_prim(v: &J, ty: TypeId, path: &str) -> Result<Value, DecodeError> {
    let ty = if ty == types::anyType {
        match v {
            J::Bool(b) => return Ok(Value::Bool(*b)),
            J::Number(n) => {
                return Ok(match n.as_i64() {
                    Some(i) => Value::Long(i),
                    None => Value::Double(n.as_f64().unwrap_or(0.0)),
                })
            }
            J::String(s) => return Ok(Value::String(s.clone())),
            _ => return Err(invalid(path, "unsupported value in anyType slot")),
        }
    } else {
        ty
    };
    let text = match v {
        J::Bool(b) => b.to_string(),
        J::Number(n) => n.to_string(),
        J::String(s) => {
            if matches!(ty.name(), "boolean" | "byte" | "short" | "int" | "long" | "float" | "double") {
                return Err(invalid(path, format!("expected a JSON {} but found a string", ty.name())));
            }
            s.clone()
        }
        _ => return Err(invalid(path, format!("expected a {}", ty.name()))),
    };
    if matches!(v, J::Number(_) | J::Bool(_))
        && !matches!(ty.name(), "boolean" | "byte" | "short" | "int" | "long" | "float" | "double")
    {
        return Err(invalid(path, format!("expected a {} string", ty.name())));
    }
    parse_primitive(ty, &text).map_err(|m| invalid(path, m))
}

// ---- encoding ---------------------------------------------------------------

pub fn encode(v: &Value, declared: TypeRef, version: VersionId) -> J {
    match v {
        Value::Array(elem, items) => {
            let arr: Vec<J> = items
                .iter()
                .map(|it| {
                    encode(it, TypeRef { ty: if declared.array { declared.ty } else { *elem }, array: false }, version)
                })
                .collect();
            if declared.array {
                J::Array(arr)
            } else {
                let mut m = Map::new();
                m.insert("_typeName".into(), J::String(crate::value::array_name(*elem)));
                m.insert("_value".into(), J::Array(arr));
                J::Object(m)
            }
        }
        Value::Data(d) => encode_data(d, version),
        Value::MoRef(m) => moref(m),
        prim => {
            let bare = prim_json(prim);
            if declared.ty == types::anyType {
                let mut m = Map::new();
                m.insert("_typeName".into(), J::String(prim.wire_type()));
                m.insert("_value".into(), bare);
                J::Object(m)
            } else {
                bare
            }
        }
    }
}

pub fn moref(m: &MoRef) -> J {
    let mut o = Map::new();
    o.insert("_typeName".into(), J::String("ManagedObjectReference".into()));
    o.insert("type".into(), J::String(m.ty.name().into()));
    o.insert("value".into(), J::String(m.value.clone()));
    J::Object(o)
}

pub fn encode_data(d: &Data, version: VersionId) -> J {
    if d.ty == types::LocalizedMethodFault {
        if let Some(Value::Data(inner)) = d.get("fault") {
            return encode_data(inner, version);
        }
    }
    let mut o = Map::new();
    o.insert("_typeName".into(), J::String(d.ty.name().into()));
    for p in d.ty.all_props() {
        if !version.includes(p.version) {
            continue;
        }
        if let Some(v) = d.get(p.name) {
            o.insert(p.name.into(), encode(v, p.ty, version));
        }
    }
    J::Object(o)
}

fn prim_json(v: &Value) -> J {
    match v {
        Value::Bool(b) => J::Bool(*b),
        Value::Byte(x) => J::from(*x),
        Value::Short(x) => J::from(*x),
        Value::Int(x) => J::from(*x),
        Value::Long(x) => J::from(*x),
        Value::Float(x) => J::from(*x as f64),
        Value::Double(x) => J::from(*x),
        other => J::String(format_primitive(other)),
    }
}
