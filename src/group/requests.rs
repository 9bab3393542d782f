//! A replica's client intake, without I/O: a write becomes a proposal with
//! a waiter, a read is served now or queued for a read index, by the mode
//! it asks for. The shard checks what is not the replica's to check
//! (sizes, the disk, the session id) and sends the answers; the simulator
//! calls the same code.

use std::time::Instant;

use crate::kv::{Command, WriteOp};
use crate::raft::{Index, ProposeError, Role, Term};
use crate::transport::ClientConnId;
use crate::wire::{ClientError, KeyValue, Op, ReadMode, Reply, Request};

use super::{PendingRead, Replica, Waiter};

/// What became of a client request handed to a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// Proposed at (`index`, `term`): answered when that entry is applied
    /// (or another takes its index, or the deadline passes).
    Proposed { index: Index, term: Term },
    /// A read waiting for the turn's read index (`Replica::start_reads`).
    Queued,
    /// Answered at once.
    Answer(Result<Reply, ClientError>),
}

impl Replica {
    /// Proposes write `op` of session (`client`, `seq`, `ack`) for request
    /// `id` on connection `conn`, answered by `deadline` at the latest. A
    /// retry of a write already applied gets its outcome, not a new entry
    /// (`Kv::known_outcome`: exactly-once). Refusals: `NotLeader` naming
    /// the leader's node (or the transfer's target), `Busy` when the
    /// leader's uncommitted backlog is full (`ProposeError::Backpressure`).
    #[allow(clippy::too_many_arguments)]
    pub fn propose_write(
        &mut self,
        client: u64,
        seq: u64,
        ack: u64,
        op: WriteOp,
        conn: ClientConnId,
        id: u64,
        deadline: Instant,
    ) -> Intake {
        if let Some(outcome) = self.kv.known_outcome(client, seq) {
            return Intake::Answer(outcome);
        }
        // The leader refuses a key outside its group's keys. Replicas
        // check again at apply only bounds a split of the log set
        // (`kv::KeyBounds::from_log`): with bounds from their nodes' own
        // cuts they apply what the leader proposed, so they stay identical
        // even if those nodes were bootstrapped with different cuts.
        if let WriteOp::Put { key, .. }
        | WriteOp::Delete { key }
        | WriteOp::Cas { key, .. }
        | WriteOp::Incr { key, .. }
        | WriteOp::Append { key, .. } = &op
        {
            if self.raft.role() == Role::Leader && !self.kv.bounds().contains(key) {
                return Intake::Answer(Err(self.kv.not_in_range(key)));
            }
        }
        let cmd = Command {
            client,
            seq,
            ack,
            op,
        };
        match self.raft.propose(cmd.encode()) {
            Ok((index, term)) => {
                self.await_entry(index, term, conn, id, deadline);
                Intake::Proposed { index, term }
            }
            Err(e) => {
                let hint = match e {
                    ProposeError::NotLeader { leader } => leader,
                    ProposeError::TransferInProgress { to } => Some(to),
                    ProposeError::Backpressure { .. } => None,
                };
                let leader = hint.and_then(|r| self.node_of(r)).unwrap_or(0);
                Intake::Answer(Err(match e {
                    ProposeError::Backpressure { .. } => ClientError::Busy,
                    _ => ClientError::NotLeader { leader },
                }))
            }
        }
    }

    /// Answers request `id` once the entry (`index`, `term`) is applied (or
    /// with an error if another entry takes that index).
    pub fn await_entry(
        &mut self,
        index: Index,
        term: Term,
        conn: ClientConnId,
        id: u64,
        deadline: Instant,
    ) {
        let w = Waiter {
            term,
            conn,
            id,
            deadline,
        };
        self.proposals.insert(index, w);
    }

    /// A read (`Op::Get` or `Op::Scan`) in `mode`: `Stale` is served from
    /// the applied state now; `Lease` too while this leader's lease holds,
    /// an entry of its term is committed and everything committed is
    /// applied (`RawNode::lease_read_index`; no round trip, Raft thesis
    /// §6.4.1); otherwise a leader queues it for the turn's read index
    /// (§6.4) and a follower answers `NotLeader`.
    pub fn read(
        &mut self,
        conn: ClientConnId,
        req: Request,
        mode: ReadMode,
        deadline: Instant,
        scan_limit_max: u32,
    ) -> Intake {
        let served_now = match mode {
            ReadMode::Stale => true,
            ReadMode::Lease => self
                .raft
                .lease_read_index()
                .is_some_and(|i| self.kv.applied() >= i),
            ReadMode::Linearizable => false,
        };
        if served_now {
            return Intake::Answer(self.read_now(&req, scan_limit_max));
        }
        if self.raft.role() != Role::Leader {
            return Intake::Answer(Err(self.not_leader()));
        }
        self.reads_new.push(PendingRead {
            conn,
            req,
            deadline,
        });
        Intake::Queued
    }

    /// Serves a read from the applied state; a scan returns at most
    /// `scan_limit_max` pairs (and says whether there are more). The key
    /// (a scan's start) must be in the group's keys as applied, or the
    /// read is refused with `KeyNotInRange`; a scan stops at the end of
    /// the group's keys and says where that is.
    pub fn read_now(&self, req: &Request, scan_limit_max: u32) -> Result<Reply, ClientError> {
        let bounds = self.kv.bounds();
        match &req.op {
            Op::Get { key, .. } if !bounds.contains(key) => Err(self.kv.not_in_range(key)),
            Op::Get { key, .. } => Ok(Reply::Value(
                self.kv.get(key).map(crate::kv::Datum::to_bytes),
            )),
            Op::Scan { start, .. } if !bounds.contains(start) => Err(self.kv.not_in_range(start)),
            Op::Scan {
                start,
                end,
                limit,
                keys_only,
                ..
            } => {
                let limit = (*limit).min(scan_limit_max) as usize;
                let (pairs, more) = match bounds.clamp(start, end) {
                    Some((lo, hi)) => self.kv.scan(lo, hi, limit),
                    None => (Vec::new(), false),
                };
                Ok(Reply::Scan {
                    pairs: pairs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value: if *keys_only {
                                bytes::Bytes::new()
                            } else {
                                value
                            },
                        })
                        .collect(),
                    more,
                    range_end: bounds.end.clone(),
                })
            }
            _ => Err(ClientError::BadRequest {
                reason: "not a read".into(),
            }),
        }
    }
}
