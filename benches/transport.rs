//! Loopback throughput of the transport against a raw TCP byte pump, in the
//! same run: two glommio executors (threads), one sending, one receiving.
//!
//! - raw: the sender writes 64 KiB buffers on a TCP socket, the receiver
//!   reads them into a 256 KiB buffer and discards them.
//! - transport: the sender's shard queues AppendEntries of 64 entries of
//!   1 KiB (64 KiB of payload) through `Transport::send` (encoded into the
//!   link's batch, written by its writer task); the receiver's transport
//!   validates and decodes every one of them into its inbox, which the
//!   receiving shard drains.
//!
//! Rounds alternate raw/transport; each figure is min/median/max over the
//! rounds, and the ratio is per round (transport / raw of the same round).
//!
//!   cargo bench --bench transport            # BENCH_ROUNDS=5 BENCH_BYTES=4GiB default
//!   BENCH_ROUNDS=9 cargo bench --bench transport
//!   BENCH_SPIN_US=200 cargo bench --bench transport   # executors spin before parking

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use ringraft::raft::{Body, Entry, EntryKind, Message};
use ringraft::transport::{Transport, TransportConfig};
use ringraft::wire::{Hello, PROTOCOL_VERSION};

const BATCH_BYTES: usize = 64 << 10;
const ENTRY_BYTES: usize = 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An executor thread; pinned to CPU `cpu` (mod CPUs) unless
/// BENCH_UNBOUND=1, so sender and receiver do not share a core.
fn executor<T: Send + 'static, F, Fut>(cpu: usize, f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let spin = env_u64("BENCH_SPIN_US", 0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = if env_u64("BENCH_UNBOUND", 0) == 1 {
        Placement::Unbound
    } else {
        Placement::Fixed(cpu % cpus)
    };
    let mut b = LocalExecutorBuilder::new(placement);
    if spin > 0 {
        b = b.spin_before_park(Duration::from_micros(spin));
    }
    let h = b.spawn(f).expect("executor");
    std::thread::spawn(move || h.join().expect("executor ran"))
}

/// Seconds to move `total` bytes with a raw pump.
fn raw_round(total: u64) -> f64 {
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let recv = executor(1, move || async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(l.local_addr().unwrap()).unwrap();
        let mut s = l.accept().await.unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        assert_eq!(got, total);
        Instant::now()
    });
    let addr = rx.recv().unwrap();
    let send = executor(0, move || async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let buf = vec![0x5Au8; BATCH_BYTES];
        let mut sent = 0u64;
        let t0 = Instant::now();
        while sent < total {
            s.write_all(&buf).await.unwrap();
            sent += buf.len() as u64;
        }
        t0
    });
    // From the first byte sent to the last byte received.
    let t0 = send.join().unwrap();
    recv.join().unwrap().duration_since(t0).as_secs_f64()
}

fn hello(node: u64) -> Hello {
    Hello {
        cluster: 1,
        node,
        shard: 0,
        shards: 1,
        version: PROTOCOL_VERSION as u32,
        incarnation: node,
        expected: 0,
        cuts: 0,
        client_addr: None,
    }
}

/// Seconds to move `msgs` AppendEntries through the transport.
fn transport_round(msgs: u64) -> f64 {
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let recv = executor(1, move || async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(l.local_addr().unwrap()).unwrap();
        let t = Transport::new(hello(2), TransportConfig::default());
        glommio::spawn_local(t.clone().serve(l)).detach();
        let mut inbox = Vec::new();
        let mut got = 0u64;
        while got < msgs {
            t.inbox_ready().await;
            t.drain_inbox(&mut inbox);
            for (_, _, m) in inbox.drain(..) {
                let Body::Append { entries, .. } = &m.body else {
                    panic!("an append")
                };
                assert_eq!(entries.len(), BATCH_BYTES / ENTRY_BYTES);
                got += 1;
            }
        }
        let end = Instant::now();
        t.close();
        end
    });
    let addr = rx.recv().unwrap();
    let send = executor(0, move || async move {
        let t = Transport::new(hello(1), TransportConfig::default());
        t.add_peer(2, addr);
        t.wait_up(2).await;
        let data = Bytes::from(vec![0x5Au8; ENTRY_BYTES]);
        let m = Message {
            from: 1,
            to: 2,
            term: 1,
            body: Body::Append {
                prev_index: 0,
                prev_term: 1,
                entries: (0..(BATCH_BYTES / ENTRY_BYTES) as u64)
                    .map(|i| Entry {
                        term: 1,
                        index: i + 1,
                        kind: EntryKind::Normal,
                        data: data.clone(),
                    })
                    .collect(),
                commit: 0,
            },
        };
        let rc = Rc::new(m);
        let mut sent = 0u64;
        let t0 = Instant::now();
        while sent < msgs {
            // Flow control as a leader's in-flight window would apply it:
            // keep a few MiB queued, never overflow the queue.
            while t.queued_bytes(2) < (4 << 20) && sent < msgs {
                assert!(t.send(2, 0, &rc));
                sent += 1;
            }
            t.wait_queued_below(2, 4 << 20).await;
        }
        // Let the writer finish before the executor ends.
        while t.queued_bytes(2) > 0 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(t.stats().msgs_dropped, 0);
        t.close();
        t0
    });
    // From the first message queued to the last one decoded.
    let end = recv.join().unwrap();
    let t0 = send.join().unwrap();
    end.duration_since(t0).as_secs_f64()
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass
    // nothing: run a tiny round there so the target stays exercised.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { env_u64("BENCH_ROUNDS", 5) };
    let total = if quick {
        64 << 20
    } else {
        env_u64("BENCH_BYTES", 4 << 30)
    };
    let msgs = total / BATCH_BYTES as u64;
    let (mut raw_gbs, mut tr_gbs, mut tr_mps, mut ratio) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let raw = raw_round(total);
        let tr = transport_round(msgs);
        let (g_raw, g_tr) = (total as f64 / raw / 1e9, total as f64 / tr / 1e9);
        println!(
            "round {r}: raw {g_raw:.2} GB/s, transport {g_tr:.2} GB/s ({:.0} msgs/s), ratio {:.2}",
            msgs as f64 / tr,
            g_tr / g_raw
        );
        raw_gbs.push(g_raw);
        tr_gbs.push(g_tr);
        tr_mps.push(msgs as f64 / tr);
        ratio.push(g_tr / g_raw);
    }
    let f = |name: &str, v: Vec<f64>, unit: &str| {
        let (lo, med, hi) = stats(v);
        println!("{name:<28} min {lo:>10.2} median {med:>10.2} max {hi:>10.2} {unit}");
    };
    println!(
        "-- {rounds} rounds of {} MiB, AppendEntries of 64 x 1 KiB",
        total >> 20
    );
    f("raw TCP pump", raw_gbs, "GB/s");
    f("transport", tr_gbs, "GB/s");
    f("transport", tr_mps, "msgs/s");
    f("transport / raw (per round)", ratio, "");
}
