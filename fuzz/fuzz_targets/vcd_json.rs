//! VCD JSON: a Task body in VCD JSON (`application/vnd.vmware.vcloud.task+json`)
//! through the VCD handler: PUT on an existing task, or POST as a new task
//! in the System org (by the first byte's low bit), answered in JSON or XML
//! (bit 1). `@TASK@`/`@ORG@` in the body are replaced by the real ids.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vtwin::api::vcd;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let h = vtwin_fuzz::harness();
    let body = match std::str::from_utf8(body) {
        Ok(s) => h.substitute(s).into_bytes(),
        Err(_) => body.to_vec(),
    };
    let (method, path) = if sel & 1 == 0 {
        ("PUT", format!("/api/task/{}", h.vcd_task))
    } else {
        ("POST", format!("/api/tasksList/{}", h.vcd_org))
    };
    let accept = if sel & 2 == 0 { "application/*+json;version=36.0" } else { "application/*+xml;version=36.0" };
    let r = vtwin_fuzz::req(
        method,
        &path,
        &[
            ("x-vcloud-authorization", &h.vcd_token),
            ("accept", accept),
            ("content-type", "application/vnd.vmware.vcloud.task+json"),
        ],
        body,
    );
    let (_, out) = vtwin_fuzz::read(h, h.rt.block_on(vcd::handle(&h.state, &r)).0);
    if sel & 2 == 0 && !out.is_empty() {
        // A JSON answer is JSON.
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out) {
            panic!("VCD JSON answer is not JSON: {e}: {}", String::from_utf8_lossy(&out));
        }
    }
});
