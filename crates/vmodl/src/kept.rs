//! The kept form of a value: how vtwin stores a vim25 value on disk (task
//! results, faults and descriptions, CNS metadata). It is ours, not a wire
//! codec: it names every type (so nothing depends on the declared type of
//! the place it is kept in), it keeps every field the model has whatever
//! release a client speaks, and it does not change when a wire encoding
//! does. One JSON object per value, its single key the kind:
//!
//! ```text
//! {"bool": true}   {"byte": 1}  {"short": 1}  {"int": 1}  {"long": 1}
//! {"float": 1.5}   {"double": 1.5}            {"string": "x"}
//! {"typed": {"type": "ManagedEntityStatus", "value": "green"}}
//! {"dateTime": "2026-12-04T10:00:00.123456789Z"}
//! {"binary": "<base64>"}
//! {"moRef": {"type": "Task", "value": "task-1"}}
//! {"data": {"type": "NotFound", "fields": [["msg", {"string": "x"}]]}}
//! {"array": {"type": "string", "items": [{"string": "a"}]}}
//! ```
//!
//! Type and field names are those of the model (wire names). Reading
//! skips a field the model no longer has; a type it does not know is an
//! error.
use crate::value::{Data, MoRef, Value};
use crate::{DecodeError, TypeId};
use base64::Engine as _;
use serde_json::{json, Map, Value as J};

/// The kept form of `v`.
pub fn to_kept(v: &Value) -> J {
    match v {
        Value::Bool(b) => json!({ "bool": b }),
        Value::Byte(n) => json!({ "byte": n }),
        Value::Short(n) => json!({ "short": n }),
        Value::Int(n) => json!({ "int": n }),
        Value::Long(n) => json!({ "long": n }),
        Value::Float(n) => json!({ "float": n }),
        Value::Double(n) => json!({ "double": n }),
        Value::String(s) => json!({ "string": s }),
        Value::Typed(t, s) => json!({ "typed": { "type": t.name(), "value": s } }),
        Value::DateTime(t) => json!({ "dateTime": t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true) }),
        Value::Binary(b) => json!({ "binary": base64::engine::general_purpose::STANDARD.encode(b) }),
        Value::MoRef(m) => json!({ "moRef": { "type": m.ty.name(), "value": m.value } }),
        Value::Data(d) => {
            let fields: Vec<J> = d.fields.iter().map(|(n, v)| json!([n, to_kept(v)])).collect();
            json!({ "data": { "type": d.ty.name(), "fields": fields } })
        }
        Value::Array(t, items) => {
            json!({ "array": { "type": t.name(), "items": items.iter().map(to_kept).collect::<Vec<_>>() } })
        }
    }
}

/// Is `j` in the kept form (one key, a kind)? Values kept by earlier
/// builds in VI/JSON (`{"_typeName": …}`) are not.
pub fn is_kept(j: &J) -> bool {
    j.as_object().is_some_and(|o| {
        o.len() == 1
            && o.keys().all(|k| {
                matches!(
                    k.as_str(),
                    "bool"
                        | "byte"
                        | "short"
                        | "int"
                        | "long"
                        | "float"
                        | "double"
                        | "string"
                        | "typed"
                        | "dateTime"
                        | "binary"
                        | "moRef"
                        | "data"
                        | "array"
                )
            })
    })
}

/// The value `j` keeps.
pub fn from_kept(j: &J) -> Result<Value, DecodeError> {
    from_kept_at(j, "kept")
}

fn bad(path: &str, msg: impl Into<String>) -> DecodeError {
    DecodeError::InvalidValue { path: path.to_string(), msg: msg.into() }
}

fn type_named(o: &Map<String, J>, path: &str) -> Result<TypeId, DecodeError> {
    let name = o.get("type").and_then(J::as_str).ok_or_else(|| bad(path, "no type"))?;
    TypeId::by_name(name).ok_or_else(|| DecodeError::UnknownType(name.to_string()))
}

fn int<T: TryFrom<i64>>(v: &J, path: &str) -> Result<T, DecodeError> {
    v.as_i64().and_then(|n| T::try_from(n).ok()).ok_or_else(|| bad(path, format!("{v} is not an integer of its kind")))
}

