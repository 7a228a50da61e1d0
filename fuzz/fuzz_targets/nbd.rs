//! NBD: the server of `vtwin::api::nbd` (fixed newstyle negotiation, option
//! haggling, transmission with simple or structured replies and
//! base:allocation) on a real engine, over TCP on 127.0.0.1. The fuzz input
//! is the client's byte stream after the server's greeting; its first byte
//! picks a valid prefix to put before it, so that transmission is reached:
//!
//! - 0: none (the input starts with the client flags: negotiation fuzzing)
//! - 1: flags, OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT base:allocation,
//!   OPT_GO on a writable export
//! - 2: flags, OPT_GO on a read-only export (simple replies)
//! - 3: flags, OPT_EXPORT_NAME on a writable export (old-style end of haggling)
//! - 4: flags, OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT, OPT_GO on a snapshot
//! - 5: flags only (option haggling fuzzing with the real flags)
//!
//! Export names come from real tickets (`POST /api/vtwin/nbd-tickets`) for a
//! first-class disk the harness made. The client writes everything, half-
//! closes, and reads the answers (at most 64 MiB) until the server closes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::time::Duration;

const IHAVEOPT: u64 = 0x49484156454f5054;
const FLAGS: u32 = 1 | 2; // FIXED_NEWSTYLE | NO_ZEROES

fn opt(out: &mut Vec<u8>, opt: u32, data: &[u8]) {
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

fn name(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn go(out: &mut Vec<u8>, export: &str) {
    let mut d = vec![];
    name(&mut d, export);
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&3u16.to_be_bytes()); // NBD_INFO_BLOCK_SIZE
    opt(out, 7, &d);
}

fn meta(out: &mut Vec<u8>, export: &str) {
    opt(out, 8, &[]);
    let mut d = vec![];
    name(&mut d, export);
    d.extend_from_slice(&1u32.to_be_bytes());
    name(&mut d, "base:allocation");
    opt(out, 10, &d);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let h = vtwin_fuzz::harness();
    let [rw, ro, snap] = h.exports();
    let mut stream = Vec::with_capacity(rest.len() + 256);
    match sel % 6 {
        0 => {}
        1 => {
            stream.extend_from_slice(&FLAGS.to_be_bytes());
            meta(&mut stream, &rw);
            go(&mut stream, &rw);
        }
        2 => {
            stream.extend_from_slice(&FLAGS.to_be_bytes());
            go(&mut stream, &ro);
        }
        3 => {
            stream.extend_from_slice(&FLAGS.to_be_bytes());
            opt(&mut stream, 1, rw.as_bytes());
        }
        4 => {
            stream.extend_from_slice(&FLAGS.to_be_bytes());
            meta(&mut stream, &snap);
            go(&mut stream, &snap);
        }
        _ => stream.extend_from_slice(&FLAGS.to_be_bytes()),
    }
    stream.extend_from_slice(rest);

    let Ok(mut c) = std::net::TcpStream::connect(h.nbd_addr) else { return };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = c.set_nodelay(true);
    // Inputs are small: they fit in the socket's buffer, so writing them all
    // before reading cannot deadlock.
    if c.write_all(&stream).is_err() {
        return;
    }
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    let mut head = vec![];
    while total < 64 << 20 {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if head.len() < 512 {
                    head.extend_from_slice(&buf[..n.min(512)]);
                }
                total += n;
            }
        }
    }
    // VTWIN_FUZZ_DEBUG=1: what the server answered (to check that inputs
    // reach transmission).
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *DEBUG.get_or_init(|| std::env::var_os("VTWIN_FUZZ_DEBUG").is_some()) {
        eprintln!("nbd: sent {} bytes, got {total}: {:02x?}", stream.len(), &head[..head.len().min(160)]);
    }
});
