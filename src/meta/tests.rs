//! Range descriptors: codec, validation, split keys, and the convergence
//! of a `route::RangeMap` fed a range history in any order.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::rng::Rng;
use crate::route::{Gap, RangeMap};

fn replica(replica: u64, node: u64, role: ReplicaRole) -> RangeReplica {
    RangeReplica {
        replica,
        node,
        shard: (node % 2) as u32,
        role,
    }
}

fn desc(id: RangeId, start: &[u8], end: &[u8], version: u64, conf_ver: u64) -> RangeDesc {
    RangeDesc {
        id,
        start: Bytes::copy_from_slice(start),
        end: Bytes::copy_from_slice(end),
        epoch: Epoch { version, conf_ver },
        replicas: vec![
            replica(3 * id + 1, 1, ReplicaRole::Voter),
            replica(3 * id + 2, 2, ReplicaRole::Voter),
            replica(3 * id + 3, 3, ReplicaRole::Voter),
        ],
    }
}

fn roundtrip(d: &RangeDesc) -> Result<RangeDesc, RangeError> {
    let b = d.to_bytes();
    assert_eq!(b.len(), d.encoded_len());
    RangeDesc::decode(&b)
}

#[test]
fn keys_in_a_range() {
    let d = desc(7, b"b", b"d", 1, 1);
    assert!(!d.contains(b"a") && d.contains(b"b") && d.contains(b"c\xff") && !d.contains(b"d"));
    let last = desc(8, b"d", b"", 1, 1);
    assert!(last.contains(b"d") && last.contains(b"\xff\xff\xff") && !last.contains(b"c"));
    let all = desc(9, b"", b"", 1, 1);
    assert!(all.contains(b"") && all.contains(b"zzz"));
    assert!(d.overlaps(b"a", b"c") && d.overlaps(b"c", b"") && d.overlaps(b"", b""));
    assert!(!d.overlaps(b"a", b"b") && !d.overlaps(b"d", b"") && !d.overlaps(b"d", b"e"));
    assert_eq!(
        d.to_string(),
        "r7 [\"b\", \"d\") v1.c1 [22@n1/s1, 23@n2/s0, 24@n3/s1]"
    );
    assert_eq!(show_key(b"\x00k"), "0x006b");
}

