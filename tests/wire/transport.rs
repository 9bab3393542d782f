//! The transport on real loopback sockets, in glommio executors: bursts
//! both ways, garbage and impostors cut off with one log line while the
//! good link keeps working, handshakes refused at both ends, the queue
//! bound, reconnects, and the client service.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::timeout;
use glommio::{LocalExecutorBuilder, Placement};
use ringraft::raft::{Body, Entry, EntryKind, Message};
use ringraft::transport::{
    ClientService, FrameReader, Transport, TransportConfig, UNATTRIBUTED_ID,
};
use ringraft::wire::hello::{decode_reply, encode_reply};
use ringraft::wire::{
    decode_raft, decode_response, encode_frame, encode_raft, encode_request, ClientError,
    ClusterMap, Hello, HelloError, Op, ReadMode, Reply, Request, Response, KIND_HELLO,
    KIND_HELLO_REPLY, KIND_RAFT, KIND_REQUEST, KIND_RESPONSE, PROTOCOL_VERSION,
};

/// Log lines written while a test runs (INFO and above).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

/// Runs `f` on a fresh glommio executor with logs captured.
fn run<F, Fut>(f: F) -> Logs
where
    F: FnOnce(Logs) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let logs = Logs::default();
    let l2 = logs.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let sub = tracing_subscriber::fmt()
                .with_writer(l2.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            let _g = tracing::subscriber::set_default(sub);
            f(l2).await
        })
        .unwrap()
        .join()
        .unwrap();
    logs
}

const CLUSTER: u64 = 0xC1;

/// Runs `f` on a fresh glommio executor and returns what it returns.
fn run_on<T: Send + 'static, F, Fut>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// What a stub node answers `Op::Ranges` with: group 0 holds every key,
/// its one replica on node 1.
fn whole_range() -> Reply {
    Reply::Ranges(vec![range_at(0, b"", b"", 0)])
}

fn me(cluster: u64, node: u64) -> Hello {
    Hello {
        cluster,
        node,
        shard: 0,
        shards: 1,
        version: PROTOCOL_VERSION as u32,
        // A client (node 0) has none; a peer's is fixed per test node.
        incarnation: if node == 0 { 0 } else { 0x1000 + node },
        expected: 0,
        cuts: 0,
        client_addr: None,
    }
}

fn start(cluster: u64, node: u64, cfg: TransportConfig) -> (Rc<Transport>, SocketAddr) {
    start_as(me(cluster, node), cfg)
}

fn start_as(me: Hello, cfg: TransportConfig) -> (Rc<Transport>, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = Transport::new(me, cfg);
    glommio::spawn_local(t.clone().serve(l)).detach();
    (t, addr)
}

fn append(from: u64, to: u64, i: u64, entries: usize, bytes: usize) -> Message {
    Message {
        from,
        to,
        term: 3,
        body: Body::Append {
            prev_index: i,
            prev_term: 3,
            entries: (0..entries as u64)
                .map(|k| Entry {
                    term: 3,
                    index: i + 1 + k,
                    kind: EntryKind::Normal,
                    data: Bytes::from(vec![(i + k) as u8; bytes]),
                })
                .collect(),
            commit: i,
        },
    }
}

