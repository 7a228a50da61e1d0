//! Helpers for tests that run the real `vtwin` binary.
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const ADMIN: &str = "administrator@vsphere.local";
pub const PW: &str = "Test-Passw0rd!";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vtwin")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("vtwin-test-").tempdir().unwrap()
}

impl Server {
    // The child is reaped by Server::drop.
    #[allow(clippy::zombie_processes)]
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(bin())
            .args([
                "serve",
                "--plain-http",
                "--listen",
                "127.0.0.1:0",
                "--nbd-listen",
                "127.0.0.1:0",
                "--admin-password",
                PW,
            ])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vtwin");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("vtwin exited before listening");
            }
            if let Some(a) = line.trim().strip_prefix("vtwin listening on ") {
                let base = a.to_string();
                std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
                return Server { child, base, dir: dir.to_path_buf() };
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST a SOAP body to /sdk; returns (status, body, set-cookie).
    pub fn soap(&self, body: &str, cookie: Option<&str>) -> (u16, String, Option<String>) {
        let mut r = ureq::post(&self.url("/sdk"))
            .set("Content-Type", "text/xml; charset=UTF-8")
            .set("SOAPAction", "\"urn:vim25/9.1.0.0\"");
        if let Some(c) = cookie {
            r = r.set("Cookie", c);
        }
        resp(r.send_string(body))
    }

    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        session: Option<&str>,
    ) -> (u16, String, Option<String>) {
        let mut r = ureq::request(method, &self.url(path));
        if let Some(s) = session {
            r = r.set("vmware-api-session-id", s);
        }
        let res = match body {
            Some(b) => r.send_string(b),
            None => r.call(),
        };
        match res {
            Ok(x) => {
                let sid = x.header("vmware-api-session-id").map(str::to_string);
                let status = x.status();
                (status, x.into_string().unwrap(), sid)
            }
            Err(ureq::Error::Status(code, x)) => (code, x.into_string().unwrap(), None),
            Err(e) => panic!("transport error: {e}"),
        }
    }

    /// POST a VI/JSON method under /sdk/vim25/9.1.0.0; the reply as JSON
    /// (Null for an empty body).
    pub fn call(&self, sid: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (st, b, _) = self.json("POST", &format!("/sdk/vim25/9.1.0.0/{path}"), Some(&body.to_string()), Some(sid));
        (st, if b.is_empty() { serde_json::Value::Null } else { json_value(&b) })
    }

    /// Log in over VI/JSON; returns the session id.
    pub fn json_login(&self, user: &str, pw: &str) -> String {
        let body = format!(r#"{{"_typeName":"LoginRequestType","userName":"{user}","password":"{pw}"}}"#);
        let (st, b, sid) =
            self.json("POST", "/sdk/vim25/9.1.0.0/SessionManager/SessionManager/Login", Some(&body), None);
        assert_eq!(st, 200, "{b}");
        sid.expect("vmware-api-session-id header")
    }

    /// Log in over SOAP; returns the cookie to send back.
    pub fn soap_login(&self, user: &str, pw: &str) -> String {
        let (st, body, cookie) = self.soap(&envelope(&format!(
            r#"<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>{user}</userName><password>{pw}</password></Login>"#
        )), None);
        assert_eq!(st, 200, "{body}");
        let c = cookie.expect("Set-Cookie");
        c.split(';').next().unwrap().to_string()
    }
}

pub fn resp(r: Result<ureq::Response, ureq::Error>) -> (u16, String, Option<String>) {
    match r {
        Ok(x) => {
            let c = x.header("set-cookie").map(str::to_string);
            (x.status(), x.into_string().unwrap(), c)
        }
        Err(ureq::Error::Status(code, x)) => {
            let c = x.header("set-cookie").map(str::to_string);
            (code, x.into_string().unwrap(), c)
        }
        Err(e) => panic!("transport error: {e}"),
    }
}

/// A prefixed envelope as pyvmomi sends it.
pub fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

pub fn json_value(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}
