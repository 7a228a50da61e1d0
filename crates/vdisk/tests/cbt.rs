//! The change log never misses a change: random writes, snapshots, reverts,
//! snapshot deletions and reopenings against an in-memory model of every
//! state; and the backup loop a backup product runs, checked by qemu-img.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use vdisk::chain::Provisioning;
use vdisk::Disk;

const CAP: u64 = 8 << 20;

fn areas_cover(d: &Disk, snap: &str, change_id: &str, old: &[u8], new: &[u8]) {
    let mut start = 0;
    let mut areas = vec![];
    while start < CAP {
        let c = d.changed_areas(snap, start, change_id).unwrap();
        assert!(c.length > 0);
        for w in c.areas.windows(2) {
            assert!(w[0].0 + w[0].1 < w[1].0, "sorted, disjoint, not touching: {:?}", c.areas);
        }
        areas.extend(c.areas);
        start += c.length;
    }
    // Block by block (the tracking block is 64 KiB): a block that differs
    // must lie inside a reported area.
    const B: u64 = 64 << 10;
    for b in 0..CAP / B {
        let r = (b * B) as usize..((b + 1) * B) as usize;
        if old[r.clone()] != new[r] {
            let covered = areas.iter().any(|&(o, l)| o <= b * B && b * B + B <= o + l);
            assert!(covered, "block {b} changed but is not reported ({change_id}): {areas:?}");
        }
    }
}

#[test]
fn never_misses_a_change() {
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let ddir = dir.path().join("d");
        let mut d = Disk::create(&ddir, "6000c29a1b2c3d4e", "prop", CAP, Provisioning::Thin, true).unwrap();
        let mut live = vec![0u8; CAP as usize];
        // snapshot id -> its content
        let mut snaps: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut n = 0;
        for _ in 0..60 {
            match rng.gen_range(0..10) {
                0..=4 => {
                    let len = rng.gen_range(1..200_000u64);
                    let off = rng.gen_range(0..CAP - len);
                    let byte = rng.gen::<u8>() | 1;
                    let data = vec![byte; len as usize];
                    d.write(off, &data).unwrap();
                    live[off as usize..(off + len) as usize].copy_from_slice(&data);
                }
                5 | 6 => {
                    n += 1;
                    let id = format!("s{n}");
                    d.create_snapshot(&id, "").unwrap();
                    snaps.insert(id, live.clone());
                }
                7 if !snaps.is_empty() => {
                    let ids: Vec<String> = snaps.keys().cloned().collect();
                    let id = ids[rng.gen_range(0..ids.len())].clone();
                    d.revert(&id).unwrap();
                    live = snaps[&id].clone();
                    // Later snapshots are gone.
                    let keep: Vec<String> = d.meta.snapshots.iter().map(|s| s.id.clone()).collect();
                    snaps.retain(|k, _| keep.contains(k));
                }
                8 if !snaps.is_empty() => {
                    let ids: Vec<String> = snaps.keys().cloned().collect();
                    let id = ids[rng.gen_range(0..ids.len())].clone();
                    d.delete_snapshot(&id, &mut |_| {}).unwrap();
                    snaps.remove(&id);
                }
                _ => {
                    d.flush().unwrap();
                    drop(d);
                    d = Disk::open(&ddir).unwrap();
                }
            }
            // Every state reads as the model says.
            let mut got = vec![0u8; CAP as usize];
            d.read(0, &mut got).unwrap();
            assert!(got == live, "seed {seed}: live state differs");
            // Every pair of snapshots (older, newer) reports every change, and
            // "*" every nonzero byte.
            let order: Vec<_> = d.meta.snapshots.clone();
            for (i, newer) in order.iter().enumerate() {
                areas_cover(&d, &newer.id, "*", &vec![0u8; CAP as usize], &snaps[&newer.id]);
                for older in &order[..i] {
                    let cid = d.change_id(older).expect("tracked snapshot has a changeId");
                    areas_cover(&d, &newer.id, &cid, &snaps[&older.id], &snaps[&newer.id]);
                }
            }
        }
    }
}

#[test]
fn query_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Disk::create(&dir.path().join("d"), "6000c29a00000001", "e", CAP, Provisioning::Thin, true).unwrap();
    d.write(0, &[1; 10]).unwrap();
    let s1 = d.create_snapshot("s1", "").unwrap();
    let s2 = d.create_snapshot("s2", "").unwrap();
    let c1 = d.change_id(&s1).unwrap();
    let c2 = d.change_id(&s2).unwrap();
    assert!(c1.contains('/') && c1.split('/').next().unwrap().len() == 47, "{c1}");
    assert!(matches!(d.changed_areas("nope", 0, "*"), Err(vdisk::QueryError::SnapshotNotFound)));
    assert!(matches!(d.changed_areas("s1", CAP, "*"), Err(vdisk::QueryError::OffsetBeyondEnd)));
    assert!(matches!(d.changed_areas("s1", 0, &c2), Err(vdisk::QueryError::FutureChangeId)));
    assert!(matches!(d.changed_areas("s1", 0, "garbage"), Err(vdisk::QueryError::BadChangeId(_))));
    d.revert("s1").unwrap();
    assert!(d.snapshot("s2").is_none());
    d.set_tracking(false).unwrap();
    assert!(matches!(d.changed_areas("s1", 0, &c1), Err(vdisk::QueryError::NotTracking)));
    d.set_tracking(true).unwrap();
    // A new epoch: old changeIds are from another epoch, old snapshots have no point.
    assert!(matches!(d.changed_areas("s1", 0, &c1), Err(vdisk::QueryError::BadChangeId(_))));
}