async fn recv(t: &Transport, n: usize, out: &mut Vec<(u64, u64, Message)>) {
    timeout(Duration::from_secs(30), async {
        while out.len() < n {
            t.inbox_ready().await;
            t.drain_inbox(out);
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} messages arrived", out.len()));
}

/// Waits (bounded) for a condition that an event on the loopback makes true.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

/// Connects raw, sends `bytes`, and returns what comes back until EOF.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(bytes).await.unwrap();
    // Done sending: a frame cut short is then seen as such.
    s.shutdown(std::net::Shutdown::Write).await.unwrap();
    let mut back = Vec::new();
    timeout(Duration::from_secs(20), async {
        let _ = s.read_to_end(&mut back).await;
        Ok(())
    })
    .await
    .expect("the node closes the connection");
    (local, back)
}

fn hello_frame(h: Hello) -> Vec<u8> {
    let mut out = Vec::new();
    h.encode(&mut out);
    out
}

/// Nodes 1 and 2 (default settings), each linked to the other, both
/// links up.
async fn linked_pair() -> (Rc<Transport>, Rc<Transport>) {
    let (a, addr_a) = start(CLUSTER, 1, TransportConfig::default());
    let (b, addr_b) = start(CLUSTER, 2, TransportConfig::default());
    a.add_peer(2, addr_b);
    b.add_peer(1, addr_a);
    a.wait_up(2).await;
    b.wait_up(1).await;
    (a, b)
}

#[test]
fn two_shards_exchange_a_burst_both_ways_in_order() {
    run(|_| async {
        let (a, b) = linked_pair().await;
        const N: u64 = 20_000;
        for i in 0..N {
            assert!(a.send(2, i % 7, &append(1, 2, i, 4, 64)));
            assert!(b.send(1, i % 5, &append(2, 1, i, 1, 16)));
            if i % 500 == 499 {
                futures_lite::future::yield_now().await;
            }
        }
        let (mut at_b, mut at_a) = (Vec::new(), Vec::new());
        recv(&b, N as usize, &mut at_b).await;
        recv(&a, N as usize, &mut at_a).await;
        for (i, (g, node, m)) in at_b.iter().enumerate() {
            let want = (i as u64 % 7, 1, &append(1, 2, i as u64, 4, 64));
            assert_eq!((*g, *node, m), want);
        }
        for (i, (g, node, m)) in at_a.iter().enumerate() {
            let want = (i as u64 % 5, 2, &append(2, 1, i as u64, 1, 16));
            assert_eq!((*g, *node, m), want);
        }
        let s = a.stats();
        assert_eq!((s.msgs_queued, s.msgs_dropped), (N, 0));
        assert!(
            s.writes * 10 < N,
            "messages of a turn are coalesced: {} writes for {N} messages",
            s.writes
        );
        assert_eq!(b.stats().msgs_received, N);
    });
}

/// Heartbeats of many groups queued in one turn go out as coalesced
/// frames (one per 1024, `wire::KIND_HEARTBEATS`), not one Raft frame
/// each, and arrive as the messages they stand for, interleaved with an
/// Append in the same batch.
#[test]
fn heartbeats_of_many_groups_go_in_one_coalesced_frame() {
    run(|_| async {
        let (a, b) = linked_pair().await;
        const GROUPS: u64 = 3000;
        let beat = |g: u64| Message {
            from: 1,
            to: 2,
            term: 4,
            body: if g.is_multiple_of(2) {
                Body::Heartbeat {
                    commit: g,
                    round: g + 1,
                }
            } else {
                Body::HeartbeatResp { round: g + 1 }
            },
        };
        let before = a.stats();
        for g in 0..GROUPS {
            assert!(a.send(2, g, &beat(g)));
        }
        assert!(a.send(2, 7, &append(1, 2, 5, 1, 8)));
        let mut got = Vec::new();
        recv(&b, GROUPS as usize + 1, &mut got).await;
        let s = a.stats();
        assert_eq!(s.heartbeats_coalesced - before.heartbeats_coalesced, GROUPS);
        assert_eq!(
            s.heartbeat_frames - before.heartbeat_frames,
            GROUPS.div_ceil(1024),
            "one frame per 1024 heartbeats of a batch"
        );
        let appends: Vec<_> = got
            .iter()
            .filter(|(_, _, m)| matches!(m.body, Body::Append { .. }))
            .collect();
        assert_eq!(appends.len(), 1);
        let mut beats: Vec<_> = got
            .into_iter()
            .filter(|(_, _, m)| !matches!(m.body, Body::Append { .. }))
            .collect();
        beats.sort_by_key(|(g, _, _)| *g);
        for (i, (g, node, m)) in beats.iter().enumerate() {
            assert_eq!((*g, *node, m), (i as u64, 1, &beat(i as u64)));
        }
    });
}

/// Regression: a reader whose socket always had bytes never yielded, so
/// the shard loop starved while the inbox grew (the transport bench's
/// slow rounds). Each read batch now yields: the shard sees messages in
/// batches of at most one receive buffer.
#[test]
fn a_flooding_peer_does_not_starve_the_shard() {
    run(|_| async {
        let (a, _) = start(CLUSTER, 1, TransportConfig::default());
        let (b, addr_b) = start(CLUSTER, 2, TransportConfig::default());
        a.add_peer(2, addr_b);
        a.wait_up(2).await;
        const N: usize = 60_000;
        let mut sent = 0;
        let sender = async {
            while sent < N {
                for _ in 0..2000 {
                    assert!(a.send(2, 0, &append(1, 2, sent as u64, 1, 16)));
                    sent += 1;
                }
                a.wait_queued_below(2, 1).await;
            }
        };
        let receiver = async {
            let (mut got, mut largest) = (Vec::new(), 0);
            while got.len() < N {
                b.inbox_ready().await;
                let before = got.len();
                b.drain_inbox(&mut got);
                largest = largest.max(got.len() - before);
            }
            largest
        };
        let ((), largest) = futures_lite::future::zip(sender, receiver).await;
        // 256 KiB of ~200-byte frames is about 1300 messages.
        assert!(largest <= 4096, "the shard saw {largest} messages at once");
    });
}

/// `inbox_msgs_max`: a shard that does not take its messages stops its
/// readers once the inbox holds that many (plus what one receive buffer
/// held); the rest waits in TCP and nothing is lost or reordered.
#[test]
fn a_full_inbox_stops_reading_and_loses_nothing() {
    run(|_| async {
        let (a, _) = start(CLUSTER, 1, TransportConfig::default());
        let small = TransportConfig {
            inbox_msgs_max: 16,
            recv_buffer_bytes: 4096,
            ..TransportConfig::default()
        };
        let (b, addr_b) = start(CLUSTER, 2, small.clone());
        a.add_peer(2, addr_b);
        a.wait_up(2).await;
        const N: usize = 2000;
        for i in 0..N {
            assert!(a.send(2, 3, &append(1, 2, i as u64, 1, 16)));
        }
        a.wait_queued_below(2, 1).await;
        eventually("the inbox fills", || {
            b.stats().msgs_received >= small.inbox_msgs_max as u64
        })
        .await;
        // Everything is in b's socket; give its reader every chance to go on.
        for _ in 0..5000 {
            futures_lite::future::yield_now().await;
        }
        // A frame is at least 16 bytes: one buffer holds at most 256.
        let bound = small.inbox_msgs_max + small.recv_buffer_bytes / 16;
        let held = b.stats().msgs_received as usize;
        assert!(
            held <= bound,
            "{held} messages taken in with the inbox full (bound {bound})"
        );
        assert!(held < N, "the reader stopped before the end: {held}");
        let mut got = Vec::new();
        recv(&b, N, &mut got).await;
        assert_eq!(got.len(), N);
        for (i, (g, node, m)) in got.iter().enumerate() {
            assert_eq!((*g, *node, m), (3, 1, &append(1, 2, i as u64, 1, 16)));
        }
    });
}

#[test]
fn garbage_and_impostors_are_cut_off_with_one_log_line_each_while_others_continue() {
    let logs = run(|logs| async move {
        let (a, _) = start(CLUSTER, 1, TransportConfig::default());
        let (b, addr_b) = start(CLUSTER, 2, TransportConfig::default());
        a.add_peer(2, addr_b);
        a.wait_up(2).await;
        let mut got = Vec::new();
        let mut sent = 0u64;
        let mut send_some = |a: &Transport| {
            for _ in 0..100 {
                assert!(a.send(2, 0, &append(1, 2, sent, 2, 32)));
                sent += 1;
            }
            sent as usize
        };
        let hello3 = hello_frame(me(CLUSTER, 3));
        let with_hello = |frame: Vec<u8>| [hello3.clone(), frame].concat();
        let mut bad_crc = Vec::new();
        encode_raft(&mut bad_crc, 0, &append(3, 2, 0, 1, 8));
        let last = bad_crc.len() - 20;
        bad_crc[last] ^= 0x40;
        let mut bad_archive = Vec::new();
        encode_frame(&mut bad_archive, KIND_RAFT, &[0u8; 64]);
        let mut wrong_kind = Vec::new();
        encode_frame(&mut wrong_kind, 99, b"what");
        let mut truncated = Vec::new();
        encode_raft(&mut truncated, 0, &append(3, 2, 0, 1, 8));
        truncated.truncate(truncated.len() - 16);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "bad frame magic",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ),
            ("frame checksum mismatch", with_hello(bad_crc)),
            ("bad message", with_hello(bad_archive)),
            ("unexpected frame kind 99", with_hello(wrong_kind)),
            ("ended inside a frame", with_hello(truncated)),
            ("unexpected frame kind 1 before the handshake", {
                let mut f = Vec::new();
                encode_raft(&mut f, 0, &append(3, 2, 0, 1, 8));
                f
            }),
        ];
        let n = cases.len();
        for (i, (reason, bytes)) in cases.into_iter().enumerate() {
            let (local, _) = raw_exchange(addr_b, &bytes).await;
            let lines = logs.lines_with(&[&local.to_string(), "closing peer connection"]);
            assert_eq!(lines.len(), 1, "one line for {reason}: {lines:?}");
            assert!(lines[0].contains(reason), "{reason}: {}", lines[0]);
            assert_eq!(b.stats().conns_rejected, i as u64 + 1);
            // The good link is untouched.
            let want = send_some(&a);
            recv(&b, want, &mut got).await;
        }
        assert_eq!(b.stats().conns_rejected, n as u64);
        assert!(a.is_up(2));
        assert_eq!(a.stats().disconnects, 0);
    });
    // A message whose sender replica lives elsewhere is not the
    // transport's to judge (it knows nodes, not replicas): the shard drops
    // it (`group::Routes::accept`, tests/replicas.rs).
    assert_eq!(logs.lines_with(&["WARN"]).len(), 6, "no other warnings");
}