#[test]
fn every_invariant_is_checked_and_its_limit_is_exact() {
    let ok = desc(1, b"a", b"b", 1, 1);
    assert_eq!(roundtrip(&ok), Ok(ok.clone()));

    let mut d = ok.clone();
    d.end = Bytes::from_static(b"a");
    assert!(matches!(d.validate(), Err(RangeError::Bounds { .. })));

    let mut d = ok.clone();
    d.start = Bytes::from(vec![b'a'; RANGE_BOUNDARY_BYTES_MAX]);
    d.end = Bytes::from(vec![b'b'; RANGE_BOUNDARY_BYTES_MAX]);
    assert_eq!(roundtrip(&d), Ok(d.clone()), "boundaries at the limit");
    d.end = Bytes::from(vec![b'b'; RANGE_BOUNDARY_BYTES_MAX + 1]);
    assert!(matches!(
        d.validate(),
        Err(RangeError::TooLarge { what: "end", .. })
    ));

    let mut d = ok.clone();
    d.replicas = (1..=RANGE_REPLICAS_MAX as u64)
        .map(|i| replica(i, i, ReplicaRole::Learner))
        .collect();
    d.replicas[0].role = ReplicaRole::Voter;
    assert_eq!(roundtrip(&d), Ok(d.clone()), "replicas at the limit");
    let n = RANGE_REPLICAS_MAX as u64 + 1;
    d.replicas.push(replica(n, n, ReplicaRole::Voter));
    assert!(matches!(
        d.validate(),
        Err(RangeError::TooLarge {
            what: "replica count",
            ..
        })
    ));

    let mut d = ok.clone();
    d.replicas[1].replica = 0;
    assert_eq!(d.validate(), Err(RangeError::ZeroReplica { id: 1 }));
    let mut d = ok.clone();
    d.replicas[2].replica = d.replicas[0].replica;
    assert!(matches!(
        d.validate(),
        Err(RangeError::DuplicateReplica { .. })
    ));
    let mut d = ok.clone();
    d.replicas[2].node = d.replicas[1].node;
    assert!(matches!(
        d.validate(),
        Err(RangeError::DuplicateNode { node: 2, .. })
    ));
    let mut d = ok.clone();
    for r in &mut d.replicas {
        r.role = ReplicaRole::Learner;
    }
    assert_eq!(d.validate(), Err(RangeError::NoVoter { id: 1 }));
    d.replicas[1].role = ReplicaRole::DemotingVoter;
    assert_eq!(d.validate(), Ok(()), "a demoting voter still votes");

    // The longest descriptor fits a catalog entry (also a compile-time
    // assert), and the codec's own bounds refuse lengths before reading.
    let mut b = ok.to_bytes().to_vec();
    b[8..12].copy_from_slice(&(RANGE_BOUNDARY_BYTES_MAX as u32 + 1).to_le_bytes());
    assert!(matches!(
        RangeDesc::decode(&b),
        Err(RangeError::TooLarge { what: "start", .. })
    ));
    let mut b = ok.to_bytes().to_vec();
    b[0] = 2;
    assert_eq!(RangeDesc::decode(&b), Err(RangeError::Format { found: 2 }));
    let mut b = ok.to_bytes().to_vec();
    let role_at = b.len() - 4;
    b[role_at] = 9;
    assert!(matches!(
        RangeDesc::decode(&b),
        Err(RangeError::Role { code: 9, .. })
    ));
    let mut b = ok.to_bytes().to_vec();
    b.push(0);
    assert_eq!(
        RangeDesc::decode(&b),
        Err(RangeError::Trailing { extra: 1 })
    );
    let b = ok.to_bytes();
    for cut in 0..b.len() {
        assert!(
            matches!(
                RangeDesc::decode(&b[..cut]),
                Err(RangeError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn epochs_order_descriptors_of_one_range() {
    let e = |version, conf_ver| Epoch { version, conf_ver };
    assert!(e(1, 5).is_stale_against(&e(2, 5)));
    assert!(e(2, 4).is_stale_against(&e(2, 5)));
    assert!(!e(2, 5).is_stale_against(&e(2, 5)));
    assert!(!e(3, 5).is_stale_against(&e(2, 5)));
    assert_eq!(e(3, 5).to_string(), "v3.c5");
}

#[test]
fn a_map_finds_ranges_and_names_its_gaps() {
    let mut m = RangeMap::new();
    assert_eq!(
        m.coverage(),
        Err(Gap {
            from: Bytes::new(),
            to: None
        })
    );
    m.insert(desc(1, b"", b"f", 2, 1)).unwrap();
    m.insert(desc(3, b"m", b"", 2, 1)).unwrap();
    assert_eq!(
        m.coverage().unwrap_err().to_string(),
        "no range holds the keys from \"f\" to \"m\""
    );
    assert_eq!(m.range_of(b"a").map(|d| d.id), Some(1));
    assert_eq!(m.range_of(b"g").map(|d| d.id), None);
    assert_eq!(m.range_of(b"zz").map(|d| d.id), Some(3));
    m.insert(desc(2, b"f", b"m", 2, 1)).unwrap();
    assert_eq!(m.coverage(), Ok(()));
    let ids = |it: &mut dyn Iterator<Item = &RangeDesc>| it.map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(&mut m.overlapping(b"", b"")), vec![1, 2, 3]);
    assert_eq!(ids(&mut m.overlapping(b"b", b"g")), vec![1, 2]);
    assert_eq!(ids(&mut m.overlapping(b"f", b"m")), vec![2]);
    assert_eq!(ids(&mut m.overlapping(b"g", b"")), vec![2, 3]);
    assert_eq!(ids(&mut m.overlapping(b"g", b"h")), vec![2]);
    assert_eq!(
        m.get(2).map(|d| d.start.clone()),
        Some(Bytes::from_static(b"f"))
    );
    assert_eq!(m.remove(2).map(|d| d.id), Some(2));
    assert_eq!(m.get(2), None);
    assert_eq!(m.range_of(b"g"), None);
}

#[test]
fn a_split_replaces_its_parent_and_the_parent_cannot_come_back() {
    let mut m = RangeMap::new();
    m.insert(desc(1, b"", b"", 1, 1)).unwrap();
    // Right side first: it displaces the parent and leaves a gap on the
    // left until that side arrives.
    let out = m.insert(desc(2, b"m", b"", 2, 1)).unwrap();
    assert_eq!(out.iter().map(|d| d.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(m.range_of(b"a"), None);
    // The parent again (a lagging replica's answer): refused.
    let err = m.insert(desc(1, b"", b"", 1, 1)).unwrap_err();
    assert_eq!((err.held, err.held_epoch.version), (2, 2));
    m.insert(desc(1, b"", b"m", 2, 1)).unwrap();
    assert_eq!(m.coverage(), Ok(()));
    // A membership change of one side: same keys, newer conf_ver.
    m.insert(desc(1, b"", b"m", 2, 2)).unwrap();
    let err = m.insert(desc(1, b"", b"m", 2, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "range 1 at v2.c1 is stale: the map holds range 1 at v2.c2 over some of its keys"
    );
    // A merge: the survivor's version is above both.
    let out = m.insert(desc(1, b"", b"", 3, 2)).unwrap();
    assert_eq!(out.iter().map(|d| d.id).collect::<Vec<_>>(), vec![1, 2]);
    assert!(m.insert(desc(2, b"m", b"", 2, 1)).is_err());
    assert_eq!(m.len(), 1);
}

/// A client's requests racing a split (stop 49's CI failure): writers
/// sharing one map send keys above the cut to the parent; the first
/// refusal narrows the parent, the others find the map knew it. Counting
/// those as disagreement, and dropping the narrowed parent, let a lagging
/// replica's pre-split bounds back in, sent the key to the parent again,
/// and failed the write with "the nodes disagree" after four refusals.
#[test]
fn refusals_racing_a_split_are_followed_and_only_disagreement_counts() {
    use crate::route::Refusal;
    let mut m = RangeMap::new();
    m.insert(desc(1, b"", b"", 1, 1)).unwrap();
    let (s, e) = (Bytes::new(), Bytes::from_static(b"m"));
    assert_eq!(m.learn_refusal(1, b"p", &s, &e, 2), Refusal::Narrowed);
    assert_eq!(m.learn_refusal(1, b"q", &s, &e, 2), Refusal::Known);
    assert_eq!(m.learn_refusal(1, b"r", &s, &e, 2), Refusal::Known);
    // A lagging replica's report of the parent's old bounds: refused.
    assert!(m.insert(desc(1, b"", b"", 1, 1)).is_err());
    assert_eq!(m.range_of(b"q"), None);
    let held = m.get(1).unwrap();
    assert_eq!((&held.end[..], held.epoch.version), (&b"m"[..], 2));
    // The right side arrives and takes the keys.
    m.insert(desc(2, b"m", b"", 2, 1)).unwrap();
    assert_eq!(m.range_of(b"q").map(|d| d.id), Some(2));
    // A late refusal of an older version, already known.
    assert_eq!(
        m.learn_refusal(1, b"z", &s, &b"x"[..].into(), 1),
        Refusal::Known
    );
    // A range that refuses a key its descriptor, as new as the answer,
    // holds: the nodes disagree; the descriptor is dropped.
    assert_eq!(
        m.learn_refusal(2, b"q", &e, &b"p"[..].into(), 2),
        Refusal::Disagrees
    );
    assert_eq!(m.get(2), None);
    // Gone and nothing holds the key: still disagreement.
    assert_eq!(
        m.learn_refusal(2, b"q", &e, &b"p"[..].into(), 2),
        Refusal::Disagrees
    );
    // Gone, and another range holds the key now: known.
    m.insert(desc(3, b"m", b"", 3, 1)).unwrap();
    assert_eq!(
        m.learn_refusal(2, b"q", &e, &b"p"[..].into(), 2),
        Refusal::Known
    );
}

/// Issue #18: a split's two descriptors, and what it refuses.
#[test]
fn a_descriptor_splits_at_a_key_strictly_inside_it() {
    let d = desc(4, b"b", b"m", 3, 2);
    let (l, r) = d.split(&Bytes::from_static(b"f"), 9).unwrap();
    assert_eq!((l.id, &l.start[..], &l.end[..]), (4, &b"b"[..], &b"f"[..]));
    assert_eq!((r.id, &r.start[..], &r.end[..]), (9, &b"f"[..], &b"m"[..]));
    for side in [&l, &r] {
        assert_eq!(
            side.epoch,
            Epoch {
                version: 4,
                conf_ver: 2
            }
        );
        assert_eq!(side.replicas, d.replicas);
        assert!(d.epoch.is_stale_against(&side.epoch));
    }
    // The last range splits too (empty end: no upper bound).
    let last = desc(5, b"m", b"", 1, 1);
    let (l, r) = last.split(&Bytes::from_static(b"t"), 6).unwrap();
    assert_eq!(
        (&l.end[..], &r.start[..], &r.end[..]),
        (&b"t"[..], &b"t"[..], &b""[..])
    );
    for key in [&b"b"[..], b"a", b"m", b"z"] {
        let e = d.split(&Bytes::copy_from_slice(key), 9).unwrap_err();
        assert!(matches!(e, RangeError::SplitKey { .. }), "{key:?}: {e}");
    }
    for right in [0, 4] {
        let e = d.split(&Bytes::from_static(b"f"), right).unwrap_err();
        assert_eq!(e, RangeError::SplitId { id: 4, right });
    }
    let long = desc(7, b"", b"", 1, 1);
    let key = Bytes::from(vec![b'k'; RANGE_BOUNDARY_BYTES_MAX + 1]);
    assert!(matches!(
        long.split(&key, 8),
        Err(RangeError::TooLarge {
            limit: "RANGE_BOUNDARY_BYTES_MAX",
            ..
        })
    ));
}

#[test]
fn split_keys_are_the_shortest_separator() {
    assert_eq!(&split_key_between(b"apple", b"banana")[..], b"b");
    assert_eq!(
        &split_key_between(b"key000123", b"key000200")[..],
        b"key0002"
    );
    assert_eq!(&split_key_between(b"ab", b"abc")[..], b"abc");
    assert_eq!(&split_key_between(b"", b"\x00")[..], b"\x00");
}

fn any_role() -> impl Strategy<Value = ReplicaRole> {
    prop_oneof![
        Just(ReplicaRole::Voter),
        Just(ReplicaRole::Learner),
        Just(ReplicaRole::IncomingVoter),
        Just(ReplicaRole::DemotingVoter),
    ]
}

fn any_desc() -> impl Strategy<Value = RangeDesc> {
    (
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..12),
        proptest::collection::vec(any::<u8>(), 0..12),
        any::<(u64, u64)>(),
        proptest::collection::vec((any::<u32>(), any_role()), 1..8),
    )
        .prop_map(|(id, a, b, (version, conf_ver), reps)| {
            let (start, end) = if b.is_empty() || a < b {
                (a, b)
            } else {
                (b, a)
            };
            let (start, end) = if start == end {
                (start, Vec::new())
            } else {
                (start, end)
            };
            let mut replicas: Vec<RangeReplica> = reps
                .into_iter()
                .enumerate()
                .map(|(i, (shard, role))| RangeReplica {
                    replica: i as u64 + 1,
                    node: 100 + i as u64,
                    shard,
                    role,
                })
                .collect();
            replicas[0].role = ReplicaRole::Voter;
            RangeDesc {
                id,
                start: start.into(),
                end: end.into(),
                epoch: Epoch { version, conf_ver },
                replicas,
            }
        })
}

proptest! {
    /// Every valid descriptor survives its codec.
    #[test]
    fn descriptors_roundtrip(d in any_desc()) {
        prop_assert_eq!(d.validate(), Ok(()));
        prop_assert_eq!(roundtrip(&d), Ok(d));
    }

    /// Arbitrary bytes and corrupted encodings never panic the decoder:
    /// they are refused or decode to a descriptor that validates.
    #[test]
    fn decoding_garbage_never_panics(
        d in any_desc(),
        noise in proptest::collection::vec(any::<u8>(), 0..120),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        if let Ok(x) = RangeDesc::decode(&noise) {
            prop_assert_eq!(x.validate(), Ok(()));
        }
        let mut b = d.to_bytes().to_vec();
        let i = at.index(b.len());
        b[i] = byte;
        if let Ok(x) = RangeDesc::decode(&b) {
            prop_assert_eq!(x.validate(), Ok(()));
        }
    }

    /// A split key separates its two keys, and no shorter key could.
    #[test]
    fn split_keys_separate(
        a in proptest::collection::vec(0u8..3, 0..6),
        b in proptest::collection::vec(0u8..3, 0..6),
    ) {
        prop_assume!(a != b);
        let (l, r) = if a < b { (a, b) } else { (b, a) };
        let s = split_key_between(&l, &r);
        prop_assert!(l[..] < s[..] && s[..] <= r[..]);
        // The key one byte shorter is a prefix of `l`, so not above it.
        prop_assert!(s[..s.len() - 1] <= l[..]);
    }

    /// A cache fed every descriptor a range history produced, in any
    /// order, then the current ones in any order, holds exactly the
    /// current map. No insert leaves two ranges on one key (the map's
    /// debug check) or a descriptor the history did not produce, and a
    /// key that stays held from one insert to the next is never held by
    /// an older descriptor after it than before. (A key can regress
    /// through a gap: the cache drops a wider old range for a newer
    /// narrower one, and an even older piece of the key's history may then
    /// fill the gap. PD's and CockroachDB's caches share this; a replica
    /// checks the epoch of each request, so a cache is only a hint.)
    #[test]
    fn a_cache_converges_whatever_the_order(seed in any::<u64>(), steps in 1usize..60) {
        let (truth, history) = range_history(seed, steps);
        prop_assert_eq!(truth.coverage(), Ok(()));
        let mut rng = Rng(seed ^ 0x5eed);
        let mut late = history.clone();
        shuffle(&mut late, &mut rng);
        let mut current: Vec<RangeDesc> = truth.iter().cloned().collect();
        shuffle(&mut current, &mut rng);
        let probes = probe_keys();
        let mut cache = RangeMap::new();
        let mut held: Vec<Option<(RangeId, Epoch)>> = vec![None; probes.len()];
        for d in late.into_iter().chain(current) {
            let offered = d.to_string();
            let _ = cache.insert(d);
            for h in cache.iter() {
                prop_assert!(history.contains(h), "{} was never produced", h);
            }
            for (k, was) in probes.iter().zip(held.iter_mut()) {
                let now = cache.range_of(k).map(|d| (d.id, d.epoch));
                if let (Some((a, ea)), Some((b, eb))) = (*was, now) {
                    let older = if a == b { eb.is_stale_against(&ea) } else { eb.version < ea.version };
                    prop_assert!(
                        !older,
                        "key {:?}: held by r{} at {} before inserting {}, by r{} at {} after (seed {})",
                        k, a, ea, offered, b, eb, seed
                    );
                }
                *was = now;
            }
        }
        let got: Vec<&RangeDesc> = cache.iter().collect();
        let want: Vec<&RangeDesc> = truth.iter().collect();
        prop_assert_eq!(got, want, "seed {}", seed);
    }
}

/// Every key of up to 3 bytes of the histories' alphabet (0-3).
fn probe_keys() -> Vec<Vec<u8>> {
    let mut keys = vec![Vec::new()];
    let mut last = vec![Vec::new()];
    for _ in 0..3 {
        last = last
            .iter()
            .flat_map(|k: &Vec<u8>| (0..4u8).map(move |b| [&k[..], &[b]].concat()))
            .collect();
        keys.extend(last.iter().cloned());
    }
    keys
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// A random history of splits, merges and membership changes from one
/// range over the whole keyspace, with the epoch rules of TiKV (a split
/// gives both sides the parent's version + 1 and the right side a new id;
/// a merge gives the left survivor the larger version + 1; a membership
/// change moves conf_ver). Returns the final map and every descriptor
/// produced, the first and the final ones included.
fn range_history(seed: u64, steps: usize) -> (RangeMap, Vec<RangeDesc>) {
    let mut rng = Rng(seed);
    let mut truth = RangeMap::new();
    let first = desc(1, b"", b"", 1, 1);
    truth.insert(first.clone()).unwrap();
    let mut history = vec![first];
    let mut next_id = 2;
    for _ in 0..steps {
        let all: Vec<RangeDesc> = truth.iter().cloned().collect();
        let i = rng.below(all.len() as u64) as usize;
        let d = all[i].clone();
        let produced = match rng.below(3) {
            0 => {
                let key: Vec<u8> = (0..rng.range(1, 4)).map(|_| rng.below(4) as u8).collect();
                if !d.contains(&key) || key[..] == d.start[..] {
                    continue;
                }
                let (left, right) = d.split(&Bytes::from(key), next_id).expect("key inside");
                next_id += 1;
                vec![left, right]
            }
            1 => {
                let Some(r) = all.get(i + 1) else { continue };
                let mut merged = d.clone();
                merged.end = r.end.clone();
                merged.epoch.version = d.epoch.version.max(r.epoch.version) + 1;
                truth.remove(r.id);
                vec![merged]
            }
            _ => {
                let mut moved = d.clone();
                moved.epoch.conf_ver += 1;
                let n = moved.replicas.len() as u64;
                let k = rng.below(n) as usize;
                moved.replicas[k].replica += 1000;
                moved.replicas[k].node += 10;
                vec![moved]
            }
        };
        for p in produced {
            truth
                .insert(p.clone())
                .expect("the truth only moves forward");
            history.push(p);
        }
    }
    (truth, history)
}
