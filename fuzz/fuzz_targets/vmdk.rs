//! VMDK: the text descriptor parser (`Descriptor::parse`, and what it renders
//! parses back to the same descriptor), the hosted-sparse (KDMV) header and
//! grain-directory reader (`SparseExtent::open`, then reads of a few grains),
//! and `Chain::open_readonly` on a directory where the input is the top
//! descriptor beside real extents (a flat file, a KDMV extent) and a real
//! parent descriptor, followed by reads and the allocation map.
//!
//! First byte % 3: 0 descriptor, 1 sparse extent (the rest is the file), 2
//! chain (the rest is the top descriptor).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use vdisk::sparse::SparseExtent;
use vdisk::{Chain, Descriptor, Provisioning};

/// A directory with `parent.vmdk` (+ `parent-flat.vmdk`, 1 MiB), `top-flat.vmdk`
/// (1 MiB) and `top-s001.vmdk` (a 2,048-sector KDMV extent), made once.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::Builder::new().prefix("vtwin-fuzz-vmdk-").tempdir().expect("tempdir").keep();
        let mut parent = Chain::create(
            &d.join("parent.vmdk"),
            1 << 20,
            Provisioning::Thin,
            "60 00 C2 9b 00 00 00 00-00 00 00 00 00 00 00 01",
        )
        .expect("parent");
        parent.write(0, &[7u8; 4096]).expect("write");
        std::fs::write(d.join("top-flat.vmdk"), vec![0u8; 1 << 20]).expect("flat");
        let mut s = SparseExtent::create(&d.join("top-s001.vmdk"), 2048).expect("sparse");
        s.allocate(1, &vec![9u8; vdisk::sparse::GRAIN as usize]).expect("grain");
        d
    })
}

fn read_some(c: &Chain) {
    let cap = c.capacity();
    let mut buf = vec![0u8; 4096];
    for at in [0, 65536 - 512, cap / 2, cap.saturating_sub(4096)] {
        let _ = c.read(at, &mut buf);
    }
    let _ = c.allocated();
    let _ = c.top_allocated();
    std::hint::black_box((c.files(), c.descriptors(), c.top().render()));
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    match sel % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(d) = Descriptor::parse(&text) {
                let _ = d.capacity_sectors();
                let again = Descriptor::parse(&d.render())
                    .unwrap_or_else(|e| panic!("a rendered descriptor does not parse: {e}\n{}", d.render()));
                assert_eq!(again, d, "render/parse changed the descriptor");
            }
        }
        1 => {
            let f = tempfile::NamedTempFile::new().expect("temp file");
            std::fs::write(f.path(), rest).expect("write");
            if let Ok(s) = SparseExtent::open(f.path(), false) {
                let mut buf = vec![0u8; 4096];
                let grains = s.capacity_sectors().div_ceil(vdisk::sparse::GRAIN_SECTORS);
                for g in [0, 1, grains / 2, grains.saturating_sub(1)] {
                    if s.allocated(g) {
                        let _ = s.read_in_grain(g, 0, &mut buf);
                    }
                }
                std::hint::black_box(s.allocated_grains().take(1024).count());
            }
        }
        _ => {
            let d = dir();
            let top = d.join(format!("top-{}.vmdk", std::process::id()));
            std::fs::write(&top, rest).expect("write");
            if let Ok(c) = Chain::open_readonly(&top) {
                read_some(&c);
            }
        }
    }
});