#[test]
fn a_version_or_cluster_mismatch_is_refused_at_both_ends() {
    let logs = run(|_| async {
        let (b, addr_b) = start(CLUSTER, 2, TransportConfig::default());
        // A caller of an older protocol version: the answer, in this
        // node's version, says why.
        let mut old = hello_frame(me(CLUSTER, 5));
        old[4] = PROTOCOL_VERSION - 1;
        let (_, back) = raw_exchange(addr_b, &old).await;
        let (f, _) = ringraft::wire::decode_frame(&back, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(f.kind, KIND_HELLO_REPLY);
        match decode_reply(f.payload) {
            Err(HelloError::Refused { node: 2, reason }) => {
                let want = format!("protocol version {}", PROTOCOL_VERSION - 1);
                assert!(reason.contains(&want), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // A hello that names another version inside a v1 frame.
        let (_, back) = raw_exchange(
            addr_b,
            &hello_frame(Hello {
                version: PROTOCOL_VERSION as u32 + 1,
                ..me(CLUSTER, 5)
            }),
        )
        .await;
        let (f, _) = ringraft::wire::decode_frame(&back, 1 << 20)
            .unwrap()
            .unwrap();
        assert!(matches!(
            decode_reply(f.payload),
            Err(HelloError::Refused { reason, .. })
                if reason.contains(&format!("protocol version {}", PROTOCOL_VERSION + 1))
        ));
        // A transport of another cluster: refused by b, and it says so too.
        let (c, _) = start(0xBAD, 3, TransportConfig::default());
        c.add_peer(2, addr_b);
        eventually("c to hear the refusal", || {
            c.stats().handshakes_refused >= 1
        })
        .await;
        assert!(!c.is_up(2));
        assert!(
            !c.send(2, 0, &append(3, 2, 0, 1, 1)),
            "nothing is sent on a refused link"
        );
        assert_eq!(b.stats().handshakes_refused, 3);
        // c redials with backoff; b says why once, not once per redial.
        eventually("c to redial a few times", || {
            b.stats().handshakes_refused >= 6
        })
        .await;
        assert_eq!(b.stats().msgs_received, 0);
        c.close();
    });
    assert_eq!(
        logs.lines_with(&["closing peer connection", "cluster id 0xbad"])
            .len(),
        1
    );
    assert_eq!(
        logs.lines_with(&["cannot reach peer", "refused by node 2", "cluster id 0xbad"])
            .len(),
        1,
        "the dialer logs the refusal once, not once per retry"
    );
}

/// Node 3 loses its store and comes back as a new incarnation: node 2,
/// which met the old one, refuses it in both directions (its dial is
/// refused by node 3, which sees that node 2 knew another incarnation of
/// it; node 3's dial is refused by node 2), no message passes, and each end
/// logs its refusal once however often the links redial.
#[test]
fn a_peer_whose_store_changed_is_refused_at_both_ends() {
    let logs = run(|_| async {
        let cfg = TransportConfig {
            reconnect_backoff_ms_min: 5,
            reconnect_backoff_ms_max: 20,
            ..TransportConfig::default()
        };
        let (b, addr_b) = start(CLUSTER, 2, cfg.clone());
        let (c, addr_c) = start(CLUSTER, 3, cfg.clone());
        b.add_peer(3, addr_c);
        c.add_peer(2, addr_b);
        b.wait_up(3).await;
        c.wait_up(2).await;
        c.close();
        let reborn = Hello {
            incarnation: 0x3333,
            ..me(CLUSTER, 3)
        };
        assert_ne!(reborn.incarnation, me(CLUSTER, 3).incarnation);
        let (c2, addr_c2) = start_as(reborn, cfg);
        b.remove_peer(3);
        b.add_peer(3, addr_c2);
        c2.add_peer(2, addr_b);
        let refused_before = b.stats().handshakes_refused;
        // Several redials each way.
        eventually("both ends to refuse several times", || {
            b.stats().handshakes_refused >= refused_before + 6 && c2.stats().handshakes_refused >= 6
        })
        .await;
        assert!(!b.is_up(3) && !c2.is_up(2));
        assert!(!b.send(3, 0, &append(2, 3, 0, 1, 1)), "nothing sent to it");
        assert!(!c2.send(2, 0, &append(3, 2, 0, 1, 1)), "nothing sent by it");
        b.close();
        c2.close();
    });
    let warned = |needle: &str| {
        logs.lines_with(&["WARN", "closing peer connection", needle])
            .len()
    };
    assert_eq!(
        warned("node 3 comes back with a new store"),
        1,
        "at node 2, once"
    );
    assert_eq!(
        warned("node 2 knew this node (3) as incarnation"),
        1,
        "at node 3, once"
    );
}

#[test]
fn a_full_peer_queue_drops_raft_messages_and_counts_them() {
    run(|_| async {
        let cfg = TransportConfig {
            peer_queue_bytes_max: 64 << 10,
            ..TransportConfig::default()
        };
        let (a, _) = start(CLUSTER, 1, cfg);
        let (b, addr_b) = start(CLUSTER, 2, TransportConfig::default());
        a.add_peer(2, addr_b);
        a.wait_up(2).await;
        // One turn, no yield: the writer cannot drain in between.
        let accepted = (0..1000)
            .filter(|&i| a.send(2, 0, &append(1, 2, i, 1, 1024)))
            .count();
        let s = a.stats();
        assert!(
            (50..=70).contains(&accepted),
            "about 64 KiB of 1 KiB messages fit: {accepted}"
        );
        assert_eq!(s.msgs_dropped, 1000 - accepted as u64);
        let mut got = Vec::new();
        recv(&b, accepted, &mut got).await;
        // The queue drained: messages are accepted again.
        assert!(a.send(2, 0, &append(1, 2, 5000, 1, 1024)));
        recv(&b, accepted + 1, &mut got).await;
        assert_eq!(got.len(), accepted + 1);
    });
}

#[test]
fn a_lost_link_is_reported_unreachable_and_redialed() {
    run(|_| async {
        let cfg = TransportConfig {
            reconnect_backoff_ms_min: 5,
            reconnect_backoff_ms_max: 50,
            ..TransportConfig::default()
        };
        let (a, _) = start(CLUSTER, 1, cfg);
        // A hand-driven peer "node 2".
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        a.add_peer(2, l.local_addr().unwrap());
        let handshake = |mut s: TcpStream| async move {
            let mut r = FrameReader::new(4096, 1 << 20);
            let (k, p) = r.next(&mut s).await.unwrap().unwrap();
            assert_eq!(k, KIND_HELLO);
            let h = Hello::decode(&p).unwrap();
            // Node 2 is unknown at the first dial, known by its
            // incarnation afterwards.
            assert!(
                [0, me(CLUSTER, 2).incarnation].contains(&h.expected),
                "{h:?}"
            );
            assert_eq!(Hello { expected: 0, ..h }, me(CLUSTER, 1));
            let mut out = Vec::new();
            encode_reply(&mut out, &me(CLUSTER, 2), Ok(()));
            s.write_all(&out).await.unwrap();
            (s, r)
        };
        let (s, _) = handshake(l.accept().await.unwrap()).await;
        a.wait_up(2).await;
        drop(s);
        let mut i = 0;
        eventually("the link to notice the close", || {
            a.send(2, 0, &append(1, 2, i, 1, 1));
            i += 1;
            !a.is_up(2)
        })
        .await;
        let mut down = Vec::new();
        a.take_unreachable(&mut down);
        assert_eq!(down, vec![2]);
        let (mut s, mut r) = handshake(l.accept().await.unwrap()).await;
        a.wait_up(2).await;
        assert!(a.send(2, 4, &append(1, 2, 77, 1, 5)));
        let (k, p) = r.next(&mut s).await.unwrap().unwrap();
        assert_eq!(k, KIND_RAFT);
        assert_eq!(decode_raft(&p).unwrap(), (4, append(1, 2, 77, 1, 5)));
        let st = a.stats();
        assert_eq!((st.connects, st.disconnects), (2, 1));
    });
}

/// A link waiting out a long redial backoff dials at once when the peer
/// connects here (it is evidently up again): a restarted node's groups
/// hear from their leaders without waiting for the backoff.
#[test]
fn a_peer_that_connects_cuts_the_redial_backoff_short() {
    run(|_| async {
        let slow = TransportConfig {
            reconnect_backoff_ms_min: 60_000,
            reconnect_backoff_ms_max: 60_000,
            ..TransportConfig::default()
        };
        let (a, addr_a) = start(CLUSTER, 1, slow.clone());
        // Node 2's address, with nothing listening yet: the first dial
        // fails and the link waits its 30 to 60 s.
        let addr_b = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        a.add_peer(2, addr_b);
        let mut down = Vec::new();
        eventually("the first dial to fail", || {
            a.take_unreachable(&mut down);
            !down.is_empty()
        })
        .await;
        // Node 2 comes up there and dials node 1.
        let l = TcpListener::bind(addr_b).unwrap();
        let b = Transport::new(me(CLUSTER, 2), slow);
        glommio::spawn_local(b.clone().serve(l)).detach();
        b.add_peer(1, addr_a);
        timeout(Duration::from_secs(10), async {
            a.wait_up(2).await;
            Ok(())
        })
        .await
        .expect("the link to node 2 waited out its backoff");
        assert!(a.send(2, 3, &append(1, 2, 9, 1, 4)));
        let mut got = Vec::new();
        recv(&b, 1, &mut got).await;
        assert_eq!(got, vec![(3, 1, append(1, 2, 9, 1, 4))]);
    });
}

/// Idle links ping (`peer_ping_ms`); a peer heard before and silent for
/// `peer_silence_ms` is reported unreachable once, and reachable when it
/// is heard again; a peer whose process closes its connections is
/// reported (its connection ends, or the next ping fails).
#[test]
fn idle_links_ping_and_silent_or_closed_peers_are_reported() {
    run(|_| async {
        let cfg = TransportConfig {
            peer_ping_ms: 10,
            peer_silence_ms: 80,
            reconnect_backoff_ms_min: 5,
            reconnect_backoff_ms_max: 50,
            ..TransportConfig::default()
        };
        assert!(TransportConfig {
            peer_silence_ms: 19,
            ..cfg.clone()
        }
        .validate()
        .unwrap_err()
        .to_string()
        .contains("peer_silence_ms = 19"));
        let (a, a_addr) = start(CLUSTER, 1, cfg.clone());
        let (b, b_addr) = start(CLUSTER, 2, cfg);
        a.add_peer(2, b_addr);
        b.add_peer(1, a_addr);
        a.wait_up(2).await;
        b.wait_up(1).await;
        let mut seen = Vec::new();
        eventually("the link up reported reachable", || {
            a.take_reachable(&mut seen);
            seen == [2]
        })
        .await;
        eventually("idle links to ping", || {
            a.stats().pings_sent > 2 && b.stats().pings_sent > 2
        })
        .await;
        let mut down = Vec::new();
        a.take_unreachable(&mut down);
        assert!(down.is_empty(), "pings keep an idle peer heard: {down:?}");
        // Node 2 falls silent to node 1 (its frames dropped, as behind a
        // cut): reported once.
        a.set_blocked(vec![2]);
        eventually("the silent peer reported", || {
            a.take_unreachable(&mut down);
            down == [2]
        })
        .await;
        glommio::timer::sleep(Duration::from_millis(200)).await;
        down.clear();
        a.take_unreachable(&mut down);
        assert!(down.is_empty(), "reported once per silence: {down:?}");
        assert_eq!(a.stats().peers_silent, 1);
        // Heard again: reachable.
        a.set_blocked(vec![]);
        seen.clear();
        eventually("the peer heard again reported reachable", || {
            a.take_reachable(&mut seen);
            seen == [2]
        })
        .await;
        // Node 2's process goes: node 1 hears it with nothing to send.
        b.close();
        down.clear();
        eventually("the closed peer reported", || {
            a.take_unreachable(&mut down);
            down.contains(&2)
        })
        .await;
        assert!(a.stats().disconnects >= 1, "{:?}", a.stats());
    });
}

/// A link closed on purpose (its node removed, or its address replaced)
/// reports nothing about its node: only the link that replaces it does.
/// Its task ran on after the close and said "unreachable", after the new
/// link had said "reachable", so the shard held a live node unreachable
/// for good and its leaders quiesced without that node's replicas (the
/// chaos test of moves: a node's replicas behind in every range).
#[test]
fn a_link_closed_on_purpose_reports_nothing_about_its_node() {
    run(|_| async {
        let cfg = TransportConfig {
            reconnect_backoff_ms_min: 5,
            reconnect_backoff_ms_max: 50,
            ..TransportConfig::default()
        };
        let (a, _) = start(CLUSTER, 1, cfg.clone());
        let (_b, b_addr) = start(CLUSTER, 2, cfg);
        let (mut seen, mut down) = (Vec::new(), Vec::new());
        a.add_peer(2, b_addr);
        a.wait_up(2).await;
        eventually("the link up reported reachable", || {
            a.take_reachable(&mut seen);
            seen == [2]
        })
        .await;
        // Removed and added again, then replaced (added again): each time
        // the closed link's task runs on (it counts its disconnect), and
        // only the new link's "reachable" is heard.
        for (closed, remove_first) in [(1, true), (2, false)] {
            if remove_first {
                a.remove_peer(2);
            }
            a.add_peer(2, b_addr);
            a.wait_up(2).await;
            eventually("the closed link's task to end", || {
                a.stats().disconnects == closed
            })
            .await;
            seen.clear();
            eventually("the new link reported reachable", || {
                a.take_reachable(&mut seen);
                seen == [2]
            })
            .await;
            a.take_unreachable(&mut down);
            assert!(
                down.is_empty(),
                "a closed link reported its node unreachable ({closed}): {down:?}"
            );
        }
    });
}

fn get(id: u64, key: &str) -> Request {
    Request {
        id,
        group: 0,
        client: 9,
        seq: 0,
        ack: 0,
        op: Op::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
            mode: ReadMode::Linearizable,
        },
    }
}

/// Answers every request with its key (and `pad` bytes), until `stop`.
fn echo_server(svc: Rc<ClientService>, pad: usize, stop: Rc<RefCell<bool>>) {
    glommio::spawn_local(async move {
        let mut reqs = Vec::new();
        while !*stop.borrow() {
            svc.ready().await;
            svc.drain(&mut reqs);
            for (conn, r) in reqs.drain(..) {
                let reply = match r.op {
                    Op::Get { key, .. } => {
                        let mut v = key.to_vec();
                        v.resize(key.len() + pad, 0);
                        Reply::Value(Some(Bytes::from(v)))
                    }
                    // What a client asks first: one group, led by node 1.
                    Op::ClusterMap => Reply::Map(ClusterMap {
                        groups: 1,
                        shards: 1,
                        nodes: Vec::new(),
                        leaders: vec![(0, 1)],
                        replication_factor: 1,
                        meta_leader: 0,
                    }),
                    Op::Ranges { .. } => whole_range(),
                    other => panic!("the echo server got {other:?}"),
                };
                svc.respond(
                    conn,
                    &Response {
                        id: r.id,
                        result: Ok(reply),
                    },
                );
            }
        }
    })
    .detach();
}

async fn client(addr: SocketAddr) -> (TcpStream, FrameReader) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello_frame(me(CLUSTER, 0))).await.unwrap();
    let mut r = FrameReader::new(1 << 20, 16 << 20);
    let (k, p) = r.next(&mut s).await.unwrap().unwrap();
    assert_eq!(k, KIND_HELLO_REPLY);
    assert_eq!(decode_reply(&p), Ok(1));
    (s, r)
}

async fn responses(s: &mut TcpStream, r: &mut FrameReader, n: usize) -> Vec<Response> {
    let mut out = Vec::new();
    while out.len() < n {
        let (k, p) = r.next(s).await.unwrap().expect("a response");
        assert_eq!(k, KIND_RESPONSE);
        out.push(decode_response(&p).unwrap());
    }
    out
}

#[test]
fn a_client_has_at_most_client_inflight_max_requests_in_the_shard() {
    run(|_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let cfg = TransportConfig {
            client_inflight_max: 8,
            ..TransportConfig::default()
        };
        let svc = ClientService::new(me(CLUSTER, 1), cfg);
        glommio::spawn_local(svc.clone().serve(l)).detach();
        let (mut s, mut r) = client(addr).await;
        let mut out = Vec::new();
        for id in 0..20 {
            encode_request(&mut out, &get(id, "k"));
        }
        s.write_all(&out).await.unwrap();
        // Nobody answers: exactly the bound is taken in.
        let mut reqs = Vec::new();
        eventually("8 requests", || {
            svc.drain(&mut reqs);
            reqs.len() >= 8
        })
        .await;
        glommio::timer::sleep(Duration::from_millis(100)).await;
        svc.drain(&mut reqs);
        assert_eq!(reqs.len(), 8, "no more than client_inflight_max");
        // Each answer lets one more in.
        for (conn, r) in reqs.drain(..3) {
            svc.respond(
                conn,
                &Response {
                    id: r.id,
                    result: Ok(Reply::Done),
                },
            );
        }
        eventually("3 more", || {
            svc.drain(&mut reqs);
            reqs.len() >= 8
        })
        .await;
        assert_eq!(responses(&mut s, &mut r, 3).await.len(), 3);
        assert_eq!(svc.stats().requests, 11);
    });
}

