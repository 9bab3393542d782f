//! The meta state machine: each command's rule, each limit, the codecs
//! (round trip, damage is an error, never a panic), and determinism
//! (replicas applying one log, one of them restored from a snapshot on
//! the way, end byte-for-byte equal).

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn settings() -> ClusterSettings {
    ClusterSettings {
        replication_factor: 3,
        shards: 2,
        key_bytes_max: 4096,
        value_bytes_max: 1 << 20,
    }
}

fn node(id: u64) -> NodeRecord {
    NodeRecord {
        id,
        peer_addr: format!("127.0.0.1:{}", 7000 + id),
        client_addr: format!("127.0.0.1:{}", 8000 + id),
        shards: 2,
        state: NodeState::Active,
    }
}

/// Range `id` over `[start, end)` at `version`, on `nodes` (replica id =
/// 10 * id + node).
fn range(id: u64, start: &str, end: &str, version: u64, nodes: &[u64]) -> RangeDesc {
    RangeDesc {
        id,
        start: Bytes::from(start.to_string()),
        end: Bytes::from(end.to_string()),
        epoch: Epoch {
            version,
            conf_ver: 1,
        },
        replicas: nodes
            .iter()
            .map(|&n| RangeReplica {
                replica: 10 * id + n,
                node: n,
                shard: 0,
                role: ReplicaRole::Voter,
            })
            .collect(),
    }
}

/// Three founders, ranges 1 `[.., m)` and 2 `[m, ..)` on all three.
fn founded() -> MetaState {
    let mut m = MetaState::new();
    let cmd = MetaCmd::Bootstrap {
        settings: settings(),
        nodes: (1..=3).map(node).collect(),
        ranges: vec![
            range(1, "", "m", 1, &[1, 2, 3]),
            range(2, "m", "", 1, &[1, 2, 3]),
        ],
    };
    assert_eq!(m.apply(&cmd), Ok(MetaReply::Done));
    m
}

fn register(node: u64) -> MetaCmd {
    register_with(node, 2, "10.0.0.9:7000")
}

fn register_with(node: u64, shards: u32, peer_addr: &str) -> MetaCmd {
    MetaCmd::RegisterNode {
        node,
        peer_addr: peer_addr.into(),
        client_addr: "10.0.0.9:8000".into(),
        shards,
    }
}

#[test]
fn nothing_but_a_bootstrap_applies_before_one_and_the_first_bootstrap_wins() {
    let mut m = MetaState::new();
    assert_eq!(m.apply(&register(0)), Err(MetaError::NotBootstrapped));
    let mut m2 = founded();
    assert_eq!(m2.next_ids(), (4, 3, 24), "counters past every founding id");
    assert_eq!(m2.ranges().coverage(), Ok(()));
    // Another founder's bootstrap: same settings, nothing changes.
    let again = MetaCmd::Bootstrap {
        settings: settings(),
        nodes: vec![node(1)],
        ranges: vec![range(7, "", "", 1, &[1])],
    };
    assert_eq!(m2.apply(&again), Ok(MetaReply::Done));
    assert_eq!(m2.ranges().len(), 2);
    let other = MetaCmd::Bootstrap {
        settings: ClusterSettings {
            replication_factor: 5,
            ..settings()
        },
        nodes: vec![node(1)],
        ranges: vec![range(7, "", "", 1, &[1])],
    };
    assert_eq!(m2.apply(&other), Err(MetaError::AlreadyBootstrapped));
    // A bootstrap that leaves keys without a range, or whose ranges
    // overlap, is refused and leaves the map empty.
    for ranges in [
        vec![range(1, "", "m", 1, &[1])],
        vec![range(1, "", "n", 1, &[1]), range(2, "m", "", 1, &[1])],
    ] {
        let cmd = MetaCmd::Bootstrap {
            settings: settings(),
            nodes: vec![node(1)],
            ranges,
        };
        assert!(matches!(
            m.apply(&cmd),
            Err(MetaError::Range(_) | MetaError::Gap { .. })
        ));
        assert!(m.settings().is_none());
    }
    let bad_rf = MetaCmd::Bootstrap {
        settings: ClusterSettings {
            replication_factor: 0,
            ..settings()
        },
        nodes: vec![node(1)],
        ranges: vec![range(1, "", "", 1, &[1])],
    };
    assert!(matches!(
        m.apply(&bad_rf),
        Err(MetaError::OutOfRange { .. })
    ));
}

