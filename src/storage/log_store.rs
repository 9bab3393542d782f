//! A shard's log store: the one WAL all of the shard's replicas write
//! (group commit across groups), the replica catalog recorded in it, and
//! the point below which the WAL is released.
//!
//! What each replica needs of the WAL is its [`GroupLog`] (kept with the
//! replica, passed in); the store turns Readies into records and records
//! into LSNs, and releases what no replica and no catalog entry needs.
//! Errors are the WAL's: a full disk (`WalError::is_disk_full`, the shard
//! degrades), or a failure that stops the shard (fail-stop on fsync).
//!
//! Rules:
//! - A group's records go in LSN order; a record is noted in its group's
//!   log when submitted, and counts as durable only once the WAL says so.
//! - A catalog operation is applied to the catalog only once its record is
//!   durable (`catalog::append_catalog`).
//! - Hard-state rewrites of idle groups are one batch with one sync.
//! - The catalog is restated by segments: once its oldest entry lies in a
//!   segment older than the one holding what the replicas need, everything
//!   stated before that segment is written again (`restate_stale_catalog`).

use std::rc::Rc;

use ringraft_wal::{Disk, Wal, WalError};

use super::catalog::{self, Catalog, CatalogOp};
use super::{
    encode_install, encode_record, entries_in_next_record, record_bytes, GroupLog,
    INSTALL_RECORD_BYTES,
};
use crate::raft::{Entry, HardState};

/// The WAL, the replica catalog in it, and the release point.
pub struct LogStore<D: Disk> {
    wal: Rc<Wal<D>>,
    /// The replica catalog as durable in the WAL.
    catalog: Catalog,
    /// Every LSN below it was handed to `Wal::release_before`.
    released_lsn: u64,
    record_bytes_max: usize,
}

impl<D: Disk> LogStore<D> {
    /// A store over an opened (replayed) WAL and the catalog replay built.
    pub fn new(wal: Wal<D>, catalog: Catalog, record_bytes_max: usize) -> Self {
        LogStore {
            wal: Rc::new(wal),
            catalog,
            released_lsn: 0,
            record_bytes_max,
        }
    }

    /// The WAL (durability waits, health, stats).
    pub fn wal(&self) -> &Rc<Wal<D>> {
        &self.wal
    }