/// Dropping the last handle of a `Client` closes its connections: the
/// node sees them go (they used to stay open until the executor ended).
#[test]
fn a_dropped_client_closes_its_connections() {
    run(|_| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let svc = ClientService::new(me(CLUSTER, 1), TransportConfig::default());
        glommio::spawn_local(svc.clone().serve(l)).detach();
        echo_server(svc.clone(), 0, Rc::new(RefCell::new(false)));
        let mut cfg = ringraft::client::ClientConfig::new(vec![addr]);
        cfg.cluster_id = CLUSTER;
        let cl = ringraft::client::Client::connect(cfg).await.unwrap();
        let other = cl.clone();
        assert_eq!(cl.get(b"k").await.unwrap(), Some(Bytes::from_static(b"k")));
        assert_eq!(svc.conns(), 1);
        drop(cl);
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(svc.conns(), 1, "another handle still uses it");
        assert_eq!(
            other.get(b"j").await.unwrap(),
            Some(Bytes::from_static(b"j"))
        );
        drop(other);
        eventually("the connection closed", || svc.conns() == 0).await;
    });
}

/// A write's outcome is unknown once any attempt may have been applied:
/// an attempt answered Timeout (the node gave up waiting, the entry may
/// still commit) followed by DiskFull refusals must not end as DiskFull —
/// a definite "not applied" the caller would trust. Found by the chaos
/// soak (a value read that the history said was never written).
#[test]
fn a_write_refused_after_an_unknown_attempt_is_reported_unknown() {
    for first in [ClientError::Timeout, ClientError::DiskFull] {
        let expect_unknown = first == ClientError::Timeout;
        let got = run_on(move || async move {
            let first = first.clone();
            let mut puts = 0;
            let addr = stub_node(move |op| match op {
                Op::Put { .. } => {
                    puts += 1;
                    Err(if puts == 1 {
                        first.clone()
                    } else {
                        ClientError::DiskFull
                    })
                }
                other => panic!("unexpected {other:?}"),
            });
            let mut cfg = ringraft::client::ClientConfig::new(vec![addr]);
            cfg.cluster_id = CLUSTER;
            cfg.op_timeout_ms = 300;
            let cl = ringraft::client::Client::connect(cfg).await.unwrap();
            cl.put(b"k", b"v").await.unwrap_err()
        });
        match expect_unknown {
            true => assert!(got.outcome_unknown(), "{got:?}"),
            false => assert!(
                matches!(got, ringraft::client::Error::Server(ClientError::DiskFull)),
                "only refusals: a refusal ({got:?})"
            ),
        }
    }
}

