//! Wire format and transport tests: frames, Raft messages, the client
//! protocol and handshake (wire/client.rs), the TCP transport on loopback
//! (wire/transport.rs).
//!
//! cargo test --profile ci --test wire
//! WIRE_CASES=1000000 cargo test --profile ci --test wire   # the long fuzz run

use proptest::prelude::*;
use ringraft::wire::{decode_frame, encode_frame, FrameError};

fn cases() -> u32 {
    std::env::var("WIRE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder: a typed error, a request
    /// for more bytes, or a frame whose every check passed.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
        if let Ok(Some((f, n))) = decode_frame(&bytes, max) {
            prop_assert!(n <= bytes.len() && f.payload.len() <= max);
            prop_assert_eq!(n % 16, 0);
        }
    }

    /// Any single corrupted byte of a valid frame is refused (or, if it
    /// makes the length larger, waits for bytes that will then fail).
    #[test]
    fn any_single_byte_corruption_is_caught(
        kind in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut buf = Vec::new();
        encode_frame(&mut buf, kind, &payload);
        let i = at.index(buf.len());
        buf[i] ^= flip;
        match decode_frame(&buf, 1 << 20) {
            Ok(Some(_)) => prop_assert!(false, "corruption at byte {} of {} passed", i, buf.len()),
            Ok(None) => prop_assert!((8..12).contains(&i), "only a larger length may wait for more"),
            Err(e) => {
                let too_large = matches!(e, FrameError::TooLarge { .. });
                prop_assert!(!too_large || (8..12).contains(&i), "only the length can be too large");
            }
        }
    }

    /// Arbitrary bytes as a coalesced-heartbeats payload never panic: a
    /// typed error, or records that were all checked.
    #[test]
    fn random_heartbeats_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut n = 0;
        if let Ok(k) = ringraft::wire::decode_heartbeats(&bytes, |_, _| n += 1) {
            prop_assert_eq!(k, n);
            prop_assert_eq!(bytes.len(), 8 + k * ringraft::wire::HEARTBEAT_RECORD_BYTES);
        }
    }

    /// A stream of frames decodes back to exactly what was sent.
    #[test]
    fn streams_round_trip(frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..20)) {
        let mut buf = Vec::new();
        for (k, p) in &frames {
            encode_frame(&mut buf, *k, p);
        }
        let mut at = 0;
        for (k, p) in &frames {
            let (f, n) = decode_frame(&buf[at..], 1 << 20).unwrap().unwrap();
            prop_assert_eq!((f.kind, f.payload), (*k, &p[..]));
            at += n;
        }
        prop_assert_eq!(at, buf.len());
    }
}

/// `frame_bytes_max`: a payload of exactly the bound is a frame; one byte
/// more is refused from the header alone, before its payload arrived.
#[test]
fn frame_bytes_max_is_the_largest_payload_accepted() {
    let mut buf = Vec::new();
    encode_frame(&mut buf, 3, &[7u8; 4096]);
    let (f, n) = decode_frame(&buf, 4096).unwrap().expect("whole frame");
    assert_eq!((f.kind, f.payload.len(), n), (3, 4096, buf.len()));
    assert_eq!(
        decode_frame(&buf, 4095).unwrap_err(),
        FrameError::TooLarge {
            len: 4096,
            max: 4095
        }
    );
    assert_eq!(
        decode_frame(&buf[..16], 4095).unwrap_err(),
        FrameError::TooLarge {
            len: 4096,
            max: 4095
        },
        "refused on the header alone"
    );
}

mod messages {
    use bytes::Bytes;
    use proptest::prelude::*;
    use ringraft::raft::{Body, ConfState, Entry, EntryKind, Message, Placement};
    use ringraft::wire::{decode_frame, decode_raft, encode_raft, MessageError, KIND_RAFT};

    /// A receive buffer as the transport keeps it: 16-byte aligned.
    fn aligned(v: &[u8]) -> Bytes {
        let mut a = rkyv::util::AlignedVec::<16>::new();
        a.extend_from_slice(v);
        Bytes::from_owner(a)
    }

