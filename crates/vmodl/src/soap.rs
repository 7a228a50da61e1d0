//! SOAP 1.1 codec over the generated model.
use crate::schema::{types, Kind, MethodDef, TypeId, TypeRef, VersionId};
use crate::value::{format_primitive, parse_primitive, Args, Data, MoRef, Value};
use crate::xml::{self, escape, Element};
use crate::DecodeError;

pub const NS_SOAPENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// A parsed SOAP request: the method element and its `_this`.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub this: Option<(String, String)>,
    pub body: Element,
    /// `vcSessionCookie` from the SOAP header, if any.
    pub header_session: Option<String>,
}

/// The namespaces a method element may be in: vim25 and vSAN, and their
/// internal twins (pyvmomi's and govmomi's stubs use these).
pub const METHOD_NAMESPACES: &[&str] = &["urn:vim25", "urn:vsan", "urn:internalvim25", "urn:internalvsan"];

/// SOAP 1.1: the Envelope and Body are in the SOAP envelope namespace and
/// the method element in a vim25 or vSAN namespace. Read with namespace
/// resolution up to the method element only.
fn check_namespaces(input: &str) -> Result<(), DecodeError> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let bad = |m: String| DecodeError::Malformed(m);
    let mut r = quick_xml::NsReader::from_str(input);
    let mut depth = 0usize;
    let mut in_body = false;
    loop {
        let (ns, ev) = r.read_resolved_event().map_err(|e| bad(e.to_string()))?;
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            _ => String::new(),
        };
        let (start, local) = match &ev {
            Event::Start(s) => (true, String::from_utf8_lossy(s.local_name().as_ref()).into_owned()),
            Event::Empty(s) => (false, String::from_utf8_lossy(s.local_name().as_ref()).into_owned()),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Event::Eof => return Ok(()),
            _ => continue,
        };
        match depth {
            0 | 1 if ns != NS_SOAPENV && (depth == 0 || local == "Body" || local == "Header") => {
                return Err(bad(format!(
                    "<{local}> is not in the SOAP 1.1 envelope namespace {NS_SOAPENV} (found '{ns}')"
                )));
            }
            1 => in_body = local == "Body",
            2 if in_body => {
                return if METHOD_NAMESPACES.contains(&ns.as_str()) {
                    Ok(())
                } else {
                    Err(bad(format!("<{local}> is in namespace '{ns}', not urn:vim25 or urn:vsan")))
                };
            }
            _ => {}
        }
        if start {
            depth += 1;
        }
    }
}

pub fn parse_request(input: &str) -> Result<Request, DecodeError> {
    let env = xml::parse(input)?;
    check_namespaces(input)?;
    if env.name != "Envelope" {
        return Err(DecodeError::Malformed(format!("expected a SOAP Envelope, found <{}>", env.name)));
    }
    let header_session =
        env.child("Header").and_then(|h| h.child("vcSessionCookie")).map(|c| c.text.trim().to_string());
    let body = env.child("Body").ok_or_else(|| DecodeError::Malformed("SOAP Envelope has no Body".into()))?;
    let method = body.children.first().ok_or_else(|| DecodeError::Malformed("SOAP Body is empty".into()))?.clone();
    let this =
        method.child("_this").map(|t| (t.plain_attr("type").unwrap_or("").to_string(), t.text.trim().to_string()));
    Ok(Request { method: method.name.clone(), this, body: method, header_session })
}

/// Decode the parameters of `m` from the method element.
pub fn decode_args(req: &Request, m: &MethodDef) -> Result<Args, DecodeError> {
    let mut args = Args::default();
    for c in &req.body.children {
        if c.name == "_this" {
            continue;
        }
        if !m.params.iter().any(|p| p.name == c.name) {
            return Err(DecodeError::InvalidValue {
                path: c.name.clone(),
                msg: format!("{} has no parameter {}", m.name, c.name),
            });
        }
    }
    for p in m.params {
        let els: Vec<&Element> = req.body.children.iter().filter(|c| c.name == p.name).collect();
        if let Some(v) = decode_elems(&els, p.ty, p.name)? {
            args.0.push((p.name, v));
        }
    }
    Ok(args)
}

fn decode_elems(els: &[&Element], declared: TypeRef, path: &str) -> Result<Option<Value>, DecodeError> {
    if els.is_empty() {
        return Ok(None);
    }
    if declared.array {
        let mut out = Vec::with_capacity(els.len());
        for (i, e) in els.iter().enumerate() {
            if let Some(v) = decode_one(e, declared.ty, &format!("{path}[{i}]"))? {
                out.push(v);
            }
        }
        return Ok(Some(Value::Array(elem_type_for_array(declared.ty), out)));
    }
    if els.len() > 1 {
        return Err(DecodeError::InvalidValue { path: path.into(), msg: "repeated element for a single value".into() });
    }
    decode_one(els[0], declared.ty, path)
}

