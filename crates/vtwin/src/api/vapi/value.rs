//! vAPI data values and their three renderings: JSON-RPC (type-tagged:
//! `STRUCTURE`, `ERROR`, `OPTIONAL`, `SECRET`), `/api` JSON (bare, maps as
//! objects) and `/rest` JSON (bare, maps as `[{key, value}]`).
use serde_json::{json, Map, Value as J};

#[derive(Clone, Debug)]
pub enum V {
    Struct(String, Vec<(String, V)>),
    Error(String, Vec<(String, V)>),
    Opt(Option<Box<V>>),
    List(Vec<V>),
    /// A map with string keys (`map-entry` lists on the wire).
    Map(Vec<(String, V)>),
    Str(String),
    Int(i64),
    Bool(bool),
    Secret(String),
    Void,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Style {
    JsonRpc,
    Api,
    Rest,
}

impl V {
    pub fn opt(v: Option<V>) -> V {
        V::Opt(v.map(Box::new))
    }
    pub fn some(v: V) -> V {
        V::Opt(Some(Box::new(v)))
    }
    pub fn str(s: impl Into<String>) -> V {
        V::Str(s.into())
    }
    pub fn structure(name: &str, fields: Vec<(&str, V)>) -> V {
        V::Struct(name.to_string(), fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// An untyped JSON value (an opaque result, say) as a vAPI value:
    /// objects become dynamic structures.
    pub fn from_json(j: &J) -> V {
        match j {
            J::Null => V::Opt(None),
            J::Bool(b) => V::Bool(*b),
            J::Number(n) => V::Int(n.as_i64().unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64)),
            J::String(s) => V::Str(s.clone()),
            J::Array(a) => V::List(a.iter().map(V::from_json).collect()),
            J::Object(o) => V::Struct(
                "vmware.vapi.dynamic_struct".into(),
                o.iter().map(|(k, v)| (k.clone(), V::from_json(v))).collect(),
            ),
        }
    }

    pub fn render(&self, style: Style) -> J {
        match self {
            V::Struct(name, fields) | V::Error(name, fields) => {
                let mut m = Map::new();
                for (k, v) in fields {
                    // Clean JSON leaves unset optional fields out.
                    if style != Style::JsonRpc && matches!(v, V::Opt(None)) {
                        continue;
                    }
                    m.insert(k.clone(), v.render(style));
                }
                if style == Style::JsonRpc {
                    let tag = if matches!(self, V::Error(..)) { "ERROR" } else { "STRUCTURE" };
                    json!({ tag: { name.clone(): J::Object(m) } })
                } else {
                    J::Object(m)
                }
            }
            V::Opt(v) => {
                let inner = v.as_ref().map_or(J::Null, |v| v.render(style));
                if style == Style::JsonRpc {
                    json!({ "OPTIONAL": inner })
                } else {
                    inner
                }
            }
            V::List(items) => J::Array(items.iter().map(|v| v.render(style)).collect()),
            V::Map(entries) => match style {
                Style::Api => J::Object(entries.iter().map(|(k, v)| (k.clone(), v.render(style))).collect()),
                Style::Rest => {
                    J::Array(entries.iter().map(|(k, v)| json!({"key": k, "value": v.render(style)})).collect())
                }
                Style::JsonRpc => J::Array(
                    entries
                        .iter()
                        .map(|(k, v)| {
                            V::Struct(
                                "map-entry".into(),
                                vec![("key".into(), V::Str(k.clone())), ("value".into(), v.clone())],
                            )
                            .render(style)
                        })
                        .collect(),
                ),
            },
            V::Str(s) => J::String(s.clone()),
            V::Int(i) => J::from(*i),
            V::Bool(b) => J::Bool(*b),
            V::Secret(s) => {
                if style == Style::JsonRpc {
                    json!({ "SECRET": s })
                } else {
                    J::String(s.clone())
                }
            }
            V::Void => J::Null,
        }
    }
}

/// Strip JSON-RPC type tags from an input value, leaving clean JSON:
/// `{"STRUCTURE":{"name":{…}}}` → `{…}`, `{"OPTIONAL":x}` → x,
/// `{"SECRET":s}` → s. Lists of `map-entry` structures stay lists of
/// `{key, value}` objects, the `/rest` map form.
pub fn untag(j: &J) -> J {
    match j {
        J::Object(o) if o.len() == 1 => {
            let (tag, inner) = o.iter().next().expect("one entry");
            match tag.as_str() {
                "STRUCTURE" | "ERROR" => match inner {
                    J::Object(named) if named.len() == 1 => {
                        let (_, fields) = named.iter().next().expect("one entry");
                        match fields {
                            J::Object(f) => J::Object(
                                f.iter().map(|(k, v)| (k.clone(), untag(v))).filter(|(_, v)| !v.is_null()).collect(),
                            ),
                            other => other.clone(),
                        }
                    }
                    other => other.clone(),
                },
                "OPTIONAL" => untag(inner),
                "SECRET" | "BINARY" => inner.clone(),
                _ => J::Object(o.iter().map(|(k, v)| (k.clone(), untag(v))).collect()),
            }
        }
        J::Object(o) => J::Object(o.iter().map(|(k, v)| (k.clone(), untag(v))).collect()),
        J::Array(a) => J::Array(a.iter().map(untag).collect()),
        other => other.clone(),
    }
}

/// The name of a tagged error value (`{"ERROR":{"name":{…}}}`), if it is one.
pub fn error_name(j: &J) -> Option<&str> {
    let inner = j.get("ERROR").or_else(|| j.get("OPTIONAL").and_then(|o| o.get("ERROR")))?;
    inner.as_object()?.keys().next().map(String::as_str)
}

/// A vAPI LocalizableMessage.
pub fn message(id: &str, default_message: &str, args: &[String]) -> V {
    V::structure(
        "com.vmware.vapi.std.localizable_message",
        vec![
            ("id", V::str(id)),
            ("default_message", V::str(default_message)),
            ("args", V::List(args.iter().map(|a| V::str(a.clone())).collect())),
            ("params", V::Opt(None)),
            ("localized", V::Opt(None)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonrpc_round_trip_through_untag() {
        let v = V::structure(
            "s",
            vec![("a", V::some(V::Int(1))), ("b", V::Opt(None)), ("m", V::Map(vec![("k".into(), V::Bool(true))]))],
        );
        let tagged = v.render(Style::JsonRpc);
        assert_eq!(tagged["STRUCTURE"]["s"]["b"], json!({"OPTIONAL": null}));
        assert_eq!(untag(&tagged), json!({"a": 1, "m": [{"key": "k", "value": true}]}));
        assert_eq!(v.render(Style::Api), json!({"a": 1, "m": {"k": true}}));
        assert_eq!(v.render(Style::Rest), json!({"a": 1, "m": [{"key": "k", "value": true}]}));
    }
}