fn from_kept_at(j: &J, path: &str) -> Result<Value, DecodeError> {
    let (kind, v) = j
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .ok_or_else(|| bad(path, "not a kept value"))?;
    let obj = || v.as_object().ok_or_else(|| bad(path, format!("{kind} is not an object")));
    let string = || v.as_str().map(str::to_string).ok_or_else(|| bad(path, format!("{kind} is not a string")));
    Ok(match kind.as_str() {
        "bool" => Value::Bool(v.as_bool().ok_or_else(|| bad(path, "not a boolean"))?),
        "byte" => Value::Byte(int(v, path)?),
        "short" => Value::Short(int(v, path)?),
        "int" => Value::Int(int(v, path)?),
        "long" => Value::Long(int(v, path)?),
        "float" => Value::Float(v.as_f64().ok_or_else(|| bad(path, "not a number"))? as f32),
        "double" => Value::Double(v.as_f64().ok_or_else(|| bad(path, "not a number"))?),
        "string" => Value::String(string()?),
        "typed" => {
            let o = obj()?;
            let s = o.get("value").and_then(J::as_str).ok_or_else(|| bad(path, "no value"))?;
            Value::Typed(type_named(o, path)?, s.to_string())
        }
        "dateTime" => Value::DateTime(
            chrono::DateTime::parse_from_rfc3339(&string()?)
                .map_err(|e| bad(path, format!("not a time: {e}")))?
                .with_timezone(&chrono::Utc),
        ),
        "binary" => Value::Binary(
            base64::engine::general_purpose::STANDARD
                .decode(string()?)
                .map_err(|e| bad(path, format!("not base64: {e}")))?,
        ),
        "moRef" => {
            let o = obj()?;
            let value = o.get("value").and_then(J::as_str).ok_or_else(|| bad(path, "no value"))?;
            Value::MoRef(MoRef::new(type_named(o, path)?, value))
        }
        "data" => {
            let o = obj()?;
            let ty = type_named(o, path)?;
            let mut d = Data { ty, fields: vec![] };
            for f in o.get("fields").and_then(J::as_array).ok_or_else(|| bad(path, "no fields"))? {
                let (name, v) = f
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .and_then(|p| Some((p[0].as_str()?, &p[1])))
                    .ok_or_else(|| bad(path, "a field is not [name, value]"))?;
                // A field the model no longer has is left behind.
                if let Some(p) = ty.prop(name) {
                    d.fields.push((p.name, from_kept_at(v, &format!("{path}.{name}"))?));
                }
            }
            Value::Data(Box::new(d))
        }
        "array" => {
            let o = obj()?;
            let ty = type_named(o, path)?;
            let items = o.get("items").and_then(J::as_array).ok_or_else(|| bad(path, "no items"))?;
            let items = items
                .iter()
                .enumerate()
                .map(|(i, x)| from_kept_at(x, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array(ty, items)
        }
        other => return Err(bad(path, format!("unknown kind {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    #[test]
    fn every_kind_reads_back_as_it_was_kept() {
        let fault = Data::new(types::FileNotFound)
            .with("msg", "gone")
            .with("file", "[ds] x.vmdk")
            .with("faultMessage", Value::Array(types::LocalizableMessage, vec![]));
        let v = Value::Array(
            types::anyType,
            vec![
                Value::Bool(true),
                Value::Byte(-3),
                Value::Short(300),
                Value::Int(-70_000),
                Value::Long(1 << 40),
                Value::Float(1.5),
                Value::Double(-2.25),
                Value::String("ü \"q\"".into()),
                Value::enum_value(types::ManagedEntityStatus, "green"),
                Value::DateTime(chrono::DateTime::from_timestamp(1_796_313_006, 972_042_957).unwrap()),
                Value::Binary(vec![0, 255, 7]),
                Value::MoRef(MoRef::new(types::Task, "task-9")),
                fault.into(),
            ],
        );
        let kept = to_kept(&v);
        assert!(is_kept(&kept));
        let text = kept.to_string();
        assert_eq!(from_kept(&serde_json::from_str(&text).unwrap()).unwrap(), v, "{text}");
    }

    #[test]
    fn earlier_forms_and_bad_input_are_told_apart() {
        assert!(!is_kept(&json!({"_typeName": "NotFound", "msg": "x"})));
        assert!(!is_kept(&json!({"string": "a", "int": 1})));
        for bad in [
            json!(1),
            json!({"int": "1"}),
            json!({"byte": 300}),
            json!({"data": {"type": "NoSuchType", "fields": []}}),
            json!({"data": {"type": "NotFound", "fields": [["msg"]]}}),
            json!({"dateTime": "yesterday"}),
            json!({"what": 1}),
        ] {
            assert!(from_kept(&bad).is_err(), "{bad}");
        }
        // A field the model dropped is left behind, not an error.
        let d = from_kept(
            &json!({"data": {"type": "NotFound", "fields": [["gone", {"int": 1}], ["msg", {"string": "m"}]]}}),
        );
        assert_eq!(d.unwrap(), Data::new(types::NotFound).with("msg", "m").into());
    }
}