    fn every_kind() -> Vec<Body> {
        let e = |i, k| Entry {
            term: 3,
            index: i,
            kind: k,
            data: Bytes::from(vec![i as u8; i as usize * 5]),
        };
        vec![
            Body::PreVote {
                last_index: 9,
                last_term: 2,
            },
            Body::PreVoteResp { reject: true },
            Body::Vote {
                last_index: 9,
                last_term: 2,
                transfer: true,
            },
            Body::VoteResp { reject: false },
            Body::Append {
                prev_index: 4,
                prev_term: 2,
                entries: vec![
                    e(5, EntryKind::Normal),
                    e(6, EntryKind::Noop),
                    e(7, EntryKind::ConfChange),
                ],
                commit: 4,
            },
            Body::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![],
                commit: 0,
            },
            Body::AppendResp {
                reject: true,
                index: 7,
                hint_index: 3,
                hint_term: 1,
            },
            Body::Heartbeat {
                commit: 3,
                round: 77,
            },
            Body::HeartbeatResp { round: 77 },
            Body::Snapshot {
                index: 50,
                term: 3,
                conf: {
                    let mut c = ConfState::new(&[1, 2, 4], &[5]);
                    c.voters_outgoing = vec![1, 2, 3];
                    c.placements.insert(
                        2,
                        Placement {
                            replica: 3,
                            node: 9,
                        },
                    );
                    c.next_replica_id = 11;
                    c
                },
                offset: 1024,
                total: 4096,
                crc: 0xDEAD_BEEF,
                chunk: Bytes::from(vec![7u8; 1024]),
            },
            Body::SnapshotAck {
                index: 50,
                next_offset: 2048,
            },
            Body::TimeoutNow,
            Body::ReadIndex { ctx: u64::MAX },
            Body::ReadIndexResp {
                ctx: 1,
                index: 42,
                reject: false,
            },
            Body::Removed { conf_index: 17 },
        ]
    }

    #[test]
    fn every_message_kind_round_trips_through_a_frame() {
        let mut out = Vec::new();
        let msgs: Vec<Message> = every_kind()
            .into_iter()
            .map(|body| Message {
                from: 1,
                to: 2,
                term: 3,
                body,
            })
            .collect();
        for (g, m) in msgs.iter().enumerate() {
            encode_raft(&mut out, g as u64, m);
        }
        let buf = aligned(&out);
        let mut at = 0;
        for (g, m) in msgs.iter().enumerate() {
            let (f, n) = decode_frame(&buf[at..], 1 << 20).unwrap().unwrap();
            assert_eq!(f.kind, KIND_RAFT);
            let start = at + 16;
            let payload = buf.slice(start..start + f.payload.len());
            let (group, back) = decode_raft(&payload).unwrap();
            assert_eq!((group, &back), (g as u64, m));
            at += n;
        }
        assert_eq!(at, buf.len());
    }

    /// An AppendEntries with one entry.
    fn one_entry_append(term: u64, index: u64, data: Bytes) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: Body::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![Entry {
                    term,
                    index,
                    kind: EntryKind::Normal,
                    data,
                }],
                commit: 0,
            },
        }
    }

    /// The frame payload of `m`, in an aligned buffer.
    fn payload_of(group: u64, m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode_raft(&mut out, group, m);
        let (f, _) = decode_frame(&out, 1 << 20).unwrap().unwrap();
        f.payload.to_vec()
    }

    #[test]
    fn entry_payloads_are_borrowed_from_the_receive_buffer() {
        let m = one_entry_append(3, 1, Bytes::from(vec![9u8; 4096]));
        let mut out = Vec::new();
        encode_raft(&mut out, 7, &m);
        let buf = aligned(&out);
        let (f, _) = decode_frame(&buf, 1 << 20).unwrap().unwrap();
        let payload = buf.slice(16..16 + f.payload.len());
        let (_, back) = decode_raft(&payload).unwrap();
        let Body::Append { entries, .. } = back.body else {
            panic!("an append")
        };
        let p = entries[0].data.as_ptr() as usize;
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        assert!(
            range.contains(&p),
            "entry data must point into the receive buffer (no copy)"
        );
    }

    #[test]
    fn an_unknown_entry_kind_is_refused() {
        // Distinctive term and index locate the archived entry; its kind
        // byte follows them.
        let (term, index) = (0x1111_2222_3333_4444u64, 0x5555_6666_7777_8888u64);
        let mut p = payload_of(1, &one_entry_append(term, index, Bytes::new()));
        let mut pat = term.to_le_bytes().to_vec();
        pat.extend_from_slice(&index.to_le_bytes());
        let at = p
            .windows(16)
            .position(|w| w == pat)
            .expect("the archived entry")
            + 16;
        assert_eq!(p[at], 0, "EntryKind::Normal");
        p[at] = 9;
        assert!(matches!(
            decode_raft(&aligned(&p)),
            Err(MessageError::Invalid(_))
        ));
    }

    /// A snapshot whose membership places a non-member (or breaks the
    /// placements' invariant otherwise) is refused on receipt: routing
    /// trusts placements.
    #[test]
    fn a_snapshot_with_inconsistent_placements_is_refused() {
        let mut conf = ConfState::new(&[1, 2, 3], &[]);
        conf.placements.push(Placement {
            replica: 7,
            node: 7,
        });
        let m = Message {
            from: 1,
            to: 2,
            term: 3,
            body: Body::Snapshot {
                index: 50,
                term: 3,
                conf,
                offset: 0,
                total: 1,
                crc: 0,
                chunk: Bytes::from_static(b"x"),
            },
        };
        assert!(matches!(
            decode_raft(&aligned(&payload_of(1, &m))),
            Err(MessageError::Invalid(why)) if why.contains("inconsistent placements")
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: super::cases(), ..ProptestConfig::default() })]

        /// Arbitrary payload bytes never panic: validation refuses them or
        /// they happen to be a valid archive.
        #[test]
        fn random_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_raft(&aligned(&bytes));
        }

        /// Corrupting one byte of a valid archive never panics.
        #[test]
        fn corrupted_archives_never_panic(which in 0usize..14, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let body = every_kind().swap_remove(which);
            let mut bytes = payload_of(3, &Message { from: 1, to: 2, term: 3, body });
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            let _ = decode_raft(&aligned(&bytes));
        }
    }
}

#[path = "wire/client.rs"]
mod client;
#[path = "wire/transport.rs"]
mod transport;
