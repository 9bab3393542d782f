//! The client workload: puts and gets (linearizable by ReadIndex, or by
//! lease), handed to a node's own request intake (`group::requests`) and
//! answered by its own apply and read paths, as a client connection of the
//! shard is. A client is connection `c` (its index); each attempt at an
//! op has a request id of its own (answers to an earlier attempt are not
//! waited for); a put's session is client `c + 1`, seq = ack = the op's
//! id, the same in every attempt.

use std::time::Duration;

use super::state_machine::key_bytes;
use super::*;
use crate::group::{Answer, Intake};
use crate::kv::WriteOp;
use crate::wire::{ClientError, Op as WireOp, ReadMode, Reply, Request};

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
            ClientOp::Get {
                key,
                lease: self.rng.chance(500),
            }
        };
        let cl = &mut self.clients[c];
        cl.op = Some(op);
        // No answer to an attempt at an earlier op is taken for this one's
        // (this op's first attempt may be sent later: a paused node).
        cl.attempt += 1;
        cl.lose_answer = false;
        cl.call_ms = self.now;
        cl.proposed = None;
        cl.reading = None;
        let kind = match op {
            ClientOp::Put { value, .. } => OpKind::Put { value },
            ClientOp::Get { .. } => OpKind::Get { result: None },
        };
        cl.history_idx = self.history.len();
        self.history.push(Op {
            client: c,
            key,
            kind,
            call: self.now,
            ret: None,
        });
        let (id, timeout) = (cl.op_id, self.cfg.client_timeout_ms);
        cl.timeout_at = self.now + timeout;
        self.schedule(timeout, Event::ClientTimeout(c, id));
        self.client_propose(c);
    }

    /// Sends client `c`'s op to the node it believes leads, through that
    /// node's intake; a read queued there gets its read index asked at
    /// once (a turn of its own).
    pub(super) fn client_propose(&mut self, c: usize) {
        let cl = &self.clients[c];
        let Some(op) = cl.op else { return };
        let (target, id) = (cl.leader_guess, cl.op_id);
        let g = self.group_of_key(op.key());
        if let Some(wait) = self.paused_for(target) {
            // Sent to a stopped process: handled once it runs again.
            self.schedule(wait, Event::ClientRetry(c, id));
            return;
        }
        let cl = &mut self.clients[c];
        cl.attempt += 1;
        let req = cl.attempt;
        let deadline = self.base + Duration::from_millis(self.now + self.cfg.client_timeout_ms);
        let inc = self.nodes[target].incarnation;
        let n = &mut self.nodes[target];
        let Some(rep) = n.groups.get_mut(&g).and_then(|s| s.rep.as_mut()) else {
            // Down: the connection is refused.
            return self.client_retry(c, 0);
        };
        let conn = c as u64;
        let intake = match op {
            ClientOp::Put { key, value } => {
                let op = WriteOp::Put {
                    key: Bytes::copy_from_slice(&key_bytes(key)),
                    value: Bytes::copy_from_slice(&value.to_le_bytes()),
                };
                let session = c as u64 + 1;
                rep.propose_write(session, id, id, op, conn, req, deadline)
            }
            ClientOp::Get { key, lease } => {
                let mode = if lease {
                    ReadMode::Lease
                } else {
                    ReadMode::Linearizable
                };
                let req = Request {
                    id: req,
                    group: g,
                    client: c as u64 + 1,
                    seq: 0,
                    ack: 0,
                    op: WireOp::Get {
                        key: Bytes::copy_from_slice(&key_bytes(key)),
                        mode,
                    },
                };
                rep.read(conn, req, mode, deadline, u32::MAX)
            }
        };
        let mut answers = Vec::new();
        match intake {
            Intake::Proposed { index, term } => {
                self.clients[c].proposed = Some((target, g, inc, index, term));
            }
            Intake::Queued => {
                self.report.reads_by_index += 1;
                self.clients[c].reading = Some((target, inc));
                let ctx = n.next_ctx;
                n.next_ctx += 1;
                let mut failed = Vec::new();
                rep.start_reads(ctx, &mut failed);
                answers.extend(
                    failed.into_iter().map(|(conn, id, leader)| {
                        (conn, id, Err(ClientError::NotLeader { leader }))
                    }),
                );
            }
            Intake::Answer(r) => answers.push((conn, req, r)),
        }
        self.on_answers(target, g, &mut answers);
        self.drive(target, g);
    }

    /// The group holding simulated key `key`: by the ranges the clients
    /// know in a run with splits, else group `key % groups`.
    pub(super) fn group_of_key(&self, key: u64) -> GroupId {
        if self.cfg.splits > 0 {
            return self.range_of_key(key);
        }
        key % self.cfg.groups.max(1)
    }

    /// Answers from node `i`'s replica of group `g` to its clients
    /// (connections): each settles the op it answers, if the client still
    /// waits for it.
    pub(super) fn on_answers(&mut self, i: usize, g: GroupId, answers: &mut Vec<Answer>) {
        for (conn, id, result) in answers.drain(..) {
            let c = conn as usize;
            let cl = &self.clients[c];
            if cl.attempt != id || cl.op.is_none() {
                continue; // an op the client gave up on, or an earlier attempt
            }
            match (cl.op.expect("checked"), result) {
                (ClientOp::Put { .. }, Ok(_)) if cl.lose_answer => {
                    // Lost on its way (`splits::split_fault`): applied, but
                    // the client does not know, and asks again.
                    self.report.answers_lost_at_split += 1;
                    self.client_ask_again(c);
                }
                (ClientOp::Put { .. }, Ok(_)) => {
                    // Answered by the apply of the entry it proposed here
                    // (or, for a retry, by the outcome its session kept).
                    let entry = match cl.proposed {
                        Some((node, group, inc, idx, term)) if node == i && group == g => {
                            debug_assert_eq!(inc, self.nodes[i].incarnation);
                            let Some(&d) = self.checks[&g].at(idx) else {
                                let msg = format!(
                                    "client {c}: put answered by node {} group {g} for entry {idx} (term {term}), which no node applied (the group's log starts after {})",
                                    self.ids[i], self.checks[&g].base
                                );
                                return self.fail(msg);
                            };
                            debug_assert_eq!(d.0, term, "answered for another entry");
                            Some((idx, term, d.1))
                        }
                        _ => None,
                    };
                    self.client_done(c, g, None, entry);
                }
                (ClientOp::Get { .. }, Ok(Reply::Value(v))) => {
                    let value = v.map(|b| {
                        u64::from_le_bytes(
                            b[..]
                                .try_into()
                                .expect("the simulator writes 8-byte values"),
                        )
                    });
                    self.client_done(c, g, Some(value), None);
                }
                (_, Err(ClientError::NotLeader { leader })) => self.client_retry(c, leader),
                (_, Err(ClientError::Busy)) => self.client_retry(c, self.ids[i]),
                (_, Err(ClientError::KeyNotInRange { .. })) if self.cfg.splits > 0 => {
                    // A split moved the key: the client learns the ranges
                    // (from the meta group) and asks that range, with the
                    // same session sequence (nothing was applied).
                    self.client_ranges = self.ranges.clone();
                    self.report.ops_rerouted += 1;
                    self.client_retry(c, 0);
                }
                (_, Err(e)) if e.outcome_unknown() => self.client_outcome_unknown(c),
                (op, r) => {
                    let msg = format!("client {c}: {op:?} answered {r:?} by node {}", self.ids[i]);
                    self.fail(msg);
                }
            }
        }
    }

    /// Client `c` asks again, at node `leader` if named (0: any node).
    fn client_retry(&mut self, c: usize, leader: u64) {
        let n = self.nodes.len() as u64;
        let target = match leader {
            0 => self.rng.below(n) as usize,
            l => (l - 1) as usize,
        };
        let cl = &mut self.clients[c];
        cl.leader_guess = target;
        cl.proposed = None;
        cl.reading = None;
        self.report.ops_retried += 1;
        let (id, d) = (cl.op_id, self.rng.range(5, 30));
        self.schedule(d, Event::ClientRetry(c, id));
    }

    /// Read states of probe reads (`Sim::probe_read`) that came out of
    /// node `i`'s Ready of the test API's group; the clients' own go
    /// through the replica.
    pub(super) fn note_probes(&mut self, i: usize, states: &[ReadState], _failed: &[u64]) {
        let inc = self.nodes[i].incarnation;
        for rs in states.iter().filter(|rs| rs.ctx & PROBE_BIT != 0) {
            self.probes_waiting.push((i, inc, rs.ctx, rs.index));
        }
    }

    /// Serves every probe read at node `i` whose index it has applied.
    pub(super) fn serve_probes(&mut self, i: usize) {
        let inc = self.nodes[i].incarnation;
        let applied = self.nodes[i].group(SIM_GROUP).applied();
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
    }

    /// Client `c`'s op returned (answered by group `g`): a get with its
    /// result, a put with the entry that applied it when known (index,
    /// term, digest).
    pub(super) fn client_done(
        &mut self,
        c: usize,
        g: GroupId,
        get_result: Option<Option<u64>>,
        entry: Option<(Index, Term, u64)>,
    ) {
        let cl = &mut self.clients[c];
        let h = &mut self.history[cl.history_idx];
        h.ret = Some(self.now);
        match get_result {
            Some(r) => h.kind = OpKind::Get { result: r },
            None => {
                let acked = &mut self.checks.get_mut(&g).expect("checked group").acked;
                acked.extend(entry);
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

    /// Client `c`'s op has an unknown outcome (it may still take effect).
    /// In a run with splits, a put is asked again half the time with the
    /// same session sequence, with a new deadline: its session (which a
    /// split copies to the new range) answers it if it was applied, so it
    /// takes effect once. Otherwise the client gives up.
    fn client_outcome_unknown(&mut self, c: usize) {
        let put = matches!(self.clients[c].op, Some(ClientOp::Put { .. }));
        let late = self.now + QUIESCE_MS >= self.cfg.fault_ms + self.cfg.heal_ms;
        if self.cfg.splits == 0 || !put || late || !self.rng.chance(500) {
            return self.client_gave_up(c);
        }
        self.client_ask_again(c);
    }

    /// Client `c` asks its op again, with the same session sequence and a
    /// new deadline, at any node.
    fn client_ask_again(&mut self, c: usize) {
        self.report.ops_retried_unknown += 1;
        let cl = &mut self.clients[c];
        cl.timeout_at = self.now + self.cfg.client_timeout_ms;
        cl.lose_answer = false;
        let id = cl.op_id;
        self.schedule(self.cfg.client_timeout_ms, Event::ClientTimeout(c, id));
        self.client_retry(c, 0);
    }

    /// Client `c` gives up on its op: the outcome is unknown (it may still
    /// take effect); its ret stays None.
    fn client_gave_up(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        cl.op = None;
        cl.proposed = None;
        cl.reading = None;
        cl.leader_guess = self.rng.below(self.nodes.len() as u64) as usize;
        self.report.ops_unknown += 1;
        self.schedule(0, Event::ClientNext(c));
    }

    pub(super) fn client_timeout(&mut self, c: usize, op: u64) {
        let cl = &self.clients[c];
        if cl.op_id != op || cl.op.is_none() || self.now < cl.timeout_at {
            // Answered, or asked again with a later deadline.
            return;
        }
        self.client_outcome_unknown(c);
    }
}
