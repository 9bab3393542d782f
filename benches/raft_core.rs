//! The Raft core's own ceiling: a 3-node group in one thread, zero network
//! latency, instant persistence, 16-byte proposals submitted in bursts.
//! Reports committed entries per second (criterion's elements/s) for bursts
//! of 1, 16 and 256.
//!
//! cargo bench --bench raft_core

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringraft::raft::*;

struct Cluster {
    nodes: Vec<RawNode>,
    net: VecDeque<Message>,
    applied_on_leader: u64,
}

impl Cluster {
    fn new() -> Self {
        let voters = vec![1, 2, 3];
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut c = RaftConfig::new(id, voters.clone());
                c.seed = 1;
                // Generous windows: measure the core, not the flow control.
                c.inflight_msgs_max = 1024;
                c.inflight_bytes_max = 256 << 20;
                c.uncommitted_bytes_max = 256 << 20;
                c.msg_bytes_max = 1 << 20;
                RawNode::new(c.validate().unwrap())
            })
            .collect();
        let mut cl = Cluster {
            nodes,
            net: VecDeque::new(),
            applied_on_leader: 0,
        };
        while cl.nodes[0].role() != Role::Leader {
            cl.nodes[0].tick();
            cl.pump();
        }
        cl.pump();
        cl
    }

    /// Runs every Ready and delivers every message until quiescent.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                while self.nodes[i].has_ready() {
                    progressed = true;
                    let rd = self.nodes[i].ready();
                    let token = rd.token();
                    self.net.extend(rd.messages);
                    // Instant persistence.
                    self.nodes[i].on_persisted(token);
                    self.net.extend(rd.persisted_messages);
                    if i == 0 {
                        self.applied_on_leader += rd.committed.len() as u64;
                    }
                }
            }
            while let Some(m) = self.net.pop_front() {
                progressed = true;
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m);
            }
            if !progressed {
                return;
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_core_3_nodes_commit");
    let payload = Bytes::from_static(&[7u8; 16]);
    for burst in [1u64, 16, 256] {
        g.throughput(Throughput::Elements(burst));
        g.bench_with_input(BenchmarkId::new("burst", burst), &burst, |b, &burst| {
            let mut cl = Cluster::new();
            b.iter(|| {
                let target = cl.applied_on_leader + burst;
                for _ in 0..burst {
                    cl.nodes[0].propose(payload.clone()).unwrap();
                }
                cl.pump();
                assert!(cl.applied_on_leader >= target, "burst did not commit");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
