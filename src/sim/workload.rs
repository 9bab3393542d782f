//! The client workload: puts and gets (through the log, by ReadIndex, by lease), and the commands they put in entries.

use super::state_machine::{key_bytes, value_of};
use super::*;
use crate::kv::{Command, WriteOp};

/// A put: the node's own command (`kv::Command`), client `client + 1`
/// (0 is the node's admin client, without a session), seq = the op's id,
/// ack = the same (the client has seen every earlier answer, or given up
/// on it).
pub(super) fn encode_put(client: usize, op: u64, key: u64, value: u64) -> Bytes {
    Command {
        client: client as u64 + 1,
        seq: op,
        ack: op,
        op: WriteOp::Put {
            key: Bytes::copy_from_slice(&key_bytes(key)),
            value: Bytes::copy_from_slice(&value.to_le_bytes()),
        },
    }
    .encode()
}

/// The simulator's view of a put the node applied.
pub(super) fn sim_cmd_of(c: &Command) -> Option<Cmd> {
    let WriteOp::Put { key, .. } = &c.op else {
        return None;
    };
    let u = |b: &Bytes| Some(u64::from_le_bytes(b[..].try_into().ok()?));
    Some(Cmd {
        put: true,
        client: (c.client.checked_sub(1)?) as usize,
        op: c.seq,
        key: u(key)?,
    })
}

/// A read through the log, the simulator's own payload (not a command the
/// node's map knows; it skips it): [kind u8 = 0][client u32][op u64][key
/// u64][value u64 = 0].
pub(super) fn encode_cmd(put: bool, client: usize, op: u64, key: u64, value: u64) -> Bytes {
    let mut b = Vec::with_capacity(29);
    b.push(put as u8);
    b.extend_from_slice(&(client as u32).to_le_bytes());
    b.extend_from_slice(&op.to_le_bytes());
    b.extend_from_slice(&key.to_le_bytes());
    b.extend_from_slice(&value.to_le_bytes());
    Bytes::from(b)
}

pub(super) struct Cmd {
    pub put: bool,
    pub client: usize,
    pub op: u64,
    pub key: u64,
}

/// Decodes a client command; other payloads (a test's own) are opaque.
pub(super) fn decode_cmd(b: &[u8]) -> Option<Cmd> {
    if b.len() != 29 {
        return None;
    }
    let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    Some(Cmd {
        put: b[0] == 1,
        client: u32::from_le_bytes(b[1..5].try_into().unwrap()) as usize,
        op: u64at(5),
        key: u64at(13),
    })
}

impl Sim {
    pub(super) fn client_next(&mut self, c: usize) {
        if self.failure.is_some() || self.now + QUIESCE_MS >= self.cfg.fault_ms + self.cfg.heal_ms {
            // Quiet end: let everything in flight commit before the checks.
            return;
        }
        let cl = &mut self.clients[c];
        cl.op_id += 1;
        let key = self.rng.below(self.cfg.keys);
        let op = if self.rng.chance(500) {
            let value = self.next_value;
            self.next_value += 1;
            ClientOp::Put { key, value }
        } else {
            let mode = self.rng.below(3);
            ClientOp::Get {
                key,
                log: mode == 0,
                anywhere: mode == 2,
            }
        };
        let cl = &mut self.clients[c];
        cl.op = Some(op);
        cl.call_ms = self.now;
        cl.proposed = None;
        cl.reading = None;
        let kind = match op {
            ClientOp::Put { value, .. } => OpKind::Put { value },
            ClientOp::Get { .. } => OpKind::Get { result: None },
        };
        self.report.reads_by_index += matches!(op, ClientOp::Get { log: false, .. }) as u64;
        cl.history_idx = self.history.len();
        self.history.push(Op {
            client: c,
            key,
            kind,
            call: self.now,
            ret: None,
        });
        let (id, timeout) = (cl.op_id, self.cfg.client_timeout_ms);
        self.schedule(timeout, Event::ClientTimeout(c, id));
        self.client_propose(c);
    }

    pub(super) fn client_propose(&mut self, c: usize) {
        let n = self.nodes.len();
        let cl = &self.clients[c];
        let Some(op) = cl.op else { return };
        let target = cl.leader_guess;
        if let Some(wait) = self.paused_for(target) {
            // Sent to a stopped process: handled once it runs again.
            let id = cl.op_id;
            self.schedule(wait, Event::ClientRetry(c, id));
            return;
        }
        if let ClientOp::Get {
            log: false,
            anywhere,
            ..
        } = op
        {
            self.client_read(c, anywhere);
            return;
        }
        let (put, key, value) = match op {
            ClientOp::Put { key, value } => (true, key, value),
            ClientOp::Get { key, .. } => (false, key, 0),
        };
        let data = if put {
            encode_put(c, cl.op_id, key, value)
        } else {
            encode_cmd(false, c, cl.op_id, key, 0)
        };
        let res = match self.nodes[target].raft.as_mut() {
            None => Err(None),
            Some(r) => r.propose(data).map_err(|e| {
                let hint = match e {
                    ProposeError::NotLeader { leader } => leader,
                    ProposeError::Backpressure { .. } => Some(r.id()),
                    ProposeError::TransferInProgress { to } => Some(to),
                };
                // A replica id: the client needs its node.
                hint.and_then(|rep| r.conf().node_of(rep))
            }),
        };
        match res {
            Ok((idx, term)) => {
                let inc = self.nodes[target].incarnation;
                self.clients[c].proposed = Some((target, inc, idx, term));
                self.drive(target);
            }
            Err(hint) => {
                let next = match hint {
                    Some(id) if id as usize - 1 != target => id as usize - 1,
                    _ => self.rng.below(n as u64) as usize,
                };
                self.clients[c].leader_guess = next;
                let (id, d) = (self.clients[c].op_id, self.rng.range(5, 30));
                self.schedule(d, Event::ClientRetry(c, id));
            }
        }
    }

