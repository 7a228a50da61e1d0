//! vAPI JSON: the update-spec parser (`tasks::parse_update`), the filter and
//! value functions (`Filter::from_json`, `V::from_json` rendered in the three
//! styles, `untag`, `error_name`), and the two request handlers
//! (`handle_jsonrpc`, `handle_rest`) on a real engine.
//!
//! Input: one selector byte, then the JSON body. Selector % 4: 0 update spec,
//! 1 value functions, 2 JSON-RPC body, 3 REST: the body's first line is the
//! path (after /api or /rest, by bit 0x40; query allowed), the method is
//! GET/POST/PATCH/DELETE by bits 0x30. `@SESSION@` is replaced by a live
//! session id, `@VTASK@` by an extension task's id.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value as J;
use std::sync::Mutex;
use vtwin::api::vapi::{self, tasks, value};

static SESSION: Mutex<Option<(String, String)>> = Mutex::new(None);

/// This target's own session (a fuzz input may log it out) and a task.
fn session(h: &'static vtwin_fuzz::Harness) -> (String, String) {
    let mut g = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((t, task)) = g.as_ref() {
        if h.engine.session_for_token(t).is_some() {
            return (t.clone(), task.clone());
        }
    }
    let user = h.engine.user(vtwin_fuzz::ADMIN).ok().flatten().expect("admin");
    let s = h.engine.open_session(&user, "en", "127.0.0.1", "vtwin-fuzz").expect("session");
    let task = match g.as_ref() {
        Some((_, task)) => task.clone(),
        None => {
            let body = r#"{"spec":{"operation_id":"com.example.fuzz","cancelable":true}}"#;
            let r = vtwin_fuzz::req(
                "POST",
                "/api/vcenter/extension/tasks",
                &[("vmware-api-session-id", &s.token), ("content-type", "application/json")],
                body,
            );
            let (_, b) = vtwin_fuzz::read(h, vapi::handle_rest(&h.state, &r).0);
            serde_json::from_slice::<J>(&b).ok().and_then(|v| v.as_str().map(str::to_string)).expect("extension task")
        }
    };
    *g = Some((s.token.clone(), task.clone()));
    (s.token.clone(), task)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    match sel % 4 {
        0 => {
            let Ok(v) = serde_json::from_slice::<J>(body) else { return };
            // As handle_jsonrpc does: the tagged error's name, then clean JSON.
            let name = value::error_name(&v).map(str::to_string);
            let _ = tasks::parse_update(&value::untag(&v), name.as_deref());
            let _ = tasks::parse_update(&v, None);
        }
        1 => {
            let Ok(v) = serde_json::from_slice::<J>(body) else { return };
            let _ = tasks::Filter::from_json(&v);
            let x = value::V::from_json(&v);
            for s in [value::Style::JsonRpc, value::Style::Api, value::Style::Rest] {
                let r = x.render(s);
                std::hint::black_box(value::untag(&r));
            }
            std::hint::black_box(value::untag(&v));
        }
        2 => {
            let h = vtwin_fuzz::harness();
            let (tok, task) = session(h);
            let text = String::from_utf8_lossy(body).replace("@SESSION@", &tok).replace("@VTASK@", &task);
            let r = vtwin_fuzz::req("POST", "/api", &[("content-type", "application/json")], text);
            let _ = vtwin_fuzz::read(h, vapi::handle_jsonrpc(&h.state, &r).0);
        }
        _ => {
            let h = vtwin_fuzz::harness();
            let (tok, task) = session(h);
            let text = String::from_utf8_lossy(body).replace("@SESSION@", &tok).replace("@VTASK@", &task);
            let (line, rest) = text.split_once('\n').unwrap_or((&text, ""));
            let prefix = if sel & 0x40 != 0 { "/rest" } else { "/api" };
            let method = ["GET", "POST", "PATCH", "DELETE"][((sel >> 4) & 3) as usize];
            let path = format!("{prefix}/{}", line.trim_start_matches('/'));
            let r = vtwin_fuzz::req(
                method,
                &path,
                &[("vmware-api-session-id", &tok), ("content-type", "application/json")],
                rest.to_string(),
            );
            let _ = vtwin_fuzz::read(h, vapi::handle_rest(&h.state, &r).0);
        }
    }
});