/// A one-node, one-group stub node on this executor: the cluster map and
/// the ranges answered as a node would, every other request by `answer`.
fn stub_node(mut answer: impl FnMut(&Op) -> Result<Reply, ClientError> + 'static) -> SocketAddr {
    stub_node_of(move |r| match &r.op {
        Op::Ranges { .. } => Ok(whole_range()),
        op => answer(op),
    })
}

/// A stub node answering the cluster map as a node would, every other
/// request (ranges included) by `answer`.
fn stub_node_of(
    mut answer: impl FnMut(&Request) -> Result<Reply, ClientError> + 'static,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let svc = ClientService::new(me(CLUSTER, 1), TransportConfig::default());
    glommio::spawn_local(svc.clone().serve(l)).detach();
    glommio::spawn_local(async move {
        let mut reqs = Vec::new();
        loop {
            svc.ready().await;
            svc.drain(&mut reqs);
            for (conn, r) in reqs.drain(..) {
                let result = match &r.op {
                    Op::ClusterMap => Ok(Reply::Map(ClusterMap {
                        groups: 1,
                        shards: 1,
                        nodes: Vec::new(),
                        leaders: vec![(0, 1)],
                        replication_factor: 1,
                        meta_leader: 0,
                    })),
                    _ => answer(&r),
                };
                svc.respond(conn, &Response { id: r.id, result });
            }
        }
    })
    .detach();
    addr
}

