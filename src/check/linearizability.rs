//! A linearizability checker for a key-value history, split per key
//! (P-compositionality), each key a register checked with the Wing–Gong
//! search as refined by Lowe (and used by Porcupine): depth-first over the
//! calls, with a cache of (linearized set, register state) already explored.
//!
//! An operation whose outcome is unknown (the client timed out) has no
//! response: it may take effect at any point after its call, or never.
//!
//! Long histories (a soak records millions of operations) stay cheap:
//! values are unique, so a write of unknown outcome that no read saw is
//! dropped (it may never have happened) and one that a read saw gets that
//! read's return as its own (it took effect by then); then each key's
//! history is cut where no operation is in flight, and the pieces are
//! checked in order, carrying the set of register values each can end
//! with. The search cost grows with the concurrency of a piece, not with
//! the length of the history.

use std::collections::{BTreeMap, HashSet};

/// What a client asked and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Write `value` (values are unique per history).
    Put { value: u64 },
    /// Read; `result` is what the read returned.
    Get { result: Option<u64> },
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub key: u64,
    pub kind: OpKind,
    pub call: u64,
    /// `None`: the outcome is unknown (it may or may not have happened).
    pub ret: Option<u64>,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: u64,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "history of key {} is not linearizable ({} ops):",
            self.key,
            self.ops.len()
        )?;
        let mut ops = self.ops.clone();
        ops.sort_by_key(|o| o.call);
        for o in ops.iter().take(60) {
            writeln!(
                f,
                "  client {} {:?} [{} .. {:?}]",
                o.client, o.kind, o.call, o.ret
            )?;
        }
        Ok(())
    }
}

/// Checks every key's sub-history; returns the first violation.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
    for op in history {
        // A read with unknown outcome constrains nothing.
        if op.ret.is_none() && matches!(op.kind, OpKind::Get { .. }) {
            continue;
        }
        by_key.entry(op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        if let Err(ops) = check_pieces(&ops) {
            return Err(Violation { key, ops });
        }
    }
    Ok(())
}

/// Checks one register's history (initial value: absent).
pub fn check_register(ops: &[Op]) -> bool {
    check_pieces(ops).is_ok()
}

