//! The simulated network between replicas: routing by the node's own
//! `group::Routes`, faults on the way (drops, duplicates, delays,
//! partitions, refused store incarnations), and delivery into the replica
//! a node hosts, creating or replacing it as the shard does.

use super::*;

impl Sim {
    /// Sends `m` from node `a` to the node its addressee lives on, as node
    /// `a` knows it (`group::Routes`); unknown: dropped, as the node does.
    pub(super) fn send(&mut self, a: usize, m: Message) {
        self.report.messages_sent += 1;
        let n = &self.nodes[a];
        let Some(rep) = &n.rep else { return };
        let Some(b) = rep.node_of(m.to) else {
            self.report.messages_unplaced += 1;
            return;
        };
        let b = (b - 1) as usize;
        if !self.identities_admit(a, b) {
            return;
        }
        if self.blocked[a][b] || self.rng.chance(self.drop_per_mille) {
            self.report.messages_dropped += 1;
            return;
        }
        if self.rng.chance(self.dup_per_mille) {
            let d = self.rng.range(self.delay_ms.0, self.delay_ms.1);
            let m = m.clone();
            self.schedule(d, Event::Deliver { from: a, to: b, m });
        }
        let d = self.rng.range(self.delay_ms.0, self.delay_ms.1);
        self.schedule(d, Event::Deliver { from: a, to: b, m });
    }

    /// A message from node `from` at up node `i`: stepped into the replica
    /// it hosts if the routing rules admit it (`group::Routes::accept`);
    /// a leader's seeding snapshot for a newer replica placed here
    /// replaces the hosted one (or creates the first), as the shard does
    /// (`shard/replicas.rs`); anything else is dropped.
    pub(super) fn deliver(&mut self, from: usize, i: usize, m: Message) {
        let from_node = self.ids[from];
        let n = &mut self.nodes[i];
        let rep = n.rep.as_mut().expect("up: checked");
        match rep.accept_from(from_node, &m) {
            Ok(()) => rep.raft.step(m),
            Err(crate::group::Misrouted::OtherReplica)
                if crate::group::creates_replica(self.ids[i], &m)
                    && (!n.hosted || m.to > n.replica) =>
            {
                self.replace_replica(i, m.to);
                self.nodes[i].raft_mut().expect("started").step(m);
            }
            Err(_) => {
                self.report.messages_misrouted += 1;
                return;
            }
        }
        self.drive(i);
    }

    /// Destroys node `i`'s replica (if any) and creates replica `replica`
    /// there, empty: it waits for its leader's snapshot. Like a crash for
    /// what was in flight (clients see the incarnation change).
    fn replace_replica(&mut self, i: usize, replica: ReplicaId) {
        if self.nodes[i].hosted {
            self.report.replicas_destroyed += 1;
        }
        let n = &mut self.nodes[i];
        n.rep = None;
        n.incarnation += 1;
        n.writes.clear();
        n.batch_len = 0;
        n.erase_storage();
        n.replica = replica;
        n.hosted = true;
        self.report.replicas_created += 1;
        self.start_node(i);
    }
}