#[test]
fn nodes_get_new_ids_never_reused_and_keep_them_across_new_addresses() {
    let mut m = founded();
    assert_eq!(m.apply(&register(0)), Ok(MetaReply::Node(4)));
    assert_eq!(m.apply(&register(0)), Ok(MetaReply::Node(5)));
    // Node 4 again, from elsewhere: same id, new addresses.
    let moved = MetaCmd::RegisterNode {
        node: 4,
        peer_addr: "10.0.0.4:7000".into(),
        client_addr: String::new(),
        shards: 2,
    };
    assert_eq!(m.apply(&moved), Ok(MetaReply::Node(4)));
    assert_eq!(m.node(4).unwrap().peer_addr, "10.0.0.4:7000");
    // A node given its id by an operator: the counter moves past it.
    assert_eq!(m.apply(&register(40)), Ok(MetaReply::Node(40)));
    assert_eq!(m.apply(&register(0)), Ok(MetaReply::Node(41)));
    let wrong_shards = register_with(0, 3, "10.0.0.9:7000");
    let e = m.apply(&wrong_shards).unwrap_err();
    assert!(e.to_string().contains("--shards 2"), "{e}");
    let long = register_with(0, 2, &"x".repeat(META_ADDR_BYTES_MAX + 1));
    assert!(matches!(
        m.apply(&long),
        Err(MetaError::Limit {
            limit: "META_ADDR_BYTES_MAX",
            ..
        })
    ));
    assert_eq!(m.next_ids().0, 42, "refusals allocate nothing");
}

#[test]
fn a_register_past_meta_nodes_max_is_refused() {
    let mut m = MetaState::new();
    let cmd = MetaCmd::Bootstrap {
        settings: settings(),
        nodes: (1..=META_NODES_MAX as u64).map(node).collect(),
        ranges: vec![range(1, "", "", 1, &[1, 2, 3])],
    };
    assert_eq!(m.apply(&cmd), Ok(MetaReply::Done));
    assert!(matches!(
        m.apply(&register(0)),
        Err(MetaError::Limit {
            limit: "META_NODES_MAX",
            ..
        })
    ));
    // A known node still re-registers.
    assert_eq!(m.apply(&register(7)), Ok(MetaReply::Node(7)));
    let over = MetaCmd::Bootstrap {
        settings: settings(),
        nodes: (1..=META_NODES_MAX as u64 + 1).map(node).collect(),
        ranges: vec![range(1, "", "", 1, &[1])],
    };
    assert!(matches!(
        MetaState::new().apply(&over),
        Err(MetaError::Limit {
            limit: "META_NODES_MAX",
            ..
        })
    ));
}

#[test]
fn decommissioning_follows_its_order_and_a_decommissioned_id_never_returns() {
    let mut m = founded();
    let set = |node, state| MetaCmd::SetNodeState { node, state };
    let e = m.apply(&set(3, NodeState::Decommissioned)).unwrap_err();
    assert!(e.to_string().contains("decommission it first"), "{e}");
    assert_eq!(
        m.apply(&set(3, NodeState::Decommissioning)),
        Ok(MetaReply::Done)
    );
    let e = m.apply(&set(3, NodeState::Decommissioned)).unwrap_err();
    assert!(e.to_string().contains("holds replicas of 2 ranges"), "{e}");
    // Its replicas moved away (conf_ver 2: the ranges' logs changed them).
    let mut moved = Vec::new();
    for (id, start, end) in [(1, "", "m"), (2, "m", "")] {
        let mut d = range(id, start, end, 1, &[1, 2]);
        d.epoch.conf_ver = 2;
        moved.push(d);
    }
    assert_eq!(
        m.apply(&MetaCmd::ReportRanges(moved)),
        Ok(MetaReply::Reported { stale: vec![] })
    );
    assert_eq!(
        m.apply(&set(3, NodeState::Decommissioned)),
        Ok(MetaReply::Done)
    );
    assert_eq!(
        m.apply(&register(3)),
        Err(MetaError::Decommissioned { node: 3 })
    );
    assert!(m.apply(&set(3, NodeState::Active)).is_err());
    assert_eq!(
        m.apply(&set(9, NodeState::Active)),
        Err(MetaError::UnknownNode { node: 9 })
    );
    // A map that does not hold every range yet (a bootstrap's, before
    // the ranges' leaders report) cannot tell that a node holds nothing:
    // `ctl decommission` once marked a node holding 3 replicas that way.
    let mut early = MetaState::new();
    let boot = MetaCmd::Bootstrap {
        settings: settings(),
        nodes: (1..=3).map(node).collect(),
        ranges: vec![],
    };
    assert_eq!(early.apply(&boot), Ok(MetaReply::Done));
    assert_eq!(
        early.apply(&MetaCmd::ReportRanges(vec![range(1, "", "m", 1, &[1, 2])])),
        Ok(MetaReply::Reported { stale: vec![] })
    );
    assert_eq!(
        early.apply(&set(3, NodeState::Decommissioning)),
        Ok(MetaReply::Done)
    );
    let e = early.apply(&set(3, NodeState::Decommissioned)).unwrap_err();
    assert!(
        e.to_string().contains("does not hold every range yet"),
        "{e}"
    );
    // Recommissioning before the end is allowed.
    assert_eq!(
        m.apply(&set(2, NodeState::Decommissioning)),
        Ok(MetaReply::Done)
    );
    assert_eq!(m.apply(&set(2, NodeState::Active)), Ok(MetaReply::Done));
}