/// The piece of the history no reachable state explains, if any.
fn check_pieces(ops: &[Op]) -> Result<(), Vec<Op>> {
    // Writes of unknown outcome: dropped if unseen; else done by the time
    // the first read that saw them returned. Reads of unknown outcome
    // constrain nothing.
    let mut seen_by: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for o in ops {
        if let (OpKind::Get { result: Some(v) }, Some(r)) = (&o.kind, o.ret) {
            let e = seen_by.entry(*v).or_insert(r);
            *e = (*e).min(r);
        }
    }
    let mut ops: Vec<Op> = ops
        .iter()
        .filter_map(|o| match (&o.kind, o.ret) {
            (_, Some(_)) => Some(o.clone()),
            (OpKind::Get { .. }, None) => None,
            (OpKind::Put { value }, None) => seen_by.get(value).map(|&r| Op {
                ret: Some(r),
                ..o.clone()
            }),
        })
        .collect();
    if let Some(o) = ops.iter().find(|o| o.ret < Some(o.call)) {
        // Seen before it was written.
        return Err(vec![o.clone()]);
    }
    ops.sort_by_key(|o| (o.call, o.ret));
    // Cut where no operation is in flight; carry the possible values.
    let mut states: Vec<Option<u64>> = vec![None];
    let mut start = 0;
    let mut last_ret = 0;
    for i in 0..=ops.len() {
        if i == ops.len() || (i > start && ops[i].call > last_ret) {
            let piece = &ops[start..i];
            let mut next: Vec<Option<u64>> = Vec::new();
            for &s in &states {
                for f in final_states(piece, s) {
                    if !next.contains(&f) {
                        next.push(f);
                    }
                }
            }
            if next.is_empty() {
                return Err(piece.to_vec());
            }
            states = next;
            start = i;
        }
        if let Some(o) = ops.get(i) {
            let r = o.ret.expect("every remaining op has a return");
            last_ret = if i == start { r } else { last_ret.max(r) };
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
struct Ev {
    op: usize,
    is_call: bool,
    /// Doubly linked list over events, in time order.
    prev: usize,
    next: usize,
    /// For a call: the index of its return event.
    partner: usize,
}

const NIL: usize = usize::MAX;

/// Every value the register can hold after a linearization of `ops`
/// (all with returns) starting from `init`; empty: none exists.
fn final_states(ops: &[Op], init: Option<u64>) -> Vec<Option<u64>> {
    let n = ops.len();
    if n == 0 {
        return vec![init];
    }
    let mut finals: Vec<Option<u64>> = Vec::new();
    // Events: calls and returns, sorted by time; at equal times calls come
    // first (an op returning at t is concurrent with one called at t).
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        order.push((o.call, 0, i));
        order.push((o.ret.unwrap_or(u64::MAX), 1, i));
    }
    order.sort();
    // Node 0 is a sentinel head.
    let mut ev: Vec<Ev> = Vec::with_capacity(2 * n + 1);
    ev.push(Ev {
        op: NIL,
        is_call: false,
        prev: NIL,
        next: 1,
        partner: NIL,
    });
    let mut call_pos = vec![0usize; n];
    for (k, &(_, r, i)) in order.iter().enumerate() {
        let idx = k + 1;
        ev.push(Ev {
            op: i,
            is_call: r == 0,
            prev: idx - 1,
            next: if k + 1 < order.len() { idx + 1 } else { NIL },
            partner: NIL,
        });
        if r == 0 {
            call_pos[i] = idx;
        } else {
            ev[call_pos[i]].partner = idx;
        }
    }

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut state: Option<u64> = init;
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();

    let lift = |ev: &mut Vec<Ev>, c: usize| {
        let r = ev[c].partner;
        for x in [c, r] {
            let (p, nx) = (ev[x].prev, ev[x].next);
            ev[p].next = nx;
            if nx != NIL {
                ev[nx].prev = p;
            }
        }
    };
    let unlift = |ev: &mut Vec<Ev>, c: usize| {
        let r = ev[c].partner;
        for x in [r, c] {
            let (p, nx) = (ev[x].prev, ev[x].next);
            ev[p].next = x;
            if nx != NIL {
                ev[nx].prev = x;
            }
        }
    };

    let mut cur = ev[0].next;
    loop {
        let complete = ev[0].next == NIL;
        if complete && !finals.contains(&state) {
            finals.push(state);
        }
        if complete || cur == NIL || !ev[cur].is_call {
            // Everything linearized (then look for other endings), or a
            // return whose call is not linearized yet: backtrack.
            let Some((c, s)) = stack.pop() else {
                return finals;
            };
            state = s;
            let op = ev[c].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut ev, c);
            cur = ev[c].next;
            continue;
        }
        let e = ev[cur];
        if e.is_call {
            let op = &ops[e.op];
            let (ok, next_state) = match op.kind {
                OpKind::Put { value } => (true, Some(value)),
                OpKind::Get { result } => (result == state, state),
            };
            if ok {
                let mut l2 = linearized.clone();
                l2[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((l2.clone(), next_state)) {
                    stack.push((cur, state));
                    state = next_state;
                    linearized = l2;
                    lift(&mut ev, cur);
                    cur = ev[0].next;
                    continue;
                }
            }
            cur = e.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: usize, v: u64, call: u64, ret: Option<u64>) -> Op {
        Op {
            client,
            key: 1,
            kind: OpKind::Put { value: v },
            call,
            ret,
        }
    }
    fn get(client: usize, r: Option<u64>, call: u64, ret: u64) -> Op {
        Op {
            client,
            key: 1,
            kind: OpKind::Get { result: r },
            call,
            ret: Some(ret),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert!(check_register(&[
            put(0, 1, 0, Some(1)),
            get(0, Some(1), 2, 3)
        ]));
        assert!(check_register(&[get(0, None, 0, 1)]));
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        assert!(!check_register(&[
            put(0, 1, 0, Some(1)),
            put(0, 2, 2, Some(3)),
            get(1, Some(1), 4, 5)
        ]));
    }

    #[test]
    fn concurrent_ops_may_order_either_way() {
        assert!(check_register(&[
            put(0, 1, 0, Some(10)),
            get(1, None, 1, 2),
            get(2, Some(1), 3, 4)
        ]));
        assert!(check_register(&[
            put(0, 1, 0, Some(10)),
            get(1, Some(1), 1, 2),
            get(2, Some(1), 3, 4)
        ]));
        // But once seen, the value cannot be unseen.
        assert!(!check_register(&[
            put(0, 1, 0, Some(10)),
            get(1, Some(1), 1, 2),
            get(2, None, 3, 4)
        ]));
    }

    #[test]
    fn unknown_outcome_may_take_effect_late_or_never() {
        assert!(check_register(&[
            put(0, 1, 0, None),
            get(1, None, 5, 6),
            get(1, Some(1), 7, 8)
        ]));
        assert!(check_register(&[put(0, 1, 0, None), get(1, None, 5, 6)]));
        // But not before it was called.
        assert!(!check_register(&[
            get(1, Some(1), 0, 1),
            put(0, 1, 2, None)
        ]));
    }

    #[test]
    fn read_of_a_value_never_written_is_caught() {
        assert!(!check_register(&[
            put(0, 1, 0, Some(1)),
            get(1, Some(9), 2, 3)
        ]));
    }

    #[test]
    fn split_per_key() {
        let mut a = put(0, 1, 0, Some(1));
        a.key = 2;
        let b = get(1, None, 2, 3); // key 1 never written: fine
        assert!(check(&[a, b]).is_ok());
    }

    #[test]
    fn pieces_carry_every_value_they_can_end_with() {
        // Two concurrent writes, then (after a quiet gap) reads: either
        // value may be the last, but it stays the same once seen.
        let both = [put(0, 1, 0, Some(10)), put(1, 2, 1, Some(9))];
        for v in [1, 2] {
            let mut h = both.to_vec();
            h.push(get(2, Some(v), 20, 21));
            h.push(get(2, Some(v), 30, 31));
            assert!(check_register(&h), "{v} can be last");
        }
        let mut h = both.to_vec();
        h.push(get(2, Some(1), 20, 21));
        h.push(get(2, Some(2), 30, 31));
        assert!(!check_register(&h), "no write in between");
        // A stale read long after the write, past many quiet gaps.
        let mut h = vec![put(0, 1, 0, Some(1)), put(0, 2, 2, Some(3))];
        for i in 0..100 {
            h.push(get(1, Some(2), 10 + 10 * i, 15 + 10 * i));
        }
        h.push(get(1, Some(1), 2000, 2001));
        let bad = check(&h).unwrap_err();
        assert_eq!(bad.ops.len(), 1, "the piece that fails: {bad}");
    }

    #[test]
    fn unknown_writes_seen_or_not() {
        // Unseen: as if never written.
        let h = [
            put(0, 1, 0, Some(1)),
            put(1, 7, 2, None),
            get(2, Some(1), 50, 51),
        ];
        assert!(check_register(&h));
        // Seen: it took effect before that read returned, and stays.
        let h = [
            put(0, 1, 0, Some(1)),
            put(1, 7, 2, None),
            get(2, Some(7), 50, 51),
            get(2, Some(1), 60, 61),
        ];
        assert!(!check_register(&h));
    }

    #[test]
    fn a_long_history_with_timeouts_is_checked_quickly() {
        // 8 clients, 400,000 operations on one key, some writes timing
        // out (seen later or never): the old search kept a bitset of every
        // operation per explored state and needed gigabytes here.
        let mut rng = crate::rng::Rng(7);
        let mut ops = Vec::new();
        let mut t = 0u64;
        let mut last = None;
        let mut v = 0;
        for i in 0..400_000u64 {
            let c = (i % 8) as usize;
            if rng.below(2) == 0 {
                v += 1;
                let timed_out = rng.below(50) == 0;
                ops.push(put(c, v, t, (!timed_out).then_some(t + 3)));
                last = Some(v);
            } else {
                ops.push(get(c, last, t + 4, t + 6));
            }
            // Sometimes overlapping, often a quiet gap.
            t += if rng.below(3) == 0 { 2 } else { 10 };
        }
        let started = std::time::Instant::now();
        assert!(check_register(&ops));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn larger_concurrent_history_finishes() {
        // 4 clients x 40 ops with overlapping windows.
        let mut ops = Vec::new();
        let mut last = None;
        let mut t = 0;
        let mut v = 0;
        for i in 0..160u64 {
            let c = (i % 4) as usize;
            if i % 3 == 0 {
                v += 1;
                ops.push(put(c, v, t, Some(t + 7)));
                last = Some(v);
            } else {
                ops.push(get(c, last, t + 6, t + 9));
            }
            t += 5;
        }
        assert!(check_register(&ops));
    }
}

#[cfg(test)]
mod agree {
    use super::*;

    /// The piecewise check agrees with one search over the whole history
    /// (the reference, exponential but fine for small histories) on random
    /// histories of a few clients, with overlaps, quiet gaps, stale reads
    /// and writes of unknown outcome.
    #[test]
    fn pieces_agree_with_one_search_over_everything() {
        let mut rng = crate::rng::Rng(11);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..20_000 {
            let clients = 1 + rng.below(3) as usize;
            let mut ops = Vec::new();
            let mut written: Vec<u64> = Vec::new();
            let mut t = 0u64;
            let mut v = 0;
            let mut free_at = vec![0u64; clients];
            for _ in 0..(2 + rng.below(9)) {
                let c = rng.below(clients as u64) as usize;
                let call = t.max(free_at[c]);
                let ret = call + 1 + rng.below(6);
                free_at[c] = ret + 1;
                if rng.below(2) == 0 {
                    v += 1;
                    written.push(v);
                    let unknown = rng.below(6) == 0;
                    ops.push(Op {
                        client: c,
                        key: 1,
                        kind: OpKind::Put { value: v },
                        call,
                        ret: (!unknown).then_some(ret),
                    });
                } else {
                    let result = if written.is_empty() || rng.below(5) == 0 {
                        None
                    } else {
                        Some(written[rng.below(written.len() as u64) as usize])
                    };
                    ops.push(Op {
                        client: c,
                        key: 1,
                        kind: OpKind::Get { result },
                        call,
                        ret: Some(ret),
                    });
                }
                t += rng.below(5);
            }
            let reference = !final_states(&ops, None).is_empty();
            assert_eq!(check_register(&ops), reference, "{ops:#?}");
            if reference {
                yes += 1;
            } else {
                no += 1;
            }
        }
        assert!(yes > 1000 && no > 1000, "{yes} linearizable, {no} not");
    }
}