/// A descriptor of range `id`, keys `[start, end)`, at `version`, one
/// replica on node 1.
fn range_at(id: u64, start: &'static [u8], end: &'static [u8], version: u64) -> Bytes {
    use ringraft::meta::{Epoch, RangeDesc, RangeReplica, ReplicaRole};
    RangeDesc {
        id,
        start: Bytes::from_static(start),
        end: Bytes::from_static(end),
        epoch: Epoch {
            version,
            conf_ver: 0,
        },
        replicas: vec![RangeReplica {
            replica: 1,
            node: 1,
            shard: 0,
            role: ReplicaRole::Voter,
        }],
    }
    .to_bytes()
}

/// Range 0 split at "m" (version 1, range 1 on the right), but the
/// replicas the client asks for the map have not applied the split yet:
/// for a while they still report range 0 over every key (version 0), and
/// none reports range 1 (no leader yet). The client narrows range 0 to
/// the bounds its refusal gave, refuses the stale reports, and finds
/// range 1 once it is reported. Regression: the client forgot range 0 on
/// the refusal, took the stale report back each time, and gave up after
/// `KEY_RANGE_RETRIES_MAX` answers ("the nodes disagree"), seen in CI
/// when a range split every ~100 ms under writes.
#[test]
fn a_refusal_from_a_split_range_outlives_stale_reports_of_its_old_bounds() {
    use ringraft::client::KEY_RANGE_RETRIES_MAX;
    let (v, asked) = run_on(|| async move {
        let asked = Rc::new(RefCell::new((0u32, 0u32)));
        let counts = asked.clone();
        let stale = KEY_RANGE_RETRIES_MAX + 3;
        let addr = stub_node_of(move |r| {
            let mut c = counts.borrow_mut();
            match (&r.op, r.group) {
                (Op::Ranges { .. }, _) => {
                    c.0 += 1;
                    if c.0 <= stale {
                        Ok(Reply::Ranges(vec![range_at(0, b"", b"", 0)]))
                    } else {
                        Ok(Reply::Ranges(vec![
                            range_at(0, b"", b"m", 1),
                            range_at(1, b"m", b"", 1),
                        ]))
                    }
                }
                (Op::Get { key, .. }, 0) => {
                    c.1 += 1;
                    Err(ClientError::KeyNotInRange {
                        key: key.clone(),
                        start: Bytes::new(),
                        end: Bytes::from_static(b"m"),
                        version: 1,
                    })
                }
                (Op::Get { .. }, 1) => Ok(Reply::Value(Some(Bytes::from_static(b"right")))),
                (other, g) => panic!("unexpected {other:?} to group {g}"),
            }
        });
        let mut cfg = ringraft::client::ClientConfig::new(vec![addr]);
        cfg.cluster_id = CLUSTER;
        let cl = ringraft::client::Client::connect(cfg).await.unwrap();
        let v = cl.get(b"z").await;
        let asked = *asked.borrow();
        (v, asked)
    });
    assert_eq!(v.unwrap(), Some(Bytes::from_static(b"right")));
    assert_eq!(asked.1, 1, "range 0 is asked once: its refusal is kept");
    assert!(asked.0 > KEY_RANGE_RETRIES_MAX + 3, "{asked:?}");
}

