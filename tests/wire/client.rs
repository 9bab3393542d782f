//! The client protocol and the handshake: every request, reply and error
//! round-trips; damaged payloads give typed errors, never a panic.

use bytes::Bytes;
use proptest::prelude::*;
use ringraft::wire::client::{LivenessState, LivenessView, NodeLiveness};
use ringraft::wire::hello::{decode_reply, decode_reply_full, encode_reply, HelloReply};
use ringraft::wire::{
    decode_frame, decode_request, decode_response, encode_request, encode_response, ClientError,
    ClusterMap, GroupStatus, Hello, HelloError, KeyValue, NodeInfo, Op, ReadMode, ReplicaStatus,
    Reply, Request, Response, KIND_HELLO, KIND_REQUEST, KIND_RESPONSE, PROTOCOL_VERSION,
};

fn aligned(v: &[u8]) -> Bytes {
    let mut a = rkyv::util::AlignedVec::<16>::new();
    a.extend_from_slice(v);
    Bytes::from_owner(a)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn every_op() -> Vec<Op> {
    vec![
        Op::Put {
            key: b("k"),
            value: b("value"),
        },
        Op::Put {
            key: b(""),
            value: Bytes::from(vec![7u8; 5000]),
        },
        Op::Get {
            key: b("k"),
            mode: ReadMode::Linearizable,
        },
        Op::Get {
            key: b("k"),
            mode: ReadMode::Lease,
        },
        Op::Get {
            key: b("k"),
            mode: ReadMode::Stale,
        },
        Op::Delete { key: b("gone") },
        Op::Cas {
            key: b("c"),
            expect: None,
            value: Some(b("new")),
        },
        Op::Cas {
            key: b("c"),
            expect: Some(b("old")),
            value: None,
        },
        Op::Scan {
            start: b("a"),
            end: b(""),
            limit: 100,
            mode: ReadMode::Linearizable,
            keys_only: false,
        },
        Op::Scan {
            start: b(""),
            end: b("z"),
            limit: 7,
            mode: ReadMode::Stale,
            keys_only: true,
        },
        Op::Incr {
            key: b("n"),
            by: -3,
        },
        Op::Append {
            key: b("s"),
            value: b("tail"),
        },
        Op::ClusterMap,
        Op::Status,
        Op::Progress,
        Op::TransferLeader { to: 3 },
        Op::AddLearner {
            node: 4,
            peer_addr: "127.0.0.1:7000".into(),
            client_addr: "127.0.0.1:8000".into(),
        },
        Op::Promote { node: 4 },
        Op::ReplaceVoter { add: 4, remove: 1 },
        Op::RemoveNode {
            node: 2,
            below_replication_factor: true,
        },
        Op::Snapshot,
        Op::Isolate { peers: vec![2, 3] },
        Op::Ranges {
            from: b("k"),
            limit: 1024,
        },
        Op::Meta { cmd: b("\x01\x02") },
        Op::MetaState,
        Op::Liveness,
        Op::Ping,
    ]
}

fn every_result() -> Vec<Result<Reply, ClientError>> {
    vec![
        Ok(Reply::Done),
        Ok(Reply::Meta {
            ok: false,
            body: b("refused"),
        }),
        Ok(Reply::Liveness(LivenessView {
            dead_node_timeout_ms: 300_000,
            round_age_ms: 1_200,
            nodes: vec![
                NodeLiveness {
                    node: 1,
                    state: LivenessState::Live,
                    silent_ms: 1_250,
                },
                NodeLiveness {
                    node: 2,
                    state: LivenessState::Dead,
                    silent_ms: u64::MAX,
                },
            ],
        })),
        Ok(Reply::Value(None)),
        Ok(Reply::Value(Some(b("v")))),
        Ok(Reply::Cas {
            swapped: false,
            current: Some(b("x")),
        }),
        Ok(Reply::Scan {
            pairs: vec![KeyValue {
                key: b("a"),
                value: b("1"),
            }],
            more: true,
            range_end: b("m"),
        }),
        Ok(Reply::Ranges(vec![b("descriptor"), b("")])),
        Err(ClientError::KeyNotInRange {
            key: b("z"),
            start: b("a"),
            end: b("m"),
            version: 7,
        }),
        Ok(Reply::Map(ClusterMap {
            groups: 8,
            shards: 2,
            nodes: vec![NodeInfo {
                id: 1,
                client_addr: "127.0.0.1:9000".into(),
                peer_addr: "127.0.0.1:7000".into(),
            }],
            leaders: vec![(0, 1), (2, 2), (3, 3), (9, 1), (1 << 63, 2)],
            replication_factor: 3,
            meta_leader: 0,
        })),
        Ok(Reply::Status(vec![GroupStatus {
            group: 3,
            leader: 1,
            term: 4,
            commit: 100,
            applied: 99,
            replicas: vec![
                ReplicaStatus {
                    node: 1,
                    match_index: 100,
                    state: "leader".into(),
                    unreachable: false,
                    snapshot_index: 0,
                    snapshot_acked_bytes: 0,
                    replica: 1,
                    role: "voter".into(),
                },
                ReplicaStatus {
                    node: 2,
                    match_index: 98,
                    state: "snapshot".into(),
                    unreachable: true,
                    snapshot_index: 90,
                    snapshot_acked_bytes: 1 << 20,
                    replica: 7,
                    role: "learner".into(),
                },
            ],
            digest: 0xfeed,
            last_index: 101,
            quiesced: true,
            reads_waiting: 2,
        }])),
        Err(ClientError::NotLeader { leader: 2 }),
        Err(ClientError::Timeout),
        Err(ClientError::ValueTooLarge { len: 9, max: 8 }),
        Err(ClientError::KeyTooLarge { len: 9, max: 8 }),
        Err(ClientError::Busy),
        Err(ClientError::DiskFull),
        Err(ClientError::ShuttingDown),
        Err(ClientError::WrongShard { group: 3, shard: 1 }),
        Err(ClientError::UnknownGroup {
            group: 99,
            groups: 8,
        }),
        Err(ClientError::SessionExpired),
        Err(ClientError::BadRequest {
            reason: "no".into(),
        }),
        Err(ClientError::Failed {
            reason: "disk".into(),
        }),
    ]
}

fn one_frame(buf: &[u8], kind: u8) -> Bytes {
    let (f, n) = decode_frame(buf, 1 << 20).unwrap().unwrap();
    assert_eq!((f.kind, n), (kind, buf.len()));
    aligned(f.payload)
}

#[test]
fn every_request_round_trips() {
    for (i, op) in every_op().into_iter().enumerate() {
        let r = Request {
            id: i as u64,
            group: 5,
            client: 77,
            seq: 1000 + i as u64,
            ack: 1000,
            op,
        };
        let mut out = Vec::new();
        encode_request(&mut out, &r);
        let payload = one_frame(&out, KIND_REQUEST);
        assert_eq!(decode_request(&payload).unwrap(), r);
    }
}

#[test]
fn every_reply_and_error_round_trips() {
    for (i, result) in every_result().into_iter().enumerate() {
        let r = Response {
            id: i as u64,
            result,
        };
        let mut out = Vec::new();
        encode_response(&mut out, &r);
        let payload = one_frame(&out, KIND_RESPONSE);
        assert_eq!(decode_response(&payload).unwrap(), r);
    }
}

#[test]
fn put_values_are_borrowed_from_the_receive_buffer() {
    let r = Request {
        id: 1,
        group: 0,
        client: 1,
        seq: 1,
        ack: 1,
        op: Op::Put {
            key: b("key"),
            value: Bytes::from(vec![9u8; 256]),
        },
    };
    let mut out = Vec::new();
    encode_request(&mut out, &r);
    let payload = one_frame(&out, KIND_REQUEST);
    let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
    let Op::Put { key, value } = decode_request(&payload).unwrap().op else {
        panic!("a put")
    };
    assert!(
        range.contains(&(value.as_ptr() as usize)),
        "value not copied"
    );
    assert!(range.contains(&(key.as_ptr() as usize)), "key not copied");
}

#[test]
fn hello_checks_name_what_differs() {
    let me = Hello {
        cluster: 7,
        node: 1,
        shard: 1,
        shards: 2,
        version: PROTOCOL_VERSION as u32,
        incarnation: 0x71,
        expected: 0x72,
        cuts: 0xc0ffee,
        client_addr: Some("127.0.0.1:7200".parse().unwrap()),
    };
    let mut out = Vec::new();
    me.encode(&mut out);
    let payload = one_frame(&out, KIND_HELLO);
    assert_eq!(Hello::decode(&payload).unwrap(), me);
    for addr in [None, Some("[::1]:9".parse().unwrap())] {
        let h = Hello {
            client_addr: addr,
            ..me
        };
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(Hello::decode(&one_frame(&out, KIND_HELLO)).unwrap(), h);
    }
    let mut bad = payload.to_vec();
    bad[48] = 5;
    assert_eq!(Hello::decode(&bad), Err(HelloError::Address(5)));
    bad[48] = 0;
    assert_eq!(
        Hello::decode(&bad),
        Err(HelloError::Address(0)),
        "no address, but its bytes are not 0"
    );
    let peer = Hello { node: 2, ..me };
    assert_eq!(peer.check(&me), Ok(()));
    assert_eq!(
        Hello { cluster: 8, ..peer }.check(&me),
        Err(HelloError::Cluster { got: 8, want: 7 })
    );
    assert_eq!(
        Hello {
            version: PROTOCOL_VERSION as u32 + 1,
            ..peer
        }
        .check(&me),
        Err(HelloError::Version {
            got: PROTOCOL_VERSION as u32 + 1
        })
    );
    assert_eq!(
        Hello { shard: 0, ..peer }.check(&me),
        Err(HelloError::Shard { got: 0, want: 1 })
    );
    assert_eq!(
        Hello { shards: 3, ..peer }.check(&me),
        Err(HelloError::Shards { got: 3, want: 2 })
    );
    assert_eq!(me.check(&me), Err(HelloError::SelfId(1)));
    // Nodes bootstrapped with other key ranges refuse each other; a node
    // that does not know its cuts (joined, or older) is not refused.
    let e = Hello {
        cuts: 0xbad,
        ..peer
    }
    .check(&me)
    .unwrap_err();
    assert_eq!(
        e,
        HelloError::Cuts {
            node: 2,
            got: 0xbad,
            want: 0xc0ffee
        }
    );
    assert!(e.to_string().contains("--initial-split-keys"), "{e}");
    assert_eq!(Hello { cuts: 0, ..peer }.check(&me), Ok(()));
    // A peer must say which store it is (`ringraft::identity`).
    assert_eq!(
        Hello {
            incarnation: 0,
            ..peer
        }
        .check(&me),
        Err(HelloError::NoIncarnation(2))
    );
    // A client need not run the node's shard count.
    assert_eq!(
        Hello {
            node: 0,
            shards: 0,
            incarnation: 0,
            ..me
        }
        .check(&me),
        Ok(())
    );
    assert!(matches!(
        Hello::decode(&payload[..71]),
        Err(HelloError::Size(71))
    ));
}

/// Node 3 as it answers handshakes.
fn node3() -> Hello {
    Hello {
        cluster: 7,
        node: 3,
        shard: 0,
        shards: 1,
        version: PROTOCOL_VERSION as u32,
        incarnation: 0x33,
        expected: 0,
        cuts: 0,
        client_addr: None,
    }
}

#[test]
fn a_refusal_reason_is_cut_at_its_bound_on_a_char_boundary() {
    use ringraft::wire::hello::REFUSAL_REASON_BYTES_MAX;
    // 'é' is two bytes: a cut at an odd offset would split one.
    let long = format!("x{}", "é".repeat(REFUSAL_REASON_BYTES_MAX));
    let mut out = Vec::new();
    encode_reply(&mut out, &node3(), Err(&long));
    let (f, _) = decode_frame(&out, 1 << 20).unwrap().unwrap();
    match decode_reply(f.payload) {
        Err(HelloError::Refused { reason, .. }) => {
            assert!(reason.len() <= REFUSAL_REASON_BYTES_MAX);
            assert!(reason.len() >= REFUSAL_REASON_BYTES_MAX - 1);
            assert!(!reason.contains('\u{FFFD}'), "cut inside a character");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refusals_carry_their_reason() {
    let mut out = Vec::new();
    encode_reply(
        &mut out,
        &node3(),
        Err("cluster id 0x8, this node belongs to cluster 0x7"),
    );
    let (f, _) = decode_frame(&out, 1 << 20).unwrap().unwrap();
    match decode_reply(f.payload) {
        Err(HelloError::Refused { node: 3, reason }) => assert!(reason.contains("cluster id")),
        other => panic!("{other:?}"),
    }
    let mut out = Vec::new();
    encode_reply(&mut out, &node3(), Ok(()));
    let (f, _) = decode_frame(&out, 1 << 20).unwrap().unwrap();
    assert_eq!(decode_reply(f.payload), Ok(3));
    assert_eq!(
        decode_reply_full(f.payload),
        Ok(HelloReply {
            answerer: 3,
            incarnation: 0x33
        })
    );
    assert!(decode_reply(&[1, 2, 3]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: super::cases() / 10, ..ProptestConfig::default() })]

    #[test]
    fn random_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let p = aligned(&bytes);
        let _ = decode_request(&p);
        let _ = decode_response(&p);
        let _ = Hello::decode(&p);
        let _ = decode_reply(&p);
    }

    #[test]
    fn corrupted_requests_never_panic(which in 0usize..16, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let ops = every_op();
        let r = Request { id: 1, group: 2, client: 3, seq: 4, ack: 2, op: ops[which % ops.len()].clone() };
        let mut out = Vec::new();
        encode_request(&mut out, &r);
        let mut payload = decode_frame(&out, 1 << 20).unwrap().unwrap().0.payload.to_vec();
        let i = at.index(payload.len());
        payload[i] ^= flip;
        let _ = decode_request(&aligned(&payload));
    }

    #[test]
    fn corrupted_responses_never_panic(which in 0usize..19, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let rs = every_result();
        let r = Response { id: 1, result: rs[which % rs.len()].clone() };
        let mut out = Vec::new();
        encode_response(&mut out, &r);
        let mut payload = decode_frame(&out, 1 << 20).unwrap().unwrap().0.payload.to_vec();
        let i = at.index(payload.len());
        payload[i] ^= flip;
        let _ = decode_response(&aligned(&payload));
    }
}

/// Coalesced heartbeats: many groups' heartbeats and answers round-trip
/// through as many frames as `HEARTBEATS_PER_FRAME_MAX` makes, in order;
/// a damaged record, a wrong count or stray padding is refused whole
/// (nothing handed out).
#[test]
fn coalesced_heartbeats_round_trip_and_damage_is_refused() {
    use ringraft::raft::{Body, Message};
    use ringraft::wire::{
        coalesced, decode_heartbeats, encode_heartbeats, HEARTBEATS_PER_FRAME_MAX,
        HEARTBEAT_RECORD_BYTES, KIND_HEARTBEATS,
    };
    let beats: Vec<(u64, Message)> = (0..HEARTBEATS_PER_FRAME_MAX as u64 + 5)
        .map(|g| {
            let body = if g % 3 == 0 {
                Body::HeartbeatResp { round: g * 7 }
            } else {
                Body::Heartbeat {
                    commit: g + 100,
                    round: g * 7,
                }
            };
            let m = Message {
                from: g % 5 + 1,
                to: g % 7 + 1,
                term: g + 3,
                body,
            };
            assert!(coalesced(&m));
            (g * 1_000_003, m)
        })
        .collect();
    let mut buf = Vec::new();
    encode_heartbeats(&mut buf, &beats);
    let mut got = Vec::new();
    let mut at = 0;
    let mut frames = 0;
    while at < buf.len() {
        let (f, n) = decode_frame(&buf[at..], 1 << 20).unwrap().unwrap();
        assert_eq!(f.kind, KIND_HEARTBEATS);
        let k = decode_heartbeats(f.payload, |g, m| got.push((g, m))).unwrap();
        assert!(k <= HEARTBEATS_PER_FRAME_MAX);
        at += n;
        frames += 1;
    }
    assert_eq!(frames, 2);
    assert_eq!(got, beats);

    // One frame of three records, damaged in turn.
    let mut one = Vec::new();
    encode_heartbeats(&mut one, &beats[..3]);
    let payload = one_frame(&one, KIND_HEARTBEATS);
    let mut damaged = Vec::new();
    let mut bad = payload.to_vec();
    bad[0] = 4; // count says 4
    damaged.push(bad);
    let mut bad = payload.to_vec();
    bad[5] = 1; // header padding
    damaged.push(bad);
    let mut bad = payload.to_vec();
    bad[8 + HEARTBEAT_RECORD_BYTES + 48] = 2; // kind
    damaged.push(bad);
    let mut bad = payload.to_vec();
    bad[8 + 48] = 1; // a response (record 0 is one) ...
    bad[8 + 32] = 1; // ... with a commit
    damaged.push(bad);
    let mut bad = payload.to_vec();
    bad[8 + 2 * HEARTBEAT_RECORD_BYTES + 50] = 1; // record padding
    damaged.push(bad);
    damaged.push(payload[..payload.len() - 8].to_vec()); // truncated
    damaged.push(payload[..4].to_vec());
    for (i, b) in damaged.iter().enumerate() {
        let mut handed = 0;
        assert!(
            decode_heartbeats(b, |_, _| handed += 1).is_err(),
            "damage {i} passed"
        );
        assert_eq!(handed, 0, "damage {i}: records handed out");
    }
}