    pub(super) fn client_read(&mut self, c: usize, anywhere: bool) {
        let n = self.nodes.len();
        let target = if anywhere {
            self.rng.below(n as u64) as usize
        } else {
            self.clients[c].leader_guess
        };
        if let Some(wait) = self.paused_for(target) {
            self.clients[c].leader_guess = target;
            let id = self.clients[c].op_id;
            self.schedule(wait, Event::ClientRetry(c, id));
            return;
        }
        let ctx = ((c as u64) << 32) | (self.clients[c].op_id & 0xFFFF_FFFF);
        let inc = self.nodes[target].incarnation;
        let ok = match self.nodes[target].raft.as_mut() {
            None => false,
            Some(r) => r.read_index(ctx).is_ok(),
        };
        if ok {
            self.clients[c].reading = Some((target, inc, ctx, None));
            self.drive(target);
        } else {
            self.clients[c].leader_guess = self.rng.below(n as u64) as usize;
            let (id, d) = (self.clients[c].op_id, self.rng.range(5, 30));
            self.schedule(d, Event::ClientRetry(c, id));
        }
    }

    /// Read states and failures that came out of node `i`'s Ready.
    pub(super) fn on_reads(&mut self, i: usize, states: Vec<ReadState>, failed: Vec<u64>) {
        let inc = self.nodes[i].incarnation;
        for rs in states {
            if rs.ctx & PROBE_BIT != 0 {
                self.probes_waiting.push((i, inc, rs.ctx, rs.index));
                continue;
            }
            let c = (rs.ctx >> 32) as usize;
            if let Some((node, ninc, ctx, idx @ None)) = &mut self.clients[c].reading {
                if *node == i && *ninc == inc && *ctx == rs.ctx {
                    *idx = Some(rs.index);
                }
            }
        }
        for ctx in failed.into_iter().filter(|c| c & PROBE_BIT == 0) {
            let c = (ctx >> 32) as usize;
            if let Some((node, ninc, cctx, _)) = self.clients[c].reading {
                if node == i && ninc == inc && cctx == ctx {
                    // The read was never served: no effect; move on.
                    self.client_failed(c);
                }
            }
        }
        self.serve_reads(i);
    }

    /// Answers every read at node `i` whose index the node has applied.
    pub(super) fn serve_reads(&mut self, i: usize) {
        let inc = self.nodes[i].incarnation;
        let applied = self.nodes[i].applied;
        let now = self.now;
        let mut served = Vec::new();
        self.probes_waiting.retain(|&(node, ninc, ctx, index)| {
            if node == i && ninc == inc && applied >= index {
                served.push(ProbeRead {
                    ctx,
                    node,
                    served_ms: now,
                    applied,
                });
                false
            } else {
                node != i || ninc == inc
            }
        });
        self.probes_served.extend(served);
        for c in 0..self.clients.len() {
            let Some((node, ninc, _, Some(index))) = self.clients[c].reading else {
                continue;
            };
            if node != i || ninc != inc || self.nodes[i].applied < index {
                continue;
            }
            let Some(ClientOp::Get { key, .. }) = self.clients[c].op else {
                continue;
            };
            let value = value_of(&self.nodes[i].kv, key);
            self.client_done(c, Some(value), (0, 0, 0));
        }
    }

    pub(super) fn client_done(
        &mut self,
        c: usize,
        get_result: Option<Option<u64>>,
        entry: (Index, Term, u64),
    ) {
        let cl = &mut self.clients[c];
        let h = &mut self.history[cl.history_idx];
        h.ret = Some(self.now);
        match get_result {
            Some(r) => h.kind = OpKind::Get { result: r },
            None => {
                self.acked.push(entry);
                self.report.puts_acked += 1;
            }
        }
        cl.op = None;
        cl.proposed = None;
        cl.reading = None;
        self.report.ops_ok += 1;
        let d = self.rng.range(0, 20);
        self.schedule(d, Event::ClientNext(c));
    }

    pub(super) fn client_failed(&mut self, c: usize) {
        // The entry was overwritten: the op never took effect; drop it.
        let cl = &mut self.clients[c];
        let idx = cl.history_idx;
        self.history[idx].ret = Some(u64::MAX); // marker: removed below
        cl.op = None;
        cl.proposed = None;
        cl.reading = None;
        self.report.ops_failed += 1;
        let d = self.rng.range(0, 20);
        self.schedule(d, Event::ClientNext(c));
    }

    pub(super) fn client_timeout(&mut self, c: usize, op: u64) {
        let cl = &mut self.clients[c];
        if cl.op_id != op || cl.op.is_none() {
            return;
        }
        // Unknown outcome: it may still take effect; its ret stays None.
        cl.op = None;
        cl.proposed = None;
        cl.reading = None;
        cl.leader_guess = self.rng.below(self.nodes.len() as u64) as usize;
        self.report.ops_unknown += 1;
        self.schedule(0, Event::ClientNext(c));
    }
}