/// A node that keeps answering `KeyNotInRange` (nodes bootstrapped with
/// other cuts) is asked `KEY_RANGE_RETRIES_MAX` more times, the map
/// fetched again each time, and then the client says what is likely
/// wrong, not "refresh the range map" (its own job).
#[test]
fn nodes_that_keep_disagreeing_on_a_keys_range_end_in_an_error_naming_why() {
    use ringraft::client::KEY_RANGE_RETRIES_MAX;
    let (err, gets) = run_on(|| async move {
        let gets = Rc::new(std::cell::Cell::new(0u32));
        let counted = gets.clone();
        let addr = stub_node(move |op| match op {
            Op::Get { key, .. } => {
                counted.set(counted.get() + 1);
                Err(ClientError::KeyNotInRange {
                    key: key.clone(),
                    start: Bytes::from_static(b"x"),
                    end: Bytes::new(),
                    version: 0,
                })
            }
            other => panic!("unexpected {other:?}"),
        });
        let mut cfg = ringraft::client::ClientConfig::new(vec![addr]);
        cfg.cluster_id = CLUSTER;
        let cl = ringraft::client::Client::connect(cfg).await.unwrap();
        let e = cl.get(b"k").await.unwrap_err().to_string();
        (e, gets.get())
    });
    assert_eq!(gets, KEY_RANGE_RETRIES_MAX + 1);
    assert!(err.contains("the nodes disagree"), "{err}");
    assert!(err.contains("--initial-split-keys"), "{err}");
}

#[test]
fn clients_pipeline_and_a_malformed_request_is_answered_not_fatal() {
    run(|logs| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let svc = ClientService::new(me(CLUSTER, 1), TransportConfig::default());
        glommio::spawn_local(svc.clone().serve(l)).detach();
        echo_server(svc.clone(), 0, Rc::new(RefCell::new(false)));
        let (mut s, mut r) = client(addr).await;
        let (mut other, mut other_r) = client(addr).await;
        // Three pipelined requests and a sound frame holding garbage.
        let mut out = Vec::new();
        for id in 1..=3 {
            encode_request(&mut out, &get(id, &format!("k{id}")));
        }
        encode_frame(&mut out, KIND_REQUEST, &[0xEE; 48]);
        s.write_all(&out).await.unwrap();
        let mut got = responses(&mut s, &mut r, 4).await;
        got.sort_by_key(|x| x.id);
        for id in 1..=3u64 {
            assert_eq!(
                got[id as usize - 1].result,
                Ok(Reply::Value(Some(Bytes::from(format!("k{id}")))))
            );
        }
        assert_eq!(got[3].id, UNATTRIBUTED_ID);
        assert!(matches!(got[3].result, Err(ClientError::BadRequest { .. })));
        // The same connection carries on.
        let mut out = Vec::new();
        encode_request(&mut out, &get(4, "again"));
        s.write_all(&out).await.unwrap();
        assert_eq!(responses(&mut s, &mut r, 1).await[0].id, 4);
        // Lost framing closes that connection only.
        let (local, _) =
            raw_exchange(addr, &[hello_frame(me(CLUSTER, 0)), vec![1; 64]].concat()).await;
        let mut out = Vec::new();
        encode_request(&mut out, &get(5, "other"));
        other.write_all(&out).await.unwrap();
        assert_eq!(responses(&mut other, &mut other_r, 1).await[0].id, 5);
        let st = svc.stats();
        assert_eq!((st.requests, st.bad_requests, st.conns_rejected), (5, 1, 1));
        let lines = logs.lines_with(&[&local.to_string(), "closing client connection"]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("bad frame magic"), "{}", lines[0]);
    });
}

#[test]
fn responses_are_never_dropped_a_client_that_does_not_read_stops_being_read() {
    run(|_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let cfg = TransportConfig {
            client_queue_bytes_max: 64 << 10,
            client_inflight_max: 16,
            ..TransportConfig::default()
        };
        let svc = ClientService::new(me(CLUSTER, 1), cfg);
        glommio::spawn_local(svc.clone().serve(l)).detach();
        // 1 MiB per response: 200 of them are far more than socket buffers.
        echo_server(svc.clone(), 1 << 20, Rc::new(RefCell::new(false)));
        let (mut s, mut r) = client(addr).await;
        let mut out = Vec::new();
        for id in 0..200 {
            encode_request(&mut out, &get(id, "k"));
        }
        s.write_all(&out).await.unwrap();
        // The client reads nothing yet: the node stops taking its requests.
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let taken = svc.stats().requests;
        assert!(taken < 200, "reading stopped at the bound, took {taken}");
        assert!(taken >= 16, "up to client_inflight_max were taken: {taken}");
        assert_eq!(svc.stats().responses_orphaned, 0);
        // Once it reads, every response arrives.
        let got = responses(&mut s, &mut r, 200).await;
        let mut ids: Vec<u64> = got.iter().map(|x| x.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..200).collect::<Vec<_>>());
        assert_eq!(svc.stats().requests, 200);
    });
}

