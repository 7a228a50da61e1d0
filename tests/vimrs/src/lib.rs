//! Shared by the vim_rs client tests in `tests/`: run the real vtwin binary
//! (named by `VTWIN_BIN`) over HTTPS and wait for its ready line.
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const PW: &str = "Vimrs-Passw0rd!";

/// A running vtwin; killed when dropped.
pub struct Server {
    pub child: tokio::process::Child,
    /// host:port
    pub addr: String,
}

pub async fn start(name: &str, extra: &[&str]) -> Server {
    let dir = data_dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    start_in(&dir, extra).await
}

/// The data directory `start(name, …)` uses.
pub fn data_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vtwin-vimrs-{name}-{}", std::process::id()))
}

/// Start vtwin on an existing data directory (after a restart, say).
pub async fn start_in(dir: &std::path::Path, extra: &[&str]) -> Server {
    let bin = std::env::var("VTWIN_BIN").expect("VTWIN_BIN names the vtwin binary under test");
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--admin-password", PW])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start vtwin");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("vtwin did not start in time")
            .unwrap()
            .expect("vtwin exited");
        if let Some(a) = line.strip_prefix("vtwin listening on https://") {
            return Server { child, addr: a.to_string() };
        }
    }
}
