//! The in-memory Raft log of one group member.
//!
//! Indexes are 1-based; index 0 with term 0 is the empty prefix every log
//! shares. The log keeps every entry after `offset - 1` in memory (the
//! storage layer replays them from the WAL at restart).

use std::collections::VecDeque;

use super::types::{Entry, Index, SnapshotMeta, Term};

#[derive(Debug, Clone)]
pub struct RaftLog {
    /// Invariant: entries[i].index == offset + i, terms non-decreasing.
    entries: VecDeque<Entry>,
    /// Index of entries[0]; the entry before it (offset - 1) has `prev_term`.
    offset: Index,
    prev_term: Term,
    /// Highest index known committed. Invariant: commit <= last_index().
    pub commit: Index,
    /// Highest index whose persistence was reported. Invariant:
    /// persisted < unstable_from, and persisted <= last_index().
    pub persisted: Index,
    /// First index not yet handed out in a Ready for persistence.
    pub unstable_from: Index,
    /// Highest index handed out for applying. Invariant: applied <= commit;
    /// applied <= persisted too, except right after a received snapshot is
    /// installed and until it is reported durable.
    pub applied: Index,
}

impl RaftLog {
    pub fn new() -> Self {
        RaftLog {
            entries: VecDeque::new(),
            offset: 1,
            prev_term: 0,
            commit: 0,
            persisted: 0,
            unstable_from: 1,
            applied: 0,
        }
    }

    /// A log rebuilt from storage: an optional snapshot and the entries
    /// after it, every one durable.
    pub fn restored(
        snapshot: Option<SnapshotMeta>,
        entries: Vec<Entry>,
        commit: Index,
        applied: Index,
    ) -> Self {
        let mut log = RaftLog::new();
        if let Some(s) = snapshot {
            log.offset = s.index + 1;
            log.prev_term = s.term;
        }
        if let Some(first) = entries.first() {
            assert!(
                first.index == log.offset,
                "restored entries must start right after the snapshot (at {}), not at {}",
                log.offset,
                first.index
            );
        }
        for w in entries.windows(2) {
            assert!(
                w[1].index == w[0].index + 1 && w[1].term >= w[0].term,
                "restored log entries must be contiguous with non-decreasing terms"
            );
        }
        log.entries = entries.into();
        let last = log.last_index();
        let snap = log.offset - 1;
        let commit = commit.max(snap);
        assert!(
            commit <= last,
            "restored commit {commit} beyond the last entry {last}"
        );
        log.commit = commit;
        log.persisted = last;
        log.unstable_from = last + 1;
        log.applied = applied.max(snap).min(commit);
        log
    }

    /// The first index still held (entries before it are in the snapshot).
    pub fn first_index(&self) -> Index {
        self.offset
    }

    /// Drops the entries up to `index` (which must be applied): they are
    /// covered by a snapshot.
    pub fn compact_to(&mut self, index: Index) {
        if index < self.offset {
            return;
        }
        assert!(
            index <= self.applied,
            "compacting unapplied entries ({index} > {})",
            self.applied
        );
        let t = self.term(index).expect("compaction point within the log");
        self.entries.drain(..(index + 1 - self.offset) as usize);
        self.offset = index + 1;
        self.prev_term = t;
        self.unstable_from = self.unstable_from.max(self.offset);
    }

    /// Installs a received snapshot: keeps the entries after it if the log
    /// holds its last entry, else drops the whole log. Returns whether the
    /// entries after it were kept (false: the whole log was dropped).
    pub fn install(&mut self, meta: SnapshotMeta) -> bool {
        assert!(
            meta.index > self.commit,
            "installing a snapshot at or below commit"
        );
        let kept = self.matches(meta.index, meta.term);
        if kept {
            // Our entries up to the snapshot may not be applied yet: the
            // snapshot replaces them wholesale.
            self.applied = self.applied.max(meta.index);
            self.compact_to(meta.index);
        } else {
            self.entries.clear();
            self.offset = meta.index + 1;
            self.prev_term = meta.term;
            self.unstable_from = self.offset;
            self.persisted = self.persisted.min(meta.index);
        }
        self.commit = meta.index;
        self.applied = self.applied.max(meta.index);
        kept
    }

    /// Gives back the entry queue's spare capacity (an idle group's log).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Bytes of the entry queue's capacity that hold no entry.
    pub fn spare_capacity_bytes(&self) -> usize {
        (self.entries.capacity() - self.entries.len()) * std::mem::size_of::<Entry>()
    }

    /// Checks the invariants written next to the fields (debug builds and
    /// the `ci` test profile).
    pub fn debug_check(&self) {
        let last = self.last_index();
        debug_assert!(self.offset >= 1, "log offset starts at 1");
        debug_assert!(
            self.commit <= last,
            "commit {} <= last index {last}",
            self.commit
        );
        debug_assert!(
            self.persisted <= last,
            "persisted {} <= last index {last}",
            self.persisted
        );
        debug_assert!(
            self.persisted < self.unstable_from && self.unstable_from <= last + 1,
            "persisted {} < unstable_from {} <= last + 1 = {}",
            self.persisted,
            self.unstable_from,
            last + 1
        );
        debug_assert!(
            self.applied <= self.commit,
            "applied {} <= commit {}",
            self.applied,
            self.commit
        );
    }

    #[inline]
    pub fn last_index(&self) -> Index {
        self.offset + self.entries.len() as u64 - 1
    }