/// `client_idle_timeout_ms`: a connection with nothing in flight is closed
/// by the idle sweep, one with a request in flight is not; and
/// `client_conns_max`: the connection past the bound is refused with a
/// reason naming the setting.
#[test]
fn idle_clients_are_closed_and_the_one_past_client_conns_max_is_refused() {
    run(|_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let cfg = TransportConfig {
            client_idle_timeout_ms: 100,
            client_conns_max: 2,
            ..TransportConfig::default()
        };
        let svc = ClientService::new(me(CLUSTER, 1), cfg);
        glommio::spawn_local(svc.clone().serve(l)).detach();
        let (_idle, _ri) = client(addr).await;
        let (mut busy, _rb) = client(addr).await;
        let mut out = Vec::new();
        encode_request(&mut out, &get(1, "k"));
        busy.write_all(&out).await.unwrap(); // nobody answers it
        let mut reqs = Vec::new();
        eventually("the busy request", || {
            svc.drain(&mut reqs);
            !reqs.is_empty()
        })
        .await;
        // A third connection, past the bound.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello_frame(me(CLUSTER, 0))).await.unwrap();
        let mut r = FrameReader::new(4096, 1 << 20);
        let (k, p) = r.next(&mut s).await.unwrap().unwrap();
        assert_eq!(k, KIND_HELLO_REPLY);
        match decode_reply(&p) {
            Err(HelloError::Refused { reason, .. }) => {
                assert!(reason.contains("client-conns-max"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(svc.stats().conns_refused_full, 1);
        eventually("the idle connection to be closed", || {
            svc.stats().conns_closed_idle == 1 && svc.conns() == 1
        })
        .await;
        // Several more sweeps: the one with a request in flight stays.
        glommio::timer::sleep(Duration::from_millis(500)).await;
        assert_eq!((svc.stats().conns_closed_idle, svc.conns()), (1, 1));
        svc.close();
    });
}

/// A stub node whose map has range 0 over every key until range 0 is
/// asked `Promote`; from then on range 0 is split at "m" and range 1 holds
/// the rest (split off while the operation ran). Each group asked is
/// pushed on the returned list.
fn stub_splitting_during_an_operation() -> (SocketAddr, Rc<RefCell<Vec<u64>>>) {
    let asked = Rc::new(RefCell::new(Vec::new()));
    let seen = asked.clone();
    let addr = stub_node_of(move |r| match (&r.op, r.group) {
        (Op::Ranges { .. }, _) if seen.borrow().is_empty() => {
            Ok(Reply::Ranges(vec![range_at(0, b"", b"", 0)]))
        }
        (Op::Ranges { .. }, _) => Ok(Reply::Ranges(vec![
            range_at(0, b"", b"m", 1),
            range_at(1, b"m", b"", 1),
        ])),
        (Op::Promote { node: 2 }, g) => {
            seen.borrow_mut().push(g);
            Ok(Reply::Done)
        }
        (other, g) => panic!("unexpected {other:?} to group {g}"),
    });
    (addr, asked)
}

/// An operation over every range (`Client::admin_every_group`, and `ctl
/// promote` and the like through `Client::ranges_left`) lists the ranges
/// again after its pass: range 1, split off range 0 while range 0 was
/// being asked, is asked too, and each range once. Regression: `ctl`'s
/// every-range commands listed the ranges once and missed it (the `ctl`
/// half of this test failed so: asked `[0]`).
#[test]
fn an_operation_over_every_range_reaches_a_range_split_off_during_it() {
    let asked = run_on(|| async move {
        let (addr, asked) = stub_splitting_during_an_operation();
        let mut cfg = ringraft::client::ClientConfig::new(vec![addr]);
        cfg.cluster_id = CLUSTER;
        let cl = ringraft::client::Client::connect(cfg).await.unwrap();
        cl.admin_every_group(Op::Promote { node: 2 }, Duration::from_secs(5))
            .await
            .unwrap();
        let v = asked.borrow().clone();
        v
    });
    assert_eq!(asked, vec![0, 1]);
    // The same through the command line, a step per range.
    let (asked, out) = run_on(|| async move {
        let (addr, asked) = stub_splitting_during_an_operation();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringraft"))
            .args(["ctl", "--cluster", &addr.to_string()])
            .args([
                "--cluster-id",
                &CLUSTER.to_string(),
                "-w",
                "json",
                "promote",
                "2",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The stub answers on this executor: wait without blocking it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ctl promote did not end within 60 s");
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let out = child.wait_with_output().unwrap();
        let v = asked.borrow().clone();
        (v, out)
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(asked, vec![0, 1], "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(
        doc["steps"],
        serde_json::json!([
            {"group": 0, "ok": true, "message": "group 0: done"},
            {"group": 1, "ok": true, "message": "group 1: done"},
        ]),
        "{doc}"
    );
}

/// `RANGE_LOOKUP_PAUSE_MS_MAX`: while no node reports a range holding a
/// key, the client looks it up again with pauses doubling from 10 ms up to
/// the bound, until its op timeout. Over 1.5 s that is about 17 lookups
/// (10, 20, 40, 80 ms, then every 100 ms; at least 11 asked, for timers
/// late on a loaded machine); without the bound, pauses of
/// 160, 320 and 640 ms would leave 8, and a range reported 300 ms late
/// would be found about that much later still.
#[test]
fn a_key_with_no_range_reported_is_looked_up_with_bounded_pauses() {
    use ringraft::client::RANGE_LOOKUP_PAUSE_MS_MAX;
    let (err, lookups) = run_on(|| async move {
        let lookups = Rc::new(std::cell::Cell::new(0u32));
        let counted = lookups.clone();
        let addr = stub_node_of(move |r| match &r.op {
            Op::Ranges { .. } => {
                counted.set(counted.get() + 1);
                Ok(Reply::Ranges(Vec::new()))
            }
            other => panic!("unexpected {other:?}"),
        });
        let mut cfg = ringraft::client::ClientConfig::new(vec![addr]);
        cfg.cluster_id = CLUSTER;
        cfg.op_timeout_ms = 1500;
        let cl = ringraft::client::Client::connect(cfg).await.unwrap();
        let before = lookups.get();
        let err = cl.get(b"k").await.unwrap_err();
        (err, lookups.get() - before)
    });
    assert!(
        err.to_string()
            .contains("no node reached reports a range holding key"),
        "{err}"
    );
    assert_eq!(RANGE_LOOKUP_PAUSE_MS_MAX, 100, "the counts below assume it");
    assert!(lookups >= 11, "{lookups} lookups in 1.5 s");
}

/// A range made by a split has an id above the bootstrap's groups (issue
/// #18; here range 5 of a cluster bootstrapped with 1 group). Its leader
/// is cached from an answer as a bootstrap group's is, and shown by
/// `leaders()`. Regression: the cache was a vector of the bootstrap's
/// groups, so a split range's leader was never kept: every request of it
/// went to its replicas in turn (2 of 3 to a follower, refused
/// `NotLeader` and sent again), and the balancer, `ctl nodes` and the
/// RESP port's INFO never saw its leader.
#[test]
fn a_split_ranges_leader_is_cached_as_a_bootstrap_groups_is() {
    let (before, after, listed) = run_on(|| async move {
        let addr = stub_node_of(move |r| match (&r.op, r.group) {
            (Op::Ranges { .. }, _) => Ok(Reply::Ranges(vec![
                range_at(0, b"", b"m", 1),
                range_at(5, b"m", b"", 1),
            ])),
            (Op::Get { .. }, 5) => Ok(Reply::Value(None)),
            (other, g) => panic!("unexpected {other:?} to group {g}"),
        });
        let mut cfg = ringraft::client::ClientConfig::new(vec![addr]);
        cfg.cluster_id = CLUSTER;
        let cl = ringraft::client::Client::connect(cfg).await.unwrap();
        let before = cl.leader_of(5);
        assert_eq!(cl.get(b"x").await.unwrap(), None);
        (before, cl.leader_of(5), cl.leaders())
    });
    assert_eq!(before, 0, "nothing told it yet");
    assert_eq!(after, 1, "the node that answered leads range 5");
    assert_eq!(listed, vec![1, 0, 0, 0, 0, 1], "indexed by group id");
}
