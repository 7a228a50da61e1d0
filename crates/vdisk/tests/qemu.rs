//! Files the disk engine writes, checked by qemu-img and qemu-io; and files
//! qemu writes, read by the disk engine.
use std::path::Path;
use std::process::Command;
use vdisk::{Chain, Provisioning};

const MIB: u64 = 1 << 20;

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e} (qemu-utils installed?)"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn allocated_kib(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() / 2
}

#[test]
fn our_chain_is_what_qemu_reads() {
    let d = tempfile::tempdir().unwrap();
    let cap = 40 * MIB + 512 * 3; // not a whole number of grains
    let mut expect = vec![0u8; cap as usize];
    let base = d.path().join("disk.vmdk");
    let mut c = Chain::create(&base, cap, Provisioning::Thin, "60 00 C2 9d").unwrap();
    assert!(allocated_kib(&d.path().join("disk-flat.vmdk")) < 64, "a thin disk starts empty");
    let mut put = |c: &mut Chain, off: u64, len: usize, byte: u8| {
        let data = vec![byte; len];
        c.write(off, &data).unwrap();
        expect[off as usize..off as usize + len].copy_from_slice(&data);
    };
    put(&mut c, 0, 2 * MIB as usize, 0x11);
    put(&mut c, cap - 1000, 1000, 0x99);
    c.flush().unwrap();
    let (ok, out) = run("qemu-io", &["-r", "-f", "vmdk", "-c", "read -P 0x11 0 2M", p(&base)]);
    assert!(ok && !out.contains("fail") && !out.contains("Pattern verification failed"), "{out}");

    c.snapshot(&d.path().join("disk-000001.vmdk")).unwrap();
    put(&mut c, MIB, 64 << 10, 0xab);
    put(&mut c, 5 * MIB + 3, 100, 0x42); // inside a grain: copy-up keeps the rest
    put(&mut c, 32 * MIB - 10, 20, 0x43); // across a grain-table boundary
    c.snapshot(&d.path().join("disk-000002.vmdk")).unwrap();
    put(&mut c, 3 * MIB, 4096, 0xcd);
    put(&mut c, MIB + 100, 10, 0xce);
    put(&mut c, cap - 10, 10, 0xcf);
    c.flush().unwrap();

    let top = d.path().join("disk-000002.vmdk");
    let (ok, out) = run("qemu-img", &["info", "--backing-chain", p(&top)]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("image:").count(), 3, "{out}");
    for f in ["disk.vmdk", "disk-000001.vmdk", "disk-000002.vmdk"] {
        let (ok, out) = run("qemu-img", &["check", p(&d.path().join(f))]);
        assert!(ok && out.contains("No errors"), "{f}: {out}");
    }
    let raw = d.path().join("expect.raw");
    std::fs::write(&raw, &expect).unwrap();
    let (ok, out) = run("qemu-img", &["compare", "-f", "vmdk", "-F", "raw", p(&top), p(&raw)]);
    assert!(ok && out.contains("identical"), "{out}");
    // The middle of the chain still reads as it was when frozen.
    let mut mid = vec![0u8; cap as usize];
    Chain::open(&d.path().join("disk-000001.vmdk")).unwrap().read(0, &mut mid).unwrap();
    assert_eq!(mid[3 * MIB as usize], 0, "written after the second snapshot");
    assert_eq!(mid[MIB as usize], 0xab);

    // Reopened from the files, the engine reads what it wrote.
    let c = Chain::open(&top).unwrap();
    let mut got = vec![0u8; cap as usize];
    c.read(0, &mut got).unwrap();
    assert!(got == expect, "read back differs");
    assert_eq!(c.descriptors().len(), 3);
    assert!(matches!(c.read(cap - 1, &mut [0u8; 2]), Err(vdisk::Error::OutOfRange { .. })));
}

#[test]
fn we_read_what_qemu_writes() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("q.vmdk");
    let delta = d.path().join("q-1.vmdk");
    assert!(run("qemu-img", &["create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", p(&base), "8M"]).0);
    assert!(run("qemu-io", &["-f", "vmdk", "-c", "write -P 0x5a 0 1M", p(&base)]).0);
    let (ok, out) = run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            "-b",
            "q.vmdk",
            "-F",
            "vmdk",
            p(&delta),
        ],
    );
    assert!(ok, "{out}");
    assert!(run("qemu-io", &["-f", "vmdk", "-c", "write -P 0x6b 512k 64k", p(&delta)]).0);
    let raw = d.path().join("q.raw");
    assert!(run("qemu-img", &["convert", "-O", "raw", p(&delta), p(&raw)]).0);
    let c = Chain::open(&delta).unwrap();
    let mut got = vec![0u8; c.capacity() as usize];
    c.read(0, &mut got).unwrap();
    assert!(got == std::fs::read(&raw).unwrap());
    assert_eq!(c.top_allocated(), vec![(512 << 10, 64 << 10)]);
}

#[test]
fn provisioning_reserves_space() {
    let d = tempfile::tempdir().unwrap();
    for (name, prov) in [("lazy", Provisioning::LazyZeroed), ("eager", Provisioning::EagerZeroed)] {
        let c = Chain::create(&d.path().join(format!("{name}.vmdk")), 8 * MIB, prov, "u").unwrap();
        assert!(allocated_kib(&d.path().join(format!("{name}-flat.vmdk"))) >= 8 * 1024, "{name}");
        assert_eq!(c.top().ddb("thinProvisioned"), Some("0"));
        let (ok, out) = run("qemu-img", &["check", p(&d.path().join(format!("{name}.vmdk")))]);
        assert!(ok, "{out}");
    }
}
