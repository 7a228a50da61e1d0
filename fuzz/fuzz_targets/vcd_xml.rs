//! VCD XML: `tree::parse_xml` with the keep-raw elements the Task parser
//! uses (`Params`, `Result`), the parsed tree rendered back as XML and as
//! VCD JSON; a parsed `Task` document is also sent through the VCD handler
//! (PUT on an existing task, or POST as a new task, by the input's length)
//! so the Task reader and the task rules see it, and the server's answer
//! (which echoes `Params`/`Result` as given) must be XML whose element and
//! attribute names are XML names.
//!
//! (The generic tree is not required to round-trip: `to_xml` writes names
//! as parsed, and quick-xml accepts names XML does not, e.g. `<a%b="c"/>`;
//! the server renders only its own trees plus the kept raw elements.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use vtwin::api::vcd::{self, tree};

const NS: &str = "http://www.vmware.com/vcloud/v1.5";

fuzz_target!(|data: &[u8]| {
    for keep in [&["Params", "Result"][..], &[]] {
        if let Ok(n) = tree::parse_xml(data, keep) {
            std::hint::black_box(tree::to_xml(&n, NS));
            std::hint::black_box(tree::to_json(&n).to_string());
        }
    }
    let Ok(n) = tree::parse_xml(data, &["Params", "Result"]) else { return };
    if n.name != "Task" {
        return;
    }
    let h = vtwin_fuzz::harness();
    let path = if data.len().is_multiple_of(2) {
        format!("/api/task/{}", h.vcd_task)
    } else {
        format!("/api/tasksList/{}", h.vcd_org)
    };
    let method = if data.len().is_multiple_of(2) { "PUT" } else { "POST" };
    let r = vtwin_fuzz::req(
        method,
        &path,
        &[
            ("x-vcloud-authorization", &h.vcd_token),
            ("accept", "application/*+xml;version=36.0"),
            ("content-type", "application/vnd.vmware.vcloud.task+xml"),
        ],
        data.to_vec(),
    );
    let (status, out) = vtwin_fuzz::read(h, h.rt.block_on(vcd::handle(&h.state, &r)).0);
    if out.is_empty() {
        return;
    }
    match tree::parse_xml(&out, &[]) {
        Ok(doc) => check_names(&doc, status, &out),
        Err(e) => panic!("the server's answer ({status}) is not XML: {e}\n{}", String::from_utf8_lossy(&out)),
    }
});

/// An XML Name (local part): what any XML parser on the client accepts.
fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_alphabetic() || f == '_')
        && c.all(|x| x.is_alphanumeric() || matches!(x, '_' | '-' | '.'))
}

fn check_names(n: &tree::Node, status: u16, out: &[u8]) {
    if !is_name(&n.name) || n.attrs.iter().any(|(k, _)| !is_name(k)) {
        panic!(
            "the server's answer ({status}) has an element or attribute name that is not an XML name: <{}>\n{}",
            n.name,
            String::from_utf8_lossy(out)
        );
    }
    for c in &n.children {
        check_names(c, status, out);
    }
}