#[test]
fn reports_keep_the_higher_epoch_and_a_split_batch_leaves_no_gap() {
    let mut m = founded();
    // Range 2 splits at "t" into 2 [m, t) and 3 [t, ..), version 2.
    let split = vec![
        range(2, "m", "t", 2, &[1, 2, 3]),
        range(3, "t", "", 2, &[1, 2, 3]),
    ];
    assert_eq!(
        m.apply(&MetaCmd::ReportRanges(split)),
        Ok(MetaReply::Reported { stale: vec![] })
    );
    assert_eq!(m.ranges().len(), 3);
    assert_eq!(m.ranges().coverage(), Ok(()));
    assert_eq!(m.ranges().range_of(b"z").unwrap().id, 3);
    // A lagging replica's report of the parent is stale, and kept out.
    let old = range(2, "m", "", 1, &[1, 2, 3]);
    let r = m.apply(&MetaCmd::ReportRanges(vec![old])).unwrap();
    let MetaReply::Reported { stale } = r else {
        panic!("{r:?}")
    };
    assert_eq!(stale.len(), 1);
    assert_eq!((stale[0].0, stale[0].2), (2, 2));
    assert_eq!(m.ranges().get(2).unwrap().end, Bytes::from("t"));
    // The counters moved past the reported ids.
    let (_, next_range, next_replica) = m.next_ids();
    assert!(next_range > 3 && next_replica > 33);
}

#[test]
fn ids_come_in_blocks_that_never_overlap_and_the_block_size_is_bounded() {
    let mut m = founded();
    let alloc = |kind, count| MetaCmd::AllocIds { kind, count };
    assert_eq!(
        m.apply(&alloc(IdKind::Range, 10)),
        Ok(MetaReply::Ids {
            first: 3,
            count: 10
        })
    );
    assert_eq!(
        m.apply(&alloc(IdKind::Range, 1)),
        Ok(MetaReply::Ids {
            first: 13,
            count: 1
        })
    );
    assert_eq!(
        m.apply(&alloc(IdKind::Replica, META_ALLOC_IDS_MAX)),
        Ok(MetaReply::Ids {
            first: 24,
            count: META_ALLOC_IDS_MAX
        })
    );
    for count in [0, META_ALLOC_IDS_MAX + 1] {
        let e = m.apply(&alloc(IdKind::Replica, count)).unwrap_err();
        assert!(e.to_string().contains("META_ALLOC_IDS_MAX"), "{e}");
    }
    assert_eq!(m.next_ids().1, 14);
    // A joining node takes its id first, then joins under it: the
    // founders hold 1..=3, and a node registered with 0 comes after it.
    assert_eq!(
        m.apply(&alloc(IdKind::Node, 1)),
        Ok(MetaReply::Ids { first: 4, count: 1 })
    );
    let join = |node, peer: &str| MetaCmd::JoinNode {
        node,
        peer_addr: peer.into(),
        client_addr: "10.0.0.9:8000".into(),
        shards: 2,
    };
    assert_eq!(m.apply(&join(4, "10.0.0.4:7000")), Ok(MetaReply::Node(4)));
    // Asked again (a lost answer): the same id. Another node with the
    // same --id: refused, naming the holder.
    assert_eq!(m.apply(&join(4, "10.0.0.4:7000")), Ok(MetaReply::Node(4)));
    let e = m.apply(&join(4, "10.0.0.5:7000")).unwrap_err();
    assert!(
        e.to_string().contains("taken by the node at 10.0.0.4:7000"),
        "{e}"
    );
    assert!(
        m.apply(&join(1, "10.0.0.4:7000")).is_err(),
        "a founder's id"
    );
    assert!(m.apply(&join(0, "10.0.0.4:7000")).is_err(), "no id");
    assert_eq!(m.apply(&register(0)), Ok(MetaReply::Node(5)));
    assert_eq!(m.next_ids().0, 6);
    assert_eq!(
        m.apply(&MetaCmd::SetReplicationFactor(5)),
        Ok(MetaReply::Done)
    );
    assert_eq!(m.settings().unwrap().replication_factor, 5);
    assert!(m
        .apply(&MetaCmd::SetReplicationFactor(
            crate::route::REPLICATION_FACTOR_MAX + 1
        ))
        .is_err());
}

