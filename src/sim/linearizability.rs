//! A linearizability checker for a key-value history, split per key
//! (P-compositionality), each key a register checked with the Wing–Gong
//! search as refined by Lowe (and used by Porcupine): depth-first over the
//! calls, with a cache of (linearized set, register state) already explored.
//!
//! An operation whose outcome is unknown (the client timed out) has no
//! response: it may take effect at any point after its call, or never.

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
        if !check_register(&ops) {
            return Err(Violation { key, ops });
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

/// Checks one register's history (initial value: absent).
pub fn check_register(ops: &[Op]) -> bool {
    let n = ops.len();
    if n == 0 {
        return true;
    }
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
    let mut state: Option<u64> = None;
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
    while ev[0].next != NIL {
        if cur == NIL {
            // Cannot happen: the last event is a return, handled below.
            return false;
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
        } else {
            // A return whose call is not linearized yet: backtrack.
            let Some((c, s)) = stack.pop() else {
                return false;
            };
            state = s;
            let op = ev[c].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut ev, c);
            cur = ev[c].next;
        }
    }
    true
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