    #[inline]
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.prev_term, |e| e.term)
    }

    /// Term of the entry at `i`, if the log holds it (or it is the prefix point).
    #[inline]
    pub fn term(&self, i: Index) -> Option<Term> {
        if i + 1 == self.offset {
            return Some(self.prev_term);
        }
        if i < self.offset {
            return None;
        }
        self.entries.get((i - self.offset) as usize).map(|e| e.term)
    }

    #[inline]
    pub fn matches(&self, i: Index, t: Term) -> bool {
        self.term(i) == Some(t)
    }

    pub fn entry(&self, i: Index) -> Option<&Entry> {
        if i < self.offset {
            return None;
        }
        self.entries.get((i - self.offset) as usize)
    }

    /// Is a log ending at (`last_index`, `last_term`) at least as up to date
    /// as this one (Raft §5.4.1)?
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries in [lo, hi), at most `bytes_max` worth (but at least one).
    pub fn slice(&self, lo: Index, hi: Index, bytes_max: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = lo;
        while i < hi {
            let e = self.entry(i).expect("slice within the log");
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Appends entries that follow the last one (leader side).
    pub fn append(&mut self, e: Entry) {
        debug_assert_eq!(e.index, self.last_index() + 1, "append must extend the log");
        debug_assert!(
            e.term >= self.last_term(),
            "terms never decrease along the log"
        );
        self.entries.push_back(e);
    }

    /// Follower side: `ents` follow a matching (prev_index, prev_term).
    /// Truncates only at a real conflict (same index, different term);
    /// entries already present are left alone, so a delayed or duplicated
    /// AppendEntries never shortens the log. Returns the conflict index.
    pub fn merge(&mut self, ents: &[Entry]) -> Option<Index> {
        let conflict = ents.iter().find(|e| !self.matches(e.index, e.term))?;
        let at = conflict.index;
        assert!(
            at > self.commit,
            "log matching violated: conflict at {at} at or below commit {}",
            self.commit
        );
        if at <= self.last_index() {
            self.entries.truncate((at - self.offset) as usize);
            self.unstable_from = self.unstable_from.min(at);
            self.persisted = self.persisted.min(at - 1);
        }
        for e in &ents[(at - ents[0].index) as usize..] {
            self.append(e.clone());
        }
        Some(at)
    }

    /// The largest index <= `index` whose term is <= `term` (fast
    /// backtracking, as in etcd/raft's findConflictByTerm).
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Entries that are committed, durable, and not yet handed out for
    /// applying, at most `bytes_max` worth (at least one if any).
    pub fn next_to_apply(&mut self, bytes_max: u64) -> Vec<Entry> {
        let hi = self.commit.min(self.persisted);
        if hi <= self.applied {
            return Vec::new();
        }
        let out = self.slice(self.applied + 1, hi + 1, bytes_max);
        self.applied += out.len() as u64;
        out
    }

    /// Entries not yet handed out for persistence.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let last = self.last_index();
        if self.unstable_from > last {
            return Vec::new();
        }
        let out: Vec<Entry> = (self.unstable_from..=last)
            .map(|i| self.entry(i).expect("unstable within log").clone())
            .collect();
        self.unstable_from = last + 1;
        out
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    pub fn has_to_apply(&self) -> bool {
        self.commit.min(self.persisted) > self.applied
    }
}

impl Default for RaftLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: bytes::Bytes::new(),
        }
    }

    fn log_of(terms: &[Term]) -> RaftLog {
        let mut l = RaftLog::new();
        for (i, t) in terms.iter().enumerate() {
            l.append(e(i as u64 + 1, *t));
        }
        l
    }

    #[test]
    fn merge_never_truncates_on_a_matching_duplicate() {
        let mut l = log_of(&[1, 1, 2, 2, 2]);
        assert_eq!(l.merge(&[e(2, 1), e(3, 2)]), None);
        assert_eq!(l.last_index(), 5);
    }

    #[test]
    fn merge_truncates_at_the_first_real_conflict() {
        let mut l = log_of(&[1, 1, 2, 2, 2]);
        l.persisted = 5;
        l.unstable_from = 6;
        assert_eq!(l.merge(&[e(3, 2), e(4, 3)]), Some(4));
        assert_eq!(l.last_index(), 4);
        assert_eq!(l.term(4), Some(3));
        assert_eq!(l.persisted, 3);
        assert_eq!(l.unstable_from, 4);
    }

    #[test]
    #[should_panic(expected = "log matching violated")]
    fn merge_refuses_to_truncate_committed_entries() {
        let mut l = log_of(&[1, 1, 2]);
        l.commit = 3;
        l.merge(&[e(3, 5)]);
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let l = log_of(&[1, 1, 2, 2, 2, 4, 4]);
        assert_eq!(l.find_conflict_by_term(7, 3), (5, 2));
        assert_eq!(l.find_conflict_by_term(7, 4), (7, 4));
        assert_eq!(l.find_conflict_by_term(3, 1), (2, 1));
        assert_eq!(l.find_conflict_by_term(9, 0), (0, 0));
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let l = log_of(&[1, 2, 2]);
        assert!(l.is_up_to_date(3, 2));
        assert!(l.is_up_to_date(1, 3));
        assert!(!l.is_up_to_date(9, 1));
        assert!(!l.is_up_to_date(2, 2));
    }

    #[test]
    fn apply_is_bounded_by_commit_and_persistence() {
        let mut l = log_of(&[1, 1, 1]);
        l.commit = 3;
        l.persisted = 2;
        assert_eq!(l.next_to_apply(u64::MAX).len(), 2);
        l.persisted = 3;
        assert_eq!(l.next_to_apply(u64::MAX).len(), 1);
        assert!(!l.has_to_apply());
    }
}
