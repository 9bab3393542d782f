//! Whole-disk loss, and the store identity that keeps a node that lost
//! its data from voting as its old self (`crate::identity` on real nodes).
//!
//! A wiped node restarts with nothing: no log, no hard state, no snapshot,
//! and a new store incarnation. Real peers refuse it in the handshake both
//! ways (its hello carries an incarnation they did not record, and their
//! hello expects its old one): here every message between a peer that
//! recorded another incarnation and the node is dropped, at send and at
//! delivery (what was in flight to or from the old process died with its
//! connections). Node ids are
//! never reused, so the wiped node stays out for good; the liveness and
//! convergence checks leave it out. With the identity check off
//! ([`SimConfig::identity_check`]), the amnesiac votes as its old self and
//! the checkers must catch the acknowledged write it lets a stale leader
//! lose (`tests/sim.rs`).

use super::*;

impl Sim {
    /// Whether a message from `a` to `b` gets through the identity check.
    /// Every node met every other's first store at start (`Sim::new`);
    /// nobody meets a wiped node's new one.
    pub(super) fn identities_admit(&mut self, a: usize, b: usize) -> bool {
        if !self.cfg.identity_check {
            return true;
        }
        let (sa, sb) = (self.nodes[a].store, self.nodes[b].store);
        let (b_knows_a, a_knows_b) = (self.known_store[b][a], self.known_store[a][b]);
        if (b_knows_a != 0 && b_knows_a != sa) || (a_knows_b != 0 && a_knows_b != sb) {
            self.report.messages_refused += 1;
            return false;
        }
        true
    }

    /// Node `i` loses its whole disk: it crashes (if up) and comes back
    /// empty, as a new store, when its restart is due. Nothing it had
    /// reported durable is expected back (that is the fault).
    pub fn wipe(&mut self, i: usize) {
        if self.nodes[i].up() {
            self.crash(i);
        }
        let n = &mut self.nodes[i];
        n.erase_storage();
        n.store += 1;
        n.lost = true;
        // Its record of its peers' incarnations went with the disk.
        for k in self.known_store[i].iter_mut() {
            *k = 0;
        }
        self.report.disks_lost += 1;
    }

    /// Whether node `i` lost its disk in this run (the checks leave it out).
    pub fn lost_disk(&self, i: usize) -> bool {
        self.nodes[i].lost
    }
}