fn elem_type_for_array(t: TypeId) -> TypeId {
    if t.kind() == Kind::Managed {
        types::ManagedObjectReference
    } else {
        t
    }
}

/// Resolve `ArrayOfX` to X.
pub fn array_elem_type(name: &str) -> Option<TypeId> {
    let rest = name.strip_prefix("ArrayOf")?;
    TypeId::by_name(rest).or_else(|| {
        let mut c = rest.chars();
        let first = c.next()?;
        TypeId::by_name(&format!("{}{}", first.to_ascii_lowercase(), c.as_str()))
    })
}

fn invalid(path: &str, msg: impl Into<String>) -> DecodeError {
    DecodeError::InvalidValue { path: path.into(), msg: msg.into() }
}

fn decode_one(el: &Element, declared: TypeId, path: &str) -> Result<Option<Value>, DecodeError> {
    if el.is_nil() {
        return Ok(None);
    }
    let mut ty = declared;
    if let Some(x) = el.xsi_type() {
        if let Some(elem) = array_elem_type(x) {
            let mut out = vec![];
            for (i, c) in el.children.iter().enumerate() {
                if let Some(v) = decode_one(c, elem, &format!("{path}[{i}]"))? {
                    out.push(v);
                }
            }
            return Ok(Some(Value::Array(elem_type_for_array(elem), out)));
        }
        ty = TypeId::by_name(x).ok_or_else(|| DecodeError::UnknownType(x.to_string()))?;
        if declared != types::anyType && !compatible(ty, declared) {
            return Err(invalid(path, format!("{} is not a {}", ty.name(), declared.name())));
        }
    }
    // The WSDL types MethodFault slots (SetTaskState.fault, TaskInfo.error)
    // as LocalizedMethodFault, and pyvmomi sends that shape without xsi:type.
    if el.xsi_type().is_none() && ty.is_fault() && ty.prop("fault").is_none() && el.child("fault").is_some() {
        ty = types::LocalizedMethodFault;
    }
    if ty == types::ManagedObjectReference || ty.kind() == Kind::Managed {
        let tname = el.plain_attr("type").ok_or_else(|| invalid(path, "MoRef without type"))?;
        let mt = TypeId::by_name(tname)
            .filter(|t| t.kind() == Kind::Managed)
            .ok_or_else(|| invalid(path, format!("unknown managed object type {tname}")))?;
        return Ok(Some(Value::MoRef(MoRef::new(mt, el.text.trim()))));
    }
    match ty.kind() {
        Kind::Primitive | Kind::Enum => parse_primitive(ty, &el.text).map(Some).map_err(|m| invalid(path, m)),
        Kind::Data => {
            if ty == types::DataObject {
                return Err(invalid(path, "abstract DataObject without xsi:type"));
            }
            let mut d = Data::new(ty);
            let mut i = 0;
            while i < el.children.len() {
                let c = &el.children[i];
                let p = ty
                    .prop(&c.name)
                    .ok_or_else(|| invalid(path, format!("{} has no property {}", ty.name(), c.name)))?;
                let mut j = i + 1;
                while j < el.children.len() && el.children[j].name == c.name {
                    j += 1;
                }
                let group: Vec<&Element> = el.children[i..j].iter().collect();
                if let Some(v) = decode_elems(&group, p.ty, &format!("{path}.{}", p.name))? {
                    d.fields.push((p.name, v));
                }
                i = j;
            }
            Ok(Some(Value::Data(Box::new(d))))
        }
        Kind::Managed => unreachable!(),
    }
}

fn compatible(actual: TypeId, declared: TypeId) -> bool {
    actual.is_a(declared)
        || (declared.kind() == Kind::Managed && actual == types::ManagedObjectReference)
        || (declared.is_primitive() && actual.is_primitive())
}

// ---- encoding ---------------------------------------------------------------

const ENVELOPE_OPEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body>
"#;
const ENVELOPE_CLOSE: &str = "</soapenv:Body>\n</soapenv:Envelope>";

/// `<{method}Response xmlns="{ns}"><returnval>…</returnval></…>`
pub fn encode_response(method: &str, ns: &str, result: Option<(&Value, TypeRef)>, version: VersionId) -> String {
    let mut o = String::with_capacity(1024);
    o.push_str(ENVELOPE_OPEN);
    o.push_str(&format!("<{method}Response xmlns=\"{ns}\">"));
    if let Some((v, declared)) = result {
        encode_value(&mut o, "returnval", v, declared, version);
    }
    o.push_str(&format!("</{method}Response>\n"));
    o.push_str(ENVELOPE_CLOSE);
    o
}

