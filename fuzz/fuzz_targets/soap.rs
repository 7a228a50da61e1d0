//! SOAP request decoding: the envelope parser, then, when the request names a
//! method of `_this`'s type, the schema-driven argument decoder; what decodes
//! is encoded back (SOAP and VI/JSON) as a response would be.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmodl::{find_method, soap, TypeId, VersionId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(req) = soap::parse_request(text) else { return };
    let Some(ty) = req.this.as_ref().and_then(|(t, _)| TypeId::by_name(t)) else { return };
    let Some(m) = find_method(ty, &req.method) else { return };
    let Ok(args) = soap::decode_args(&req, m) else { return };
    let version = VersionId::by_wire("vim25", vtwin::api::newest_release()).expect("newest release");
    let mut out = String::new();
    let mut missing = vec![];
    for (name, v) in &args.0 {
        let p = m.params.iter().find(|p| p.name == *name).expect("decoded parameters are the method's");
        soap::encode_value(&mut out, name, v, p.ty, version);
        let _ = vmodl::json::encode(v, p.ty, version);
        v.missing_required(name, &mut missing);
    }
    std::hint::black_box((out, missing));
});