    /// The WAL itself, for a caller closing it (the store must hold the
    /// only reference: no write waits on it).
    pub fn into_wal(self) -> Wal<D> {
        Rc::try_unwrap(self.wal)
            .unwrap_or_else(|_| panic!("LogStore::into_wal while the WAL is shared"))
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Writes `ops` to the catalog, durably, before returning.
    pub async fn append_catalog(
        &mut self,
        restate: bool,
        ops: &[CatalogOp],
    ) -> Result<(), WalError> {
        let wal = self.wal.clone();
        catalog::append_catalog(&wal, &mut self.catalog, restate, ops, self.record_bytes_max).await
    }

    /// Appends group `group`'s hard state `hs` and `entries` (one record,
    /// or several past `record_bytes_max`), noting each in `log`, after
    /// the install marker `log` holds pending (`GroupLog::install_pending`,
    /// a record of its own); waits while the WAL's queue is full (until
    /// its oldest write lands). Returns (LSN of the last record, records
    /// written); (0, 0) if there was nothing to write.
    pub async fn append_group(
        &self,
        group: u64,
        mut hs: Option<HardState>,
        mut entries: &[Entry],
        log: &mut GroupLog,
    ) -> Result<(u64, u64), WalError> {
        let (mut lsn, mut records) = (0, 0);
        loop {
            match self.try_append_next(group, &mut hs, &mut entries, log) {
                Ok(Some(l)) => (lsn, records) = (l, records + 1),
                Ok(None) => return Ok((lsn, records)),
                Err(WalError::QueueFull { .. }) => self.wait_for_space().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits the next record of a group's write: its pending install
    /// marker, else the hard state `hs` (taken) with as many of `entries`
    /// as fit (`entries_in_next_record`; consumed), noted in `log`. The
    /// LSN; None when nothing is left. A full queue changes nothing.
    fn try_append_next(
        &self,
        group: u64,
        hs: &mut Option<HardState>,
        entries: &mut &[Entry],
        log: &mut GroupLog,
    ) -> Result<Option<u64>, WalError> {
        if let Some((index, term)) = log.install_pending {
            let lsn = self.try_submit_install(group, index, term)?;
            log.install_pending = None;
            return Ok(Some(lsn));
        }
        if hs.is_none() && entries.is_empty() {
            return Ok(None);
        }
        let n = entries_in_next_record(hs.is_some(), entries, self.record_bytes_max);
        let (chunk, rest) = entries.split_at(n);
        let lsn = self.try_submit(group, hs.as_ref(), chunk)?;
        log.note_record(lsn, hs.take(), chunk);
        *entries = rest;
        Ok(Some(lsn))
    }

    fn try_submit(
        &self,
        group: u64,
        hs: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<u64, WalError> {
        let bytes = record_bytes(hs.is_some(), entries);
        self.wal
            .try_submit_with(bytes, |out| encode_record(out, group, hs, entries))
    }

    fn try_submit_install(&self, group: u64, index: u64, term: u64) -> Result<u64, WalError> {
        self.wal.try_submit_with(INSTALL_RECORD_BYTES, |out| {
            encode_install(out, group, index, term)
        })
    }

    async fn submit(
        &self,
        group: u64,
        hs: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<u64, WalError> {
        loop {
            match self.try_submit(group, hs, entries) {
                Err(WalError::QueueFull { .. }) => self.wait_for_space().await?,
                r => return r,
            }
        }
    }

    /// Waits until the WAL's oldest queued write lands.
    async fn wait_for_space(&self) -> Result<(), WalError> {
        let oldest = self.wal.durable_lsn() + 1;
        self.wal.wait_durable(oldest).await
    }

    /// Writes each group's hard state again, with its log's entries when
    /// it gives them (a record each, one batch), and waits once for the
    /// last to be durable; each log then counts it as durable. Making a
    /// hard state durable early is harmless: replay takes the latest
    /// record. A group's entries, when given, must run from an index at or
    /// below its durable snapshot's + 1 (1 without one) to its last entry,
    /// all of them already durable: the new record then holds everything of
    /// the log the snapshot does not, and the older records are no longer
    /// needed (`GroupLog::note_log_rewritten`). Returns the records written.
    pub async fn rewrite_records(
        &self,
        groups: &mut [RecordRewrite<'_>],
    ) -> Result<usize, WalError> {
        let mut lsns = Vec::with_capacity(groups.len());
        for r in groups.iter() {
            lsns.push(self.submit(r.group, Some(&r.hs), &r.entries).await?);
        }
        let Some(&last) = lsns.last() else {
            return Ok(0);
        };
        self.wal.wait_durable(last).await?;
        for (r, lsn) in groups.iter_mut().zip(lsns) {
            match (r.entries.first(), r.entries.last()) {
                (Some(f), Some(l)) => r.log.note_log_rewritten(lsn, r.hs, f.index, l.index),
                _ => r.log.note_written(lsn, Some(r.hs), None),
            }
            r.log.note_durable(lsn);
        }
        Ok(groups.len())
    }

    /// Restates the catalog if its oldest entry lies in a segment older
    /// than the one holding `replicas_need` (the lowest LSN any replica
    /// needs): it then pins at most the replicas' own oldest segment. (A
    /// bound in records let it keep eight 4 MiB segments: group commit
    /// packs thousands of writes into one record.) Whether it wrote.
    pub async fn restate_stale_catalog(&mut self, replicas_need: u64) -> Result<bool, WalError> {
        let Some(stale_at_or_below) = self.catalog_stale_at_or_below(replicas_need) else {
            return Ok(false);
        };
        let ops = self.catalog.stated_at_or_below(stale_at_or_below);
        self.append_catalog(true, &ops).await?;
        Ok(true)
    }

    /// Whether [`LogStore::restate_stale_catalog`] with `replicas_need`
    /// would write now (a caller may skip the call otherwise).
    pub fn catalog_restate_due(&self, replicas_need: u64) -> bool {
        self.catalog_stale_at_or_below(replicas_need).is_some()
    }

    /// The LSN at or below which catalog entries are stale (in a segment
    /// older than the one holding `replicas_need`), if any entry is.
    fn catalog_stale_at_or_below(&self, replicas_need: u64) -> Option<u64> {
        let keep_from = self
            .wal
            .segment_start(replicas_need.min(self.wal.next_lsn()));
        let stale_at_or_below = keep_from.saturating_sub(1);
        (self.catalog.needed_lsn() <= stale_at_or_below).then_some(stale_at_or_below)
    }

    /// Releases the WAL below what the replicas (`replicas_need`, the
    /// lowest LSN any of them needs) and the catalog need; the number of
    /// segments released.
    pub async fn release(&mut self, replicas_need: u64) -> Result<usize, WalError> {
        let victims = self.detach_released(replicas_need)?;
        self.wal.remove_detached(&victims).await?;
        Ok(victims.len())
    }

    /// [`LogStore::release`] at once, but for the segments' files: the
    /// segments leave the WAL (`Wal::detach_before`) and their names are
    /// returned for `Wal::remove_detached`, which the shard runs in the
    /// background so that unlinking never holds its turn.
    pub fn detach_released(&mut self, replicas_need: u64) -> Result<Vec<String>, WalError> {
        let needed = self.release_point(replicas_need);
        if needed <= self.released_lsn {
            return Ok(Vec::new());
        }
        let victims = self.wal.detach_before(needed)?;
        self.released_lsn = needed;
        Ok(victims)
    }

    /// Whether [`LogStore::release`] with `replicas_need` would delete a
    /// segment now (a caller may skip the call otherwise).
    pub fn release_due(&self, replicas_need: u64) -> bool {
        let needed = self.release_point(replicas_need);
        needed > self.released_lsn && self.wal.releasable_before(needed) > 0
    }

    /// The LSN below which nothing is needed: by the replicas, by the
    /// catalog, or not yet written.
    fn release_point(&self, replicas_need: u64) -> u64 {
        replicas_need
            .min(self.catalog.needed_lsn())
            .min(self.wal.next_lsn())
    }

    /// The lowest LSN not yet released.
    pub fn released_lsn(&self) -> u64 {
        self.released_lsn
    }
}

/// One group's record for [`LogStore::rewrite_records`].
pub struct RecordRewrite<'a> {
    pub group: u64,
    pub hs: HardState,
    /// Empty, or every entry of the group's log from one at or below its
    /// durable snapshot's index + 1 (index 1 without one) to its last.
    pub entries: Vec<Entry>,
    pub log: &'a mut GroupLog,
}