#[test]
fn a_report_past_meta_report_ranges_max_is_refused_at_decode_and_at_apply() {
    let many: Vec<RangeDesc> = (0..=META_REPORT_RANGES_MAX as u64)
        .map(|i| range(100 + i, &format!("k{i:04}"), &format!("k{i:04}~"), 2, &[1]))
        .collect();
    let cmd = MetaCmd::ReportRanges(many);
    let e = MetaCmd::decode(&cmd.encode()).unwrap_err();
    assert!(e.to_string().contains("META_REPORT_RANGES_MAX"), "{e}");
    let mut m = founded();
    assert!(matches!(
        m.apply(&cmd),
        Err(MetaError::Limit {
            limit: "META_REPORT_RANGES_MAX",
            ..
        })
    ));
    assert_eq!(m.ranges().len(), 2);
}

#[test]
fn a_report_past_the_ranges_limit_is_refused() {
    let mut m = founded();
    // At the limit, a report that replaces ranges one for one (a move)
    // or ends at the limit (this split, at 3) is taken.
    m.set_ranges_max(3);
    let split = vec![
        range(2, "m", "t", 2, &[1, 2, 3]),
        range(3, "t", "", 2, &[1, 2, 3]),
    ];
    assert!(m.clone().apply(&MetaCmd::ReportRanges(split)).is_ok());
    m.set_ranges_max(2);
    let mut moved = range(1, "", "m", 1, &[1, 2]);
    moved.epoch.conf_ver = 2;
    assert!(m.apply(&MetaCmd::ReportRanges(vec![moved])).is_ok());
    let split = vec![
        range(2, "m", "t", 2, &[1, 2, 3]),
        range(3, "t", "", 2, &[1, 2, 3]),
    ];
    let e = m.apply(&MetaCmd::ReportRanges(split)).unwrap_err();
    assert!(e.to_string().contains("META_RANGES_MAX"), "{e}");
    assert_eq!(m.ranges().len(), 2);
}

fn every_command() -> Vec<MetaCmd> {
    vec![
        MetaCmd::Bootstrap {
            settings: settings(),
            nodes: (1..=3).map(node).collect(),
            ranges: vec![range(1, "", "m", 1, &[1, 2]), range(2, "m", "", 1, &[3])],
        },
        register(0),
        MetaCmd::SetNodeState {
            node: 2,
            state: NodeState::Decommissioning,
        },
        MetaCmd::ReportRanges(vec![range(2, "m", "", 1, &[1, 3])]),
        MetaCmd::AllocIds {
            kind: IdKind::Replica,
            count: 7,
        },
        MetaCmd::SetReplicationFactor(5),
    ]
}

