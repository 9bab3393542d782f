use super::*;

/// An address-book entry for node 4 (peer address 127.0.0.1:7130).
fn member(client_addr: &str) -> Command {
    Command {
        client: 0,
        seq: 0,
        ack: 0,
        op: WriteOp::Member {
            node: 4,
            peer_addr: b("127.0.0.1:7130"),
            client_addr: b(client_addr),
        },
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(client: u64, seq: u64, ack: u64, k: &str, v: &str) -> Command {
    Command {
        client,
        seq,
        ack,
        op: WriteOp::Put {
            key: b(k),
            value: b(v),
        },
    }
}

fn cas(client: u64, seq: u64, k: &str, expect: Option<&str>, value: Option<&str>) -> Command {
    Command {
        client,
        seq,
        ack: seq,
        op: WriteOp::Cas {
            key: b(k),
            expect: expect.map(b),
            value: value.map(b),
        },
    }
}

#[test]
fn commands_round_trip_and_garbage_is_refused() {
    let cmds = vec![
        put(1, 2, 1, "k", "v"),
        put(u64::MAX, 0, 0, "", ""),
        Command {
            client: 3,
            seq: 4,
            ack: 4,
            op: WriteOp::Delete { key: b("gone") },
        },
        cas(5, 6, "c", None, Some("x")),
        cas(5, 6, "c", Some("x"), None),
        cas(5, 6, "c", Some(""), Some("")),
        member("127.0.0.1:7230"),
        op(
            8,
            9,
            WriteOp::Incr {
                key: b("n"),
                by: i64::MIN,
            },
        ),
        op(
            8,
            10,
            WriteOp::Append {
                key: b("s"),
                value: b("tail"),
                max_len: 7,
            },
        ),
        split("m", 7),
    ];
    for c in cmds {
        let e = c.encode();
        assert_eq!(Command::decode(&e), Some(c.clone()));
        for cut in 0..e.len() {
            assert_eq!(Command::decode(&e.slice(..cut)), None, "cut at {cut}");
        }
    }
    assert_eq!(Command::decode(&Bytes::from(vec![9u8; 40])), None);
}

#[test]
fn a_retried_write_is_applied_once_and_answered_the_same() {
    let mut kv = Kv::new(KvLimits::default());
    assert_eq!(kv.apply(1, &put(7, 1, 1, "a", "1")), Ok(Reply::Done));
    assert_eq!(
        kv.apply(2, &cas(7, 2, "a", Some("1"), Some("2"))),
        Ok(Reply::Cas {
            swapped: true,
            current: Some(b("2"))
        })
    );
    // Another client moves the value on; then client 7 retries seq 2.
    kv.apply(3, &put(8, 1, 1, "a", "3")).unwrap();
    assert_eq!(
        kv.apply(4, &cas(7, 2, "a", Some("1"), Some("2"))),
        Ok(Reply::Cas {
            swapped: true,
            current: Some(b("2"))
        }),
        "the remembered outcome, not a second CAS"
    );
    assert_eq!(kv.get(b"a").map(Datum::to_bytes), Some(b("3")));
    assert_eq!(
        kv.known_outcome(7, 2),
        Some(Ok(Reply::Cas {
            swapped: true,
            current: Some(b("2"))
        }))
    );
    assert_eq!(kv.known_outcome(7, 3), None);
    assert_eq!(kv.applied(), 4);
}

#[test]
fn writes_pipelined_out_of_order_each_apply_once() {
    let mut kv = Kv::new(KvLimits::default());
    // seq 2 arrives before seq 1 (retried after a leader change).
    kv.apply(1, &put(1, 2, 1, "b", "2")).unwrap();
    kv.apply(2, &put(1, 1, 1, "a", "1")).unwrap();
    kv.apply(3, &put(1, 2, 1, "b", "again")).unwrap();
    assert_eq!(
        kv.get(b"b").map(Datum::to_bytes),
        Some(b("2")),
        "seq 2 applied once"
    );
    assert_eq!(
        kv.get(b"a").map(Datum::to_bytes),
        Some(b("1")),
        "seq 1 was not taken for a duplicate"
    );
}

#[test]
fn acknowledged_outcomes_are_forgotten_and_their_retries_refused() {
    let mut kv = Kv::new(KvLimits::default());
    kv.apply(1, &put(1, 1, 1, "a", "1")).unwrap();
    kv.apply(2, &put(1, 2, 2, "a", "2")).unwrap(); // acks seq 1
    assert_eq!(
        kv.known_outcome(1, 1),
        Some(Err(ClientError::SessionExpired))
    );
    assert_eq!(
        kv.apply(3, &put(1, 1, 2, "a", "stale")),
        Err(ClientError::SessionExpired)
    );
    assert_eq!(kv.get(b"a").map(Datum::to_bytes), Some(b("2")));
}

#[test]
fn session_results_max_bounds_a_session() {
    let limits = KvLimits {
        session_results_max: 4,
        ..KvLimits::default()
    };
    let mut kv = Kv::new(limits);
    for seq in 1..=6 {
        kv.apply(seq, &put(1, seq, 1, "k", &seq.to_string()))
            .unwrap();
    }
    // Seqs 1 and 2 were pushed out: their retries cannot be deduplicated.
    assert_eq!(
        kv.known_outcome(1, 2),
        Some(Err(ClientError::SessionExpired))
    );
    assert_eq!(kv.known_outcome(1, 3), Some(Ok(Reply::Done)));
    assert_eq!(
        kv.apply(7, &put(1, 1, 1, "k", "x")),
        Err(ClientError::SessionExpired)
    );
}

#[test]
fn sessions_max_and_session_idle_entries_expire_sessions() {
    let limits = KvLimits {
        sessions_max: 3,
        session_idle_entries: 2000,
        ..KvLimits::default()
    };
    let mut kv = Kv::new(limits);
    for c in 1..=4u64 {
        kv.apply(c, &put(c, 1, 1, "k", "v")).unwrap();
    }
    assert_eq!(kv.sessions(), 3, "the least recently used went");
    assert_eq!(kv.known_outcome(1, 1), None);
    assert_eq!(kv.known_outcome(4, 1), Some(Ok(Reply::Done)));
    // Client 4 keeps writing; the others fall idle past 2000 entries.
    let mut i = 5;
    while i <= 3072 {
        kv.apply(i, &put(4, i, i, "k", "v")).unwrap();
        i += 1;
    }
    assert_eq!(kv.sessions(), 1);
}

#[test]
fn snapshots_keep_the_map_and_the_sessions() {
    let mut kv = Kv::new(KvLimits::default());
    kv.apply(1, &put(1, 1, 1, "a", "1")).unwrap();
    kv.apply(2, &cas(2, 5, "b", None, Some("x"))).unwrap();
    kv.apply(3, &cas(2, 6, "b", Some("nope"), None)).unwrap();
    kv.skip(4);
    kv.apply(5, &member("127.0.0.1:7230")).unwrap();
    assert_eq!(
        kv.members().get(&4).map(String::as_str),
        Some("127.0.0.1:7130")
    );
    let snap = kv.snapshot();
    let back = Kv::restore(&snap, KvLimits::default()).unwrap();
    assert_eq!(back, kv);
    assert_eq!(
        back.known_outcome(2, 6),
        Some(Ok(Reply::Cas {
            swapped: false,
            current: Some(b("x"))
        }))
    );
    for cut in 0..snap.len() {
        assert!(Kv::restore(&snap[..cut], KvLimits::default()).is_err());
    }
}

/// Address-book entries and snapshots written before client addresses
/// existed still read (flags 0 / snapshot version 1), with no client
/// address; the new forms carry it.
#[test]
fn address_book_entries_and_snapshots_of_the_first_format_still_read() {
    // The first format: flags 0 and no client field.
    let new = member("127.0.0.1:7230").encode();
    assert_eq!(new[2], 1, "flags bit 0: a client address follows");
    let mut old = new[..new.len() - 4 - "127.0.0.1:7230".len()].to_vec();
    old[2] = 0;
    assert_eq!(Command::decode(&Bytes::from(old)), Some(member("")));
    let mut kv = Kv::new(KvLimits::default());
    kv.apply(1, &member("127.0.0.1:7230")).unwrap();
    assert_eq!(
        kv.client_addrs().get(&4).map(String::as_str),
        Some("127.0.0.1:7230")
    );
    // Forgetting a node forgets both of its addresses.
    let mut forget = member("");
    if let WriteOp::Member { peer_addr, .. } = &mut forget.op {
        *peer_addr = Bytes::new();
    }
    let mut gone = kv.clone();
    gone.apply(2, &forget).unwrap();
    assert!(gone.members().is_empty() && gone.client_addrs().is_empty());
    // Versions 3 (no meta section), 2 (no key bounds) and 1 (no client
    // section either) still read, the last two as holding the whole
    // keyspace with bounds not known.
    let mut plain = Kv::new(KvLimits::default());
    plain.apply(1, &member("")).unwrap();
    let v4 = plain.snapshot();
    let mut v3 = v4[..v4.len() - 16].to_vec();
    v3[8..12].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(Kv::restore(&v3, KvLimits::default()).unwrap(), plain);
    let mut v2 = v3[..v3.len() - 24].to_vec();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(Kv::restore(&v2, KvLimits::default()).unwrap(), plain);
    let mut v1 = v2[..v2.len() - 8].to_vec();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(Kv::restore(&v1, KvLimits::default()).unwrap(), plain);
    let mut v5 = v4.to_vec();
    v5[8..12].copy_from_slice(&5u32.to_le_bytes());
    assert!(Kv::restore(&v5, KvLimits::default()).is_err());
}

fn meta_cmd(cmd: &crate::meta::MetaCmd) -> Command {
    Command {
        client: 0,
        seq: 0,
        ack: 0,
        op: WriteOp::Meta { cmd: cmd.encode() },
    }
}

/// The meta group's state machine: `WriteOp::Meta` applies a meta command
/// to the cluster map the state holds and answers its reply (or its
/// refusal's text, `ok: false`); the map is in the snapshot, and a state
/// that never applied one holds none.
#[test]
fn meta_commands_apply_to_the_cluster_map_and_it_is_in_snapshots() {
    use crate::meta::{ClusterSettings, MetaCmd, MetaReply, NodeRecord, NodeState};
    let boot = MetaCmd::Bootstrap {
        settings: ClusterSettings {
            replication_factor: 3,
            shards: 2,
            key_bytes_max: 4096,
            value_bytes_max: 1 << 20,
        },
        nodes: vec![NodeRecord {
            id: 1,
            peer_addr: "127.0.0.1:7000".into(),
            client_addr: String::new(),
            shards: 2,
            state: NodeState::Active,
        }],
        ranges: Vec::new(),
    };
    let c = meta_cmd(&boot);
    assert_eq!(Command::decode(&c.encode()), Some(c.clone()));
    let mut kv = Kv::new(KvLimits::default());
    assert!(kv.meta().is_none());
    let before = kv.snapshot();
    assert!(Kv::restore(&before, KvLimits::default())
        .unwrap()
        .meta()
        .is_none());
    let done = kv.apply(1, &c).unwrap();
    assert_eq!(
        done,
        Reply::Meta {
            ok: true,
            body: MetaReply::Done.encode()
        }
    );
    let register = MetaCmd::RegisterNode {
        node: 0,
        peer_addr: "127.0.0.1:7010".into(),
        client_addr: "127.0.0.1:8010".into(),
        shards: 2,
    };
    match kv.apply(2, &meta_cmd(&register)).unwrap() {
        Reply::Meta { ok: true, body } => {
            assert_eq!(MetaReply::decode(&body), Ok(MetaReply::Node(2)))
        }
        r => panic!("{r:?}"),
    }
    // A refusal is an answer, applied alike everywhere.
    let wrong = MetaCmd::RegisterNode {
        node: 0,
        peer_addr: String::new(),
        client_addr: String::new(),
        shards: 3,
    };
    match kv.apply(3, &meta_cmd(&wrong)).unwrap() {
        Reply::Meta { ok: false, body } => {
            assert!(String::from_utf8_lossy(&body).contains("--shards 2"))
        }
        r => panic!("{r:?}"),
    }
    // Bytes that are no meta command: refused, not a panic.
    let garbage = Command {
        op: WriteOp::Meta { cmd: b("xyz") },
        ..meta_cmd(&boot)
    };
    assert!(matches!(
        kv.apply(4, &garbage).unwrap(),
        Reply::Meta { ok: false, .. }
    ));
    let back = Kv::restore(&kv.snapshot(), KvLimits::default()).unwrap();
    assert_eq!(back, kv);
    assert_eq!(back.meta().unwrap().nodes().count(), 2);
}

fn bounded(start: &str, end: &str) -> Kv {
    let mut kv = Kv::new(KvLimits::default());
    kv.set_bounds(KeyBounds {
        start: b(start),
        end: b(end),
        version: 4,
        known: true,
        from_log: false,
    });
    kv
}

#[test]
fn key_bounds_survive_snapshots() {
    let mut kv = bounded("b", "d");
    kv.apply(1, &put(1, 1, 1, "b", "1")).unwrap();
    assert_eq!(
        kv.not_in_range(b"e").to_string(),
        "key \"e\" is not in the group's keys [\"b\", \"d\") (version 4): refresh the range map"
    );
    let back = Kv::restore(&kv.snapshot(), KvLimits::default()).unwrap();
    assert_eq!(back, kv);
    assert_eq!((back.bounds().version, back.bounds().known), (4, true));
    let fresh = Kv::new(KvLimits::default());
    let back = Kv::restore(&fresh.snapshot(), KvLimits::default()).unwrap();
    assert!(!back.bounds().known, "not known stays not known");
    // Bounds out of order in a snapshot are refused.
    let mut bad = bounded("b", "d").snapshot().to_vec();
    let n = bad.len();
    bad[n - 1] = b'a';
    bad[n - 2] = b'z';
    assert!(Kv::restore(&bad, KvLimits::default()).is_err());
}

#[test]
fn bounds_clamp_a_scan() {
    let k = bounded("b", "d");
    assert_eq!(k.bounds().clamp(b"a", b""), Some((&b"b"[..], &b"d"[..])));
    assert_eq!(k.bounds().clamp(b"c", b"cc"), Some((&b"c"[..], &b"cc"[..])));
    assert_eq!(k.bounds().clamp(b"c", b"z"), Some((&b"c"[..], &b"d"[..])));
    assert_eq!(k.bounds().clamp(b"d", b""), None);
    assert_eq!(k.bounds().clamp(b"a", b"b"), None);
    let open = bounded("b", "");
    assert_eq!(open.bounds().clamp(b"c", b""), Some((&b"c"[..], &b""[..])));
    assert_eq!(
        open.bounds().clamp(b"a", b"c"),
        Some((&b"b"[..], &b"c"[..]))
    );
}

#[test]
fn scans_are_bounded_and_ordered() {
    let mut kv = Kv::new(KvLimits::default());
    for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
        kv.apply(i as u64 + 1, &put(1, i as u64 + 1, 1, k, k))
            .unwrap();
    }
    let (pairs, more) = kv.scan(b"b", b"", 2);
    assert_eq!(pairs, vec![(b("b"), b("b")), (b("c"), b("c"))]);
    assert!(more);
    let (pairs, more) = kv.scan(b"b", b"d", 10);
    assert_eq!(pairs.len(), 2);
    assert!(!more);
}

fn op(client: u64, seq: u64, op: WriteOp) -> Command {
    Command {
        client,
        seq,
        ack: seq,
        op,
    }
}

fn incr(seq: u64, k: &str, by: i64) -> Command {
    op(9, seq, WriteOp::Incr { key: b(k), by })
}

/// Redis's `INCRBY` and `APPEND` as one entry each (issue #20: no
/// client-side read-modify-write loop): the sum or the refusal, decided
/// alike on every replica, and a retry answered from the session.
#[test]
fn increments_and_appends_are_one_entry_each_with_redis_rules() {
    let mut kv = Kv::new(KvLimits::default());
    let mut index = 0;
    let mut apply = |kv: &mut Kv, c: Command| {
        index += 1;
        kv.apply(index, &c)
    };
    let done = |v: &str| {
        Ok(Reply::Cas {
            swapped: true,
            current: Some(b(v)),
        })
    };
    let refused = |v: Option<&str>| {
        Ok(Reply::Cas {
            swapped: false,
            current: v.map(b),
        })
    };
    assert_eq!(
        apply(&mut kv, incr(1, "n", 5)),
        done("5"),
        "absent counts as 0"
    );
    assert_eq!(apply(&mut kv, incr(2, "n", -7)), done("-2"));
    // A retry of seq 2 is answered from the session, not added again.
    assert_eq!(apply(&mut kv, incr(2, "n", -7)), done("-2"));
    assert_eq!(kv.get(b"n").map(Datum::to_bytes), Some(b("-2")));
    // Not integers as Redis reads them: left as they are.
    let mut seq = 10;
    for v in [
        "x",
        "",
        " 1",
        "+1",
        "01",
        "-0",
        "1.5",
        "99999999999999999999",
    ] {
        apply(&mut kv, put(9, seq, seq, "s", v)).unwrap();
        assert_eq!(
            apply(&mut kv, incr(seq + 1, "s", 1)),
            refused(None),
            "{v:?}"
        );
        assert_eq!(kv.get(b"s").map(Datum::to_bytes), Some(b(v)));
        seq += 2;
    }
    // Overflow in both directions.
    let max = i64::MAX.to_string();
    apply(&mut kv, put(9, 40, 40, "big", &max)).unwrap();
    assert_eq!(apply(&mut kv, incr(41, "big", 1)), refused(Some(&max)));
    assert_eq!(apply(&mut kv, incr(42, "big", i64::MIN)), done("-1"));
    // Append: onto nothing, onto a value, and not past max_len; answered
    // with the length, not the value.
    let app = |seq, v: &str| {
        let value = b(v);
        op(
            9,
            seq,
            WriteOp::Append {
                key: b("a"),
                value,
                max_len: 4,
            },
        )
    };
    assert_eq!(apply(&mut kv, app(50, "ab")), done("2"));
    assert_eq!(apply(&mut kv, app(51, "cd")), done("4"));
    assert_eq!(apply(&mut kv, app(52, "e")), refused(None));
    assert_eq!(kv.get(b"a").map(Datum::to_bytes), Some(b("abcd")));
}

/// A snapshot view (`Kv::clone`, what the shard encodes on its helper
/// thread) is the state at its applied index, whatever is applied after
/// it: the bytes it encodes to carry that index and those pairs and
/// sessions only, and equal the bytes the state gave at that index. The
/// persistent map shares its nodes with the live one until either
/// changes (issue #21).
#[test]
fn a_snapshot_view_is_the_state_at_its_index_whatever_is_applied_after() {
    let mut kv = Kv::new(KvLimits::default());
    for i in 1..=2000u64 {
        let c = put(7, i, i, &format!("k{i:05}"), &format!("v{i}"));
        kv.apply(i, &c).unwrap();
    }
    let at = kv.snapshot();
    let view = kv.clone();
    // Overwrites, deletes, new keys, a new session, after the view.
    for i in 2001..=4000u64 {
        let k = format!("k{:05}", i % 2500);
        let c = if i % 3 == 0 {
            op(9, i, WriteOp::Delete { key: b(&k) })
        } else {
            put(8, i, i, &k, "later")
        };
        kv.apply(i, &c).unwrap();
    }
    assert_eq!(view.applied(), 2000);
    assert_eq!(view.snapshot(), at, "the view changed with the live state");
    let back = Kv::restore(&at, KvLimits::default()).unwrap();
    assert_eq!(back.applied(), 2000);
    assert_eq!(back.len(), 2000);
    assert_eq!(back.sessions(), 1);
    assert_eq!(back.get(b"k00003").map(|v| &v[..]), Some(&b"v3"[..]));
    assert_ne!(kv.snapshot(), at);
}

/// `data_bytes` counts the keys and values the map holds, through
/// inserts, overwrites (longer and shorter), appends, increments, swaps
/// and deletes, and is restored from a snapshot.
#[test]
fn data_bytes_counts_keys_and_values() {
    let mut kv = Kv::new(KvLimits::default());
    let recount = |kv: &Kv| -> u64 {
        let (pairs, _) = kv.scan(b"", b"", usize::MAX);
        pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    };
    let ops = [
        put(1, 1, 1, "a", "12345"),
        put(1, 2, 2, "a", "1"),
        put(1, 3, 3, "bb", "xyz"),
        incr(4, "n", 12),
        incr(5, "n", 1000),
        op(
            1,
            6,
            WriteOp::Append {
                key: b("bb"),
                value: b("tail"),
                max_len: 100,
            },
        ),
        cas(1, 7, "a", Some("1"), Some("longer value")),
        cas(1, 8, "bb", Some("xyztail"), None),
        op(1, 9, WriteOp::Delete { key: b("n") }),
        op(1, 10, WriteOp::Delete { key: b("absent") }),
    ];
    for (i, c) in ops.iter().enumerate() {
        kv.apply(i as u64 + 1, c).unwrap();
        assert_eq!(kv.data_bytes(), recount(&kv), "after {c:?}");
    }
    assert_eq!(kv.data_bytes(), 1 + 12);
    let back = Kv::restore(&kv.snapshot(), KvLimits::default()).unwrap();
    assert_eq!(back.data_bytes(), kv.data_bytes());
}

/// A split of a range `[a, z)` at version 4 (`bounded`).
fn split(key: &str, right: u64) -> Command {
    split_of(key, right, ("a", "z", 4))
}

/// A split at `key` proposed by a leader whose bounds were `(start, end,
/// version)`.
fn split_of(key: &str, right: u64, (start, end, version): (&str, &str, u64)) -> Command {
    op(
        0,
        0,
        WriteOp::Split {
            key: b(key),
            right,
            start: b(start),
            end: b(end),
            version,
        },
    )
}

/// `bounded("a", "z")` with `keys` put by client 1 at seqs 1.., applied
/// from index 1.
fn filled(keys: &[&str]) -> Kv {
    let mut kv = bounded("a", "z");
    for (i, k) in keys.iter().enumerate() {
        let seq = i as u64 + 1;
        kv.apply(seq, &put(1, seq, 1, k, &format!("v{k}"))).unwrap();
    }
    kv
}

fn keys_in_snapshot(kv: &Kv) -> Vec<Bytes> {
    let back = Kv::restore(&kv.snapshot(), KvLimits::default()).unwrap();
    back.scan(b"", b"", usize::MAX)
        .0
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Issue #18: a split entry leaves this range the keys below the split
/// key and hands the applier a new range with the rest, both at the
/// parent's version + 1, the new one at the split's index, both with the
/// client sessions. Reads, snapshots and the digest of each side see only
/// its own keys although the map is shared until trimmed.
#[test]
fn a_split_gives_each_side_its_keys_and_both_the_sessions() {
    let keys = ["b", "f", "l", "m", "q", "y"];
    let mut left = filled(&keys);
    let n = keys.len() as u64;
    assert_eq!(left.apply(n + 1, &split("m", 7)), Ok(Reply::Done));
    let SplitOff {
        right: id,
        kv: mut right,
    } = left.take_split().expect("a split made one");
    assert_eq!(id, 7);
    assert!(left.take_split().is_none(), "taken once");
    assert_eq!(
        (left.bounds().start.clone(), left.bounds().end.clone()),
        (b("a"), b("m"))
    );
    assert_eq!(
        (right.bounds().start.clone(), right.bounds().end.clone()),
        (b("m"), b("z"))
    );
    assert_eq!((left.bounds().version, right.bounds().version), (5, 5));
    assert!(right.bounds().known);
    assert_eq!((left.applied(), right.applied()), (n + 1, n + 1));
    assert_eq!(keys_in_snapshot(&left), vec![b("b"), b("f"), b("l")]);
    assert_eq!(keys_in_snapshot(&right), vec![b("m"), b("q"), b("y")]);
    assert_ne!(left.digest(), right.digest());
    // A write of "q" answered before the split, retried at the new range,
    // is answered from the copied session and not applied again.
    let q_seq = 5;
    right.apply(n + 2, &put(1, 9, 1, "q", "after")).unwrap();
    assert_eq!(
        right.apply(n + 3, &put(1, q_seq, 1, "q", "v-retry")),
        Ok(Reply::Done)
    );
    assert_eq!(
        right.get(b"q").map(Datum::to_bytes),
        Some(b("after")),
        "the retry changed nothing"
    );
    assert_eq!(left.known_outcome(1, q_seq), Some(Ok(Reply::Done)));
    // A write of "q" that reaches the left side's log after the split (it
    // was admitted before) is refused there, untouched, and applies once
    // at the new range.
    let refused = left.apply(n + 2, &put(1, 10, 1, "q", "late"));
    assert!(
        matches!(refused, Err(ClientError::KeyNotInRange { .. })),
        "{refused:?}"
    );
    assert_eq!(left.known_outcome(1, 10), None, "no outcome recorded");
    assert_eq!(
        right.apply(n + 4, &put(1, 10, 1, "q", "late")),
        Ok(Reply::Done)
    );
    assert_eq!(right.get(b"q").map(Datum::to_bytes), Some(b("late")));
    // Both sides restore to themselves.
    for kv in [&left, &right] {
        let back = Kv::restore(&kv.snapshot(), KvLimits::default()).unwrap();
        assert_eq!(back.digest(), kv.digest());
        assert_eq!(back.bounds(), kv.bounds());
    }
}

/// Splits refused on every replica alike, nothing changed.
#[test]
fn a_split_outside_its_range_or_by_a_client_is_refused() {
    let bad_cases: Vec<(Kv, Command, &str)> = vec![
        (filled(&["b"]), split("a", 7), "strictly inside"),
        (filled(&["b"]), split("0", 7), "strictly inside"),
        (filled(&["b"]), split("z", 7), "strictly inside"),
        (filled(&["b"]), split("zz", 7), "strictly inside"),
        (filled(&["b"]), split("m", 0), "range 0"),
        (
            filled(&["b"]),
            op(
                3,
                1,
                WriteOp::Split {
                    key: b("m"),
                    right: 7,
                    start: b("a"),
                    end: b("z"),
                    version: 4,
                },
            ),
            "client 0",
        ),
        (
            filled(&["b"]),
            split(&"m".repeat(crate::meta::RANGE_BOUNDARY_BYTES_MAX + 1), 7),
            "RANGE_BOUNDARY_BYTES_MAX",
        ),
    ];
    for (mut kv, cmd, why) in bad_cases {
        let before = kv.clone();
        let at = kv.applied() + 1;
        match kv.apply(at, &cmd) {
            Err(ClientError::BadRequest { reason }) => {
                assert!(reason.contains(why), "{reason:?} does not say {why:?}")
            }
            other => panic!("{cmd:?}: {other:?}"),
        }
        assert!(kv.take_split().is_none());
        assert_eq!(kv.bounds(), before.bounds());
        assert_eq!(kv.digest(), before.digest());
    }
    let mut meta = Kv::new(KvLimits::default());
    // Any meta command makes this the meta group's state machine.
    let register = crate::meta::MetaCmd::RegisterNode {
        node: 0,
        peer_addr: "127.0.0.1:7000".into(),
        client_addr: String::new(),
        shards: 1,
    };
    meta.apply(1, &meta_cmd(&register)).unwrap();
    assert!(meta.meta().is_some());
    meta.set_bounds(bounded("a", "z").bounds().clone());
    let r = meta.apply(2, &split("m", 7));
    assert!(
        matches!(&r, Err(ClientError::BadRequest { reason }) if reason.contains("meta group")),
        "{r:?}"
    );
}

/// Only bounds a split set hide keys and refuse writes at apply: bounds
/// from a descriptor are a node's own (its bootstrap cuts), and replicas
/// whose nodes disagree must apply the same writes. A group whose bounds
/// are not known (it predates ranges: the whole keyspace on every
/// replica) splits like one that knows them.
#[test]
fn only_bounds_a_split_set_hide_keys_or_refuse_writes() {
    let mut own = bounded("a", "m");
    own.apply(
        1,
        &put(1, 1, 1, "x", "admitted by a leader with other cuts"),
    )
    .unwrap();
    assert_eq!(own.get(b"x").map(|v| v.len()), Some(36));
    assert!(!own.has_keys_outside_bounds());
    assert_eq!(own.trim_outside_bounds(10), 0);
    assert_eq!(keys_in_snapshot(&own), vec![b("x")], "in the snapshot too");
    // A split adopts the bounds its leader proposed it with: a replica
    // whose own (descriptor) bounds differ ends with the same ones.
    let mut other_cuts = bounded("c", "x");
    other_cuts.apply(1, &split("m", 7)).unwrap();
    let right = other_cuts.take_split().unwrap().kv;
    assert_eq!(other_cuts.bounds(), filled_split_left().bounds());
    assert_eq!(
        (&right.bounds().start[..], &right.bounds().end[..]),
        (&b"m"[..], &b"z"[..])
    );
    // Once a split set them (replicated), a split proposed for other
    // bounds is stale: refused on every replica alike.
    let stale = split_of("d", 8, ("a", "z", 4));
    match other_cuts.apply(2, &stale) {
        Err(ClientError::BadRequest { reason }) => {
            assert!(reason.contains("changed since"), "{reason}")
        }
        r => panic!("a stale split: {r:?}"),
    }
    assert!(other_cuts.take_split().is_none());
    let mut unknown = Kv::new(KvLimits::default());
    let mut known = Kv::new(KvLimits::default());
    known.set_bounds(KeyBounds {
        known: true,
        ..KeyBounds::default()
    });
    for kv in [&mut unknown, &mut known] {
        kv.apply(1, &put(1, 1, 1, "b", "1")).unwrap();
        kv.apply(2, &put(1, 2, 1, "q", "2")).unwrap();
        assert_eq!(kv.apply(3, &split_of("m", 7, ("", "", 0))), Ok(Reply::Done));
        let right = kv.take_split().unwrap().kv;
        assert!(kv.bounds().from_log && right.bounds().from_log);
        assert_eq!(keys_in_snapshot(kv), vec![b("b")]);
        assert_eq!(keys_in_snapshot(&right), vec![b("q")]);
    }
    assert_eq!(unknown.digest(), known.digest());
    assert_eq!(unknown.snapshot().len(), known.snapshot().len());
}

#[test]
#[should_panic(expected = "the new side of a split is taken")]
fn an_entry_after_a_split_whose_new_side_was_not_taken_panics() {
    let mut kv = filled(&["b", "q"]);
    kv.apply(3, &split("m", 7)).unwrap();
    let _ = kv.apply(4, &put(1, 3, 1, "c", "x"));
}

/// The keys a split left outside each side go a bounded number at a time,
/// changing nothing either side shows: digest and snapshot bytes are the
/// same before and after, and `data_bytes` ends at the side's own bytes.
#[test]
fn keys_outside_the_bounds_are_trimmed_a_bounded_number_at_a_time() {
    let keys: Vec<String> = (0..50).map(|i| format!("k{i:03}")).collect();
    let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let mut left = filled(&refs);
    left.apply(51, &split("k020", 7)).unwrap();
    let mut right = left.take_split().unwrap().kv;
    for (kv, own) in [(&mut left, 20u64), (&mut right, 30)] {
        let (digest, snap) = (kv.digest(), kv.snapshot());
        assert!(kv.has_keys_outside_bounds());
        let mut trimmed = Vec::new();
        loop {
            let n = kv.trim_outside_bounds(7);
            assert!(n <= 7, "at most max per call");
            if n == 0 {
                break;
            }
            trimmed.push(n);
        }
        assert_eq!(trimmed.iter().sum::<usize>() as u64, 50 - own);
        assert!(!kv.has_keys_outside_bounds());
        assert_eq!(kv.len() as u64, own);
        assert_eq!(kv.data_bytes(), own * (4 + 5), "key k### and value vk###");
        assert_eq!((kv.digest(), kv.snapshot()), (digest, snap));
    }
}

/// A snapshot whose pairs fall outside its own bounds is damaged.
#[test]
fn a_snapshot_with_a_key_outside_its_bounds_is_refused() {
    let mut kv = Kv::new(KvLimits::default());
    kv.set_bounds(KeyBounds {
        start: b("a"),
        end: Bytes::new(),
        version: 1,
        known: true,
        from_log: true,
    });
    kv.apply(1, &put(1, 1, 1, "b", "1")).unwrap();
    let mut snap = kv.snapshot().to_vec();
    // ... | start "a" | end "" | has_meta u32 | pad u32 | meta_len u64
    let at = snap.len() - 17;
    assert_eq!(snap[at], b'a');
    snap[at] = b'c';
    let e = Kv::restore(&snap, KvLimits::default()).unwrap_err();
    assert!(e.to_string().contains("outside the key bounds"), "{e}");
}

/// `range-split-bytes` (issue #18): the split key halves a range's bytes,
/// counts only the keys inside its bounds, stays short whatever the keys'
/// length, and is strictly inside the range when there is a key to split
/// off; none for fewer than two keys.
#[test]
fn the_split_key_by_bytes_halves_the_bytes_inside_the_bounds() {
    assert_eq!(filled(&[]).split_key_by_bytes(), None);
    assert_eq!(filled(&["c"]).split_key_by_bytes(), None);
    // Ten pairs of 3 bytes ("k", "vk"): five below.
    let ten = ["b", "c", "d", "e", "f", "g", "h", "i", "j", "k"];
    assert_eq!(filled(&ten).split_key_by_bytes(), Some(b("g")));
    // The separator is the shortest key between the halves.
    let long = ["user/00001", "user/00002", "user/00099", "user/01000"];
    assert_eq!(filled(&long).split_key_by_bytes(), Some(b("user/0009")));
    // One heavy pair: it goes alone to whichever side it needs.
    let mut heavy = filled(&["c", "d", "e"]);
    heavy
        .apply(4, &put(1, 4, 1, "b", &"x".repeat(1000)))
        .unwrap();
    assert_eq!(heavy.split_key_by_bytes(), Some(b("c")));
    let mut heavy = filled(&["b", "c", "d"]);
    heavy
        .apply(4, &put(1, 4, 1, "e", &"x".repeat(1000)))
        .unwrap();
    assert_eq!(heavy.split_key_by_bytes(), Some(b("e")));
    // After a split, the keys the other side took do not count.
    let mut left = filled(&ten);
    left.apply(11, &split("d", 9)).unwrap();
    let right = left.take_split().unwrap().kv;
    assert_eq!(left.split_key_by_bytes(), Some(b("c")));
    assert_eq!(right.split_key_by_bytes(), Some(b("h")));
}

/// `bounded("a", "z")` split at "m" (its left side).
fn filled_split_left() -> Kv {
    let mut kv = bounded("a", "z");
    kv.apply(1, &split("m", 7)).unwrap();
    kv.take_split().unwrap();
    kv
}

// A session's outcomes, against a BTreeMap as the model: any mix of
// inserts in and out of seq order (retries), replacements, forgetting
// below an ack and popping the oldest keeps the same seqs in order and
// the same answers.
proptest::proptest! {
    #[test]
    fn a_sessions_outcomes_behave_as_an_ordered_map(
        ops in proptest::collection::vec((0u8..4, 0u64..64, proptest::bool::ANY), 0..200)
    ) {
        let mut got = Outcomes::default();
        let mut model: BTreeMap<u64, Reply> = BTreeMap::new();
        for (op, seq, swapped) in ops {
            let reply = Reply::Cas { swapped, current: None };
            match op {
                0 | 1 => {
                    got.insert(seq, reply.clone());
                    model.insert(seq, reply);
                }
                2 => {
                    got.forget_below(seq);
                    model.retain(|s, _| *s >= seq);
                }
                _ => {
                    let want = model.pop_first().map(|(s, _)| s);
                    proptest::prop_assert_eq!(got.pop_oldest(), want);
                }
            }
            proptest::prop_assert_eq!(got.len(), model.len());
            proptest::prop_assert_eq!(got.get(seq), model.get(&seq));
            let pairs: Vec<(u64, Reply)> = got.iter().cloned().collect();
            let want: Vec<(u64, Reply)> = model.iter().map(|(s, r)| (*s, r.clone())).collect();
            proptest::prop_assert_eq!(pairs, want);
        }
    }
}

#[test]
fn a_snapshot_whose_session_outcomes_are_out_of_order_is_refused() {
    let mut kv = Kv::default();
    kv.apply(1, &put(7, 1, 0, "a", "1")).unwrap();
    kv.apply(2, &put(7, 2, 0, "b", "2")).unwrap();
    let mut snap = kv.snapshot().to_vec();
    assert_eq!(Kv::restore(&snap, KvLimits::default()).unwrap(), kv);
    // Header 32 bytes, two pairs of 10, the session count, then client
    // 7's client, floor and last index, its 2 outcomes and a pad; then
    // its outcomes, 16 bytes each for `Done`: seq 1 at 92, seq 2 at 108.
    assert_eq!(snap[60..68], 7u64.to_le_bytes());
    assert_eq!(snap[84..88], 2u32.to_le_bytes());
    assert_eq!(snap[92..100], 1u64.to_le_bytes());
    assert_eq!(snap[108..116], 2u64.to_le_bytes());
    snap[92..100].copy_from_slice(&2u64.to_le_bytes());
    snap[108..116].copy_from_slice(&1u64.to_le_bytes());
    let e = Kv::restore(&snap, KvLimits::default()).unwrap_err();
    assert_eq!(e, SnapshotError("session outcomes out of order"));
    // The same seq twice.
    snap[108..116].copy_from_slice(&2u64.to_le_bytes());
    let e = Kv::restore(&snap, KvLimits::default()).unwrap_err();
    assert_eq!(e, SnapshotError("session outcomes out of order"));
}