/// A SOAP fault carrying a typed MethodFault in its detail.
pub fn encode_fault(fault: &Data, message: &str, ns: &str, version: VersionId) -> String {
    let mut o = String::with_capacity(512);
    o.push_str(ENVELOPE_OPEN);
    o.push_str("<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>");
    escape(message, &mut o);
    o.push_str("</faultstring><detail>");
    let name = fault.ty.name();
    o.push_str(&format!("<{name}Fault xmlns=\"{ns}\" xsi:type=\"{name}\">"));
    encode_fields(&mut o, fault, version);
    o.push_str(&format!("</{name}Fault>"));
    o.push_str("</detail></soapenv:Fault>\n");
    o.push_str(ENVELOPE_CLOSE);
    o
}

/// A client-side SOAP fault (malformed envelope and similar).
pub fn encode_client_fault(message: &str) -> String {
    let mut o = String::new();
    o.push_str(ENVELOPE_OPEN);
    o.push_str("<soapenv:Fault><faultcode>ClientFaultCode</faultcode><faultstring>");
    escape(message, &mut o);
    o.push_str("</faultstring></soapenv:Fault>\n");
    o.push_str(ENVELOPE_CLOSE);
    o
}

fn xsd_name(t: TypeId) -> String {
    match t.name() {
        n @ ("boolean" | "byte" | "short" | "int" | "long" | "float" | "double" | "string" | "dateTime"
        | "base64Binary" | "anyURI") => format!("xsd:{n}"),
        n => n.to_string(),
    }
}

fn prim_type_of(v: &Value) -> String {
    match v {
        Value::Typed(t, _) => xsd_name(*t),
        other => {
            let n = other.wire_type();
            match TypeId::by_name(&n) {
                Some(t) => xsd_name(t),
                None => n,
            }
        }
    }
}

fn open(o: &mut String, tag: &str) {
    o.push('<');
    o.push_str(tag);
}

fn close(o: &mut String, tag: &str) {
    o.push_str("</");
    o.push_str(tag);
    o.push('>');
}

fn xsi(o: &mut String, ty: &str) {
    o.push_str(" xsi:type=\"");
    o.push_str(ty);
    o.push('"');
}

pub fn encode_value(o: &mut String, tag: &str, v: &Value, declared: TypeRef, version: VersionId) {
    match v {
        Value::Array(elem, items) => {
            if declared.array {
                let d = TypeRef { ty: declared.ty, array: false };
                for it in items {
                    encode_value(o, tag, it, d, version);
                }
            } else {
                open(o, tag);
                xsi(o, &crate::value::array_name(*elem));
                o.push('>');
                let etag = elem.name();
                for it in items {
                    encode_value(o, etag, it, TypeRef { ty: *elem, array: false }, version);
                }
                close(o, tag);
            }
        }
        // The WSDL types every MethodFault slot (failedVmFile[].fault,
        // faultCause, …) as LocalizedMethodFault: wrap the fault in one.
        Value::Data(d)
            if declared.ty == types::MethodFault && d.ty.is_fault() && d.ty != types::LocalizedMethodFault =>
        {
            open(o, tag);
            o.push('>');
            encode_value(o, "fault", v, TypeRef { ty: types::LocalizedMethodFault, array: false }, version);
            let msg = d
                .get("faultMessage")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_data)
                .and_then(|m| m.str("message"))
                .unwrap_or(d.ty.name());
            open(o, "localizedMessage");
            o.push('>');
            escape(msg, o);
            close(o, "localizedMessage");
            close(o, tag);
        }
        Value::Data(d) => {
            open(o, tag);
            if d.ty != declared.ty {
                xsi(o, d.ty.name());
            }
            o.push('>');
            encode_fields(o, d, version);
            close(o, tag);
        }
        Value::MoRef(m) => {
            open(o, tag);
            o.push_str(" type=\"");
            o.push_str(m.ty.name());
            o.push('"');
            if declared.ty == types::anyType {
                xsi(o, "ManagedObjectReference");
            }
            o.push('>');
            escape(&m.value, o);
            close(o, tag);
        }
        prim => {
            open(o, tag);
            if declared.ty == types::anyType {
                xsi(o, &prim_type_of(prim));
            }
            o.push('>');
            match prim {
                Value::String(s) | Value::Typed(_, s) => escape(s, o),
                other => escape(&format_primitive(other), o),
            }
            close(o, tag);
        }
    }
}

fn encode_fields(o: &mut String, d: &Data, version: VersionId) {
    for p in d.ty.all_props() {
        if !version.includes(p.version) {
            continue;
        }
        if let Some(v) = d.get(p.name) {
            // LocalizedMethodFault.fault is the one MethodFault slot the
            // WSDL keeps as MethodFault: no second wrapping.
            let declared = if d.ty == types::LocalizedMethodFault && p.name == "fault" {
                TypeRef { ty: types::anyType, array: false }
            } else {
                p.ty
            };
            encode_value(o, p.name, v, declared, version);
        }
    }
}