#[test]
fn commands_and_snapshots_round_trip_and_every_damage_is_an_error() {
    let mut m = MetaState::new();
    for cmd in every_command() {
        let b = cmd.encode();
        assert_eq!(MetaCmd::decode(&b), Ok(cmd.clone()));
        for cut in 0..b.len() {
            assert!(MetaCmd::decode(&b[..cut]).is_err(), "{cmd:?} cut at {cut}");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert!(matches!(
            MetaCmd::decode(&long),
            Err(MetaCodecError::Trailing { .. })
        ));
        let _ = m.apply(&cmd);
    }
    let snap = m.snapshot();
    let back = MetaState::restore(&snap).unwrap();
    assert_eq!(back.snapshot(), snap);
    for cut in 0..snap.len() {
        assert!(MetaState::restore(&snap[..cut]).is_err(), "cut at {cut}");
    }
    let mut bad = snap.to_vec();
    bad[1] ^= 1;
    assert!(matches!(
        MetaState::restore(&bad),
        Err(MetaCodecError::Format { .. })
    ));
    let mut kind = every_command()[1].encode().to_vec();
    kind[1] = 99;
    assert!(matches!(
        MetaCmd::decode(&kind),
        Err(MetaCodecError::Code { code: 99, .. })
    ));
    // Ids stop at META_ID_MAX, so no counter overflows.
    let mut m = founded();
    let with_id = |id| RangeDesc {
        id,
        ..range(9, "m", "", 2, &[1])
    };
    let big = with_id(META_ID_MAX + 1);
    let e = m.apply(&MetaCmd::ReportRanges(vec![big])).unwrap_err();
    assert!(e.to_string().contains("META_ID_MAX"), "{e}");
    assert!(matches!(
        m.apply(&register(META_ID_MAX + 1)),
        Err(MetaError::Limit {
            limit: "META_ID_MAX",
            ..
        })
    ));
    let top = with_id(META_ID_MAX);
    assert!(m.apply(&MetaCmd::ReportRanges(vec![top])).is_ok());
    let e = m
        .apply(&MetaCmd::AllocIds {
            kind: IdKind::Range,
            count: 1,
        })
        .unwrap_err();
    assert!(e.to_string().contains("META_ID_MAX"), "{e}");
    // A bootstrap without ranges (their leaders report them) is taken.
    let mut empty = MetaState::new();
    let cmd = MetaCmd::Bootstrap {
        settings: settings(),
        nodes: vec![node(1)],
        ranges: vec![],
    };
    assert_eq!(empty.apply(&cmd), Ok(MetaReply::Done));
    // The empty state round-trips as well.
    let empty = MetaState::new().snapshot();
    assert_eq!(MetaState::restore(&empty).unwrap().snapshot(), empty);
}

/// What decodes but breaks a rule the state keeps is refused on restore
/// and on decode: nonzero padding, a bootstrapped flag other than 0 or 1,
/// a node id 0 or listed twice, a replication factor out of bounds, state
/// held before a bootstrap. (Each was taken as it came.)
#[test]
fn a_snapshot_or_command_that_breaks_a_rule_is_refused() {
    let m = founded();
    let snap = m.snapshot().to_vec();
    let invalid = |b: &[u8]| {
        matches!(
            MetaState::restore(b),
            Err(MetaCodecError::Invalid { .. } | MetaCodecError::Code { .. })
        )
    };
    // magic 8 | bootstrapped 1 | pad 7 | settings 16 | counters 24 | nodes
    let mut flag = snap.clone();
    flag[8] = 2;
    assert!(invalid(&flag), "bootstrapped flag 2");
    let mut pad = snap.clone();
    pad[12] = 1;
    assert!(invalid(&pad), "nonzero padding");
    let mut rf = snap.clone();
    rf[16..20].copy_from_slice(&0u32.to_le_bytes());
    assert!(invalid(&rf), "replication factor 0");
    // The first node record starts after the node count, at 60.
    let mut zero = snap.clone();
    zero[60..68].copy_from_slice(&0u64.to_le_bytes());
    assert!(invalid(&zero), "node id 0");
    let mut twice = snap.clone();
    let second = 60 + 24 + node(1).peer_addr.len() + node(1).client_addr.len();
    let first_id = twice[60..68].to_vec();
    twice[second..second + 8].copy_from_slice(&first_id);
    assert!(invalid(&twice), "a node twice");
    let mut unbooted = MetaState::new().snapshot().to_vec();
    unbooted[16] = 3;
    assert!(invalid(&unbooted), "settings before a bootstrap");
    // Commands: padding in the head and in a set-state.
    let mut head = register(4).encode().to_vec();
    head[3] = 1;
    assert!(matches!(
        MetaCmd::decode(&head),
        Err(MetaCodecError::Invalid { .. })
    ));
    let set = MetaCmd::SetNodeState {
        node: 2,
        state: NodeState::Decommissioning,
    };
    let mut b = set.encode().to_vec();
    let last = b.len() - 1;
    b[last] = 1;
    assert!(matches!(
        MetaCmd::decode(&b),
        Err(MetaCodecError::Invalid { .. })
    ));
}

/// A command drawn from a small world (nodes 0-6, ranges over keys
/// "a".."h"), so that sequences exercise successes and refusals alike.
fn any_cmd() -> impl Strategy<Value = MetaCmd> {
    let key = || proptest::sample::select(vec!["", "b", "d", "f", "h"]);
    let state = proptest::sample::select(vec![
        NodeState::Active,
        NodeState::Decommissioning,
        NodeState::Decommissioned,
    ]);
    prop_oneof![
        (0u64..7, 1u32..3).prop_map(|(node, shards)| register_with(node, shards, "10.0.0.9:7000")),
        (0u64..9, 0u8..2).prop_map(|(node, a)| MetaCmd::JoinNode {
            node,
            peer_addr: format!("10.0.0.{a}:7000"),
            client_addr: "10.0.0.9:8000".into(),
            shards: 2,
        }),
        (1u64..7, state).prop_map(|(node, state)| MetaCmd::SetNodeState { node, state }),
        proptest::collection::vec(
            (
                1u64..6,
                key(),
                key(),
                1u64..4,
                1u64..4,
                proptest::sample::subsequence(vec![1u64, 2, 3, 4], 1..4)
            ),
            1..3
        )
        .prop_map(|v| {
            MetaCmd::ReportRanges(
                v.into_iter()
                    .filter(|(_, s, e, ..)| e.is_empty() || s < e)
                    .map(|(id, s, e, version, conf_ver, nodes)| {
                        let mut d = range(id, s, e, version, &nodes);
                        d.epoch.conf_ver = conf_ver;
                        d
                    })
                    .collect(),
            )
        }),
        (0u8..3, 0u32..5).prop_map(|(k, count)| MetaCmd::AllocIds {
            kind: [IdKind::Range, IdKind::Replica, IdKind::Node][k as usize],
            count
        }),
        (0u32..9).prop_map(MetaCmd::SetReplicationFactor),
    ]
}

proptest! {
    /// Two replicas apply one log; one is rebuilt from its snapshot at
    /// `restart`. They answer every command alike and end equal.
    #[test]
    fn replicas_applying_one_log_stay_equal(
        cmds in proptest::collection::vec(any_cmd(), 1..40),
        restart in 0usize..40,
    ) {
        let (mut a, mut b) = (founded(), founded());
        for (i, cmd) in cmds.iter().enumerate() {
            if i == restart {
                b = MetaState::restore(&b.snapshot()).expect("own snapshot");
            }
            let wire = MetaCmd::decode(&cmd.encode()).expect("own encoding");
            prop_assert_eq!(a.apply(cmd), b.apply(&wire));
            prop_assert_eq!(a.snapshot(), b.snapshot());
        }
    }

    /// Garbage is an error, never a panic or a huge allocation.
    #[test]
    fn decoding_garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = MetaCmd::decode(&b);
        let _ = MetaState::restore(&b);
        let mut cmd = vec![1u8];
        cmd.extend_from_slice(&b);
        // What decodes, applies: refused or taken, never a panic.
        for c in [MetaCmd::decode(&b), MetaCmd::decode(&cmd)].into_iter().flatten() {
            let _ = MetaState::new().apply(&c);
            let _ = founded().apply(&c);
        }
    }
}

/// The default state is the new one: it takes reports up to
/// `META_RANGES_MAX` (a derived default had a limit of 0 and refused
/// every report; the meta group's state machine starts from it).
#[test]
fn the_default_state_is_the_new_one() {
    let mut m = MetaState::default();
    let cmd = MetaCmd::Bootstrap {
        settings: settings(),
        nodes: (1..=3).map(node).collect(),
        ranges: vec![range(1, "", "", 1, &[1, 2, 3])],
    };
    assert_eq!(m.apply(&cmd), Ok(MetaReply::Done));
    let mut moved = range(1, "", "", 1, &[1, 2]);
    moved.epoch.conf_ver = 3;
    assert!(matches!(
        m.apply(&MetaCmd::ReportRanges(vec![moved])),
        Ok(MetaReply::Reported { .. })
    ));
    assert_eq!(m.next_ids(), (4, 2, 14));
}
