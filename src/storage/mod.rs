//! A shard's Raft log store over its WAL: the entries and hard states of all
//! its groups as WAL records, their replay, snapshot files, and the WAL
//! release point.
//!
//! The entries themselves stay in each group's in-memory Raft log until
//! compaction; this layer encodes what a Ready must make durable, and on
//! restart rebuilds each group's (hard state, entries) from the records.

pub mod catalog;
pub mod log_store;
pub mod snapfile;

pub use catalog::{Catalog, CatalogError, CatalogOp, ReplicaDesc};
pub use log_store::{LogStore, RecordRewrite};

/// Free bytes of the filesystem holding `path` for an unprivileged writer
/// (`statvfs`: `f_bavail` blocks of `f_frsize` bytes). A blocking call:
/// on an executor, run it on the blocking pool. Errors: `statvfs`'s (the
/// path does not exist, or cannot be read).
pub fn fs_free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the zeroed struct we own; `c` is a
    // NUL-terminated string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Writes `bytes` to `path` durably, so that a file under that name is
/// always whole: a temporary file (`path` + `.tmp`) written in chunks of at
/// most 1 MiB, `fdatasync`ed, renamed into place, then the directory
/// synced. On the executor's ring (never blocks the thread). The error
/// names the path it concerns (the temporary file, `path`, or the
/// directory).
pub async fn replace_file(
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    const WRITE_BYTES_MAX: usize = 1 << 20;
    let tmp = tmp_path(path);
    let f = glommio::io::BufferedFile::create(&tmp)
        .await
        .map_err(gio(&tmp))?;
    let mut pos = 0;
    while pos < bytes.len() {
        let chunk = bytes[pos..(pos + WRITE_BYTES_MAX).min(bytes.len())].to_vec();
        let k = f.write_at(chunk, pos as u64).await.map_err(gio(&tmp))?;
        if k == 0 {
            return Err((tmp, std::io::ErrorKind::WriteZero.into()));
        }
        pos += k;
    }
    f.fdatasync().await.map_err(gio(&tmp))?;
    f.close().await.map_err(gio(&tmp))?;
    publish(&tmp, path).await
}

/// The temporary name a file is written under before [`publish`]:
/// `path` + `.tmp`.
fn tmp_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::path::PathBuf::from(tmp)
}

/// A glommio error as an I/O error naming the path it concerns.
fn gio(
    p: &std::path::Path,
) -> impl FnOnce(glommio::GlommioError<()>) -> (std::path::PathBuf, std::io::Error) {
    let p = p.to_path_buf();
    move |e| (p, std::io::Error::from(e))
}

/// Renames the synced temporary file `tmp` to `path`, then syncs the
/// directory: the file is under its name, whole, and durably so.
async fn publish(
    tmp: &std::path::Path,
    path: &std::path::Path,
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    glommio::io::rename(tmp, path).await.map_err(gio(path))?;
    let d = glommio::io::Directory::open(dir).await.map_err(gio(dir))?;
    d.sync().await.map_err(gio(dir))?;
    let _ = d.close().await;
    Ok(())
}

/// Bytes a direct (O_DIRECT) file write hands the disk at once
/// ([`replace_file_direct`]).
pub const DIRECT_WRITE_BYTES: usize = 1 << 20;

/// [`replace_file`] through the disk directly (O_DIRECT, glommio's DMA
/// stream), for large files given in parts (a snapshot file's header,
/// then its data, never copied whole into one buffer): one write of
/// [`DIRECT_WRITE_BYTES`] in flight at a time, and none of it in the page
/// cache. A buffered write of a 400 MiB snapshot left it all to the final
/// `fdatasync`, whose writeback held every WAL sync of the shard behind it
/// for 40-100 ms; here a WAL sync waits behind one write at most. The
/// last block is padded and the file truncated to its length, then
/// synced.
pub async fn replace_file_direct(
    path: &std::path::Path,
    parts: &[&[u8]],
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    use futures_lite::AsyncWriteExt;
    let tmp = tmp_path(path);
    let at = |p: &std::path::Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| (p, e)
    };
    let f = glommio::io::DmaFile::create(&tmp)
        .await
        .map_err(gio(&tmp))?;
    let mut w = glommio::io::DmaStreamWriterBuilder::new(f)
        .with_buffer_size(DIRECT_WRITE_BYTES)
        .with_write_behind(1)
        .build();
    for part in parts {
        for chunk in part.chunks(DIRECT_WRITE_BYTES) {
            w.write_all(chunk).await.map_err(at(&tmp))?;
        }
    }
    // Flushes, syncs, truncates to the length written and closes; the
    // truncate comes after glommio's sync, so the length is synced here.
    w.close().await.map_err(at(&tmp))?;
    let f = glommio::io::BufferedFile::open(&tmp)
        .await
        .map_err(gio(&tmp))?;
    f.fdatasync().await.map_err(gio(&tmp))?;
    let _ = f.close().await;
    publish(&tmp, path).await
}

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use crate::raft::{Entry, EntryKind, HardState, Index};

// record = kind u8 = 1 | flags u8 (bit 0: hard state follows; bit 1:
//            install marker follows) | pad u16
//          | count u32 | group u64
//          | [ term u64 | vote u64 | commit u64 ]
//          | [ index u64 | term u64 ]      (install marker)
//          | { term u64 | index u64 | kind u8 | pad [3] | len u32 | data,
//              zero-padded to 8 }*            (count entries, consecutive)
// Replay: a record's first entry supersedes whatever the group held at
// that index and after (Raft's overwrite of a follower's divergent tail).
// An install marker (index, term) is where the replica installed a
// leader's snapshot that its log did not hold (index, term): the core
// dropped its whole log then (`raft::log::RaftLog::install`), and replay
// drops every entry before the marker too (superseded by the snapshot,
// though still in the WAL). An install whose log held (index, term) kept
// the entries after it and writes no marker: replay keeps them, and the
// restart trims to the snapshot (`GroupLog::take_restart`). Replay could
// not tell the two apart by itself: once the records up to the snapshot
// are released, a kept log and a dropped one both start at index + 1.
const REC_GROUP: u8 = 1;
const FLAG_HS: u8 = 1;
const FLAG_INSTALL: u8 = 2;
const REC_HEAD_BYTES: usize = 16;
const HS_BYTES: usize = 24;
const INSTALL_BYTES: usize = 16;
/// Bytes of an install marker's record ([`encode_install`]).
pub const INSTALL_RECORD_BYTES: usize = REC_HEAD_BYTES + INSTALL_BYTES;
const ENTRY_HEAD_BYTES: usize = 24;
const _: () = assert!(REC_HEAD_BYTES.is_multiple_of(8) && ENTRY_HEAD_BYTES.is_multiple_of(8));

/// Bytes a record takes for `entries` (and a hard state if `hs`).
pub fn record_bytes(hs: bool, entries: &[Entry]) -> usize {
    REC_HEAD_BYTES
        + if hs { HS_BYTES } else { 0 }
        + entries
            .iter()
            .map(|e| ENTRY_HEAD_BYTES + e.data.len().next_multiple_of(8))
            .sum::<usize>()
}

/// Bytes one entry adds to a record.
pub fn entry_record_bytes(e: &Entry) -> usize {
    ENTRY_HEAD_BYTES + e.data.len().next_multiple_of(8)
}

/// Writes the record into `out` (exactly [`record_bytes`] long).
pub fn encode_record(out: &mut [u8], group: u64, hs: Option<&HardState>, entries: &[Entry]) {
    debug_assert_eq!(out.len(), record_bytes(hs.is_some(), entries));
    debug_assert!(entries.windows(2).all(|w| w[1].index == w[0].index + 1));
    out[0] = REC_GROUP;
    out[1] = if hs.is_some() { FLAG_HS } else { 0 };
    out[2..4].fill(0);
    out[4..8].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    out[8..16].copy_from_slice(&group.to_le_bytes());
    let mut at = REC_HEAD_BYTES;
    if let Some(hs) = hs {
        out[at..at + 8].copy_from_slice(&hs.term.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&hs.vote.to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&hs.commit.to_le_bytes());
        at += HS_BYTES;
    }
    for e in entries {
        out[at..at + 8].copy_from_slice(&e.term.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&e.index.to_le_bytes());
        out[at + 16] = match e.kind {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::ConfChange => 2,
        };
        out[at + 17..at + 20].fill(0);
        out[at + 20..at + 24].copy_from_slice(&(e.data.len() as u32).to_le_bytes());
        at += ENTRY_HEAD_BYTES;
        out[at..at + e.data.len()].copy_from_slice(&e.data);
        let padded = e.data.len().next_multiple_of(8);
        out[at + e.data.len()..at + padded].fill(0);
        at += padded;
    }
    debug_assert_eq!(at, out.len());
}

/// Writes the record of an install marker: group `group`'s replica
/// installed a leader's snapshot through (`index`, `term`) (exactly
/// [`INSTALL_RECORD_BYTES`] long).
pub fn encode_install(out: &mut [u8], group: u64, index: Index, term: u64) {
    debug_assert_eq!(out.len(), INSTALL_RECORD_BYTES);
    out[0] = REC_GROUP;
    out[1] = FLAG_INSTALL;
    out[2..8].fill(0);
    out[8..16].copy_from_slice(&group.to_le_bytes());
    out[16..24].copy_from_slice(&index.to_le_bytes());
    out[24..32].copy_from_slice(&term.to_le_bytes());
}

/// How many of `entries` the next record holds: as many as fit in
/// `record_bytes_max` with the hard state if `hs` (at least one entry, so a
/// larger entry goes alone; the WAL refuses it if it exceeds its own
/// limit).
pub fn entries_in_next_record(hs: bool, entries: &[Entry], record_bytes_max: usize) -> usize {
    let mut n = 0;
    let mut bytes = record_bytes(hs, &[]);
    while n < entries.len() {
        let b = entry_record_bytes(&entries[n]);
        if n > 0 && bytes + b > record_bytes_max {
            break;
        }
        bytes += b;
        n += 1;
    }
    n
}

/// The records a hard state `hs` and `entries` are written as: the hard
/// state goes with the first; each holds as many entries as fit in
/// `record_bytes_max` ([`entries_in_next_record`]). None when there is
/// nothing to write.
pub fn split_records(
    mut hs: Option<HardState>,
    entries: &[Entry],
    record_bytes_max: usize,
) -> impl Iterator<Item = (Option<HardState>, &[Entry])> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if hs.is_none() && rest.is_empty() {
            return None;
        }
        let n = entries_in_next_record(hs.is_some(), rest, record_bytes_max);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some((hs.take(), chunk))
    })
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub group: u64,
    pub hs: Option<HardState>,
    /// An install marker: the leader's snapshot (index, term) the replica
    /// installed here, dropping its whole log (see the format above).
    pub installed: Option<(Index, u64)>,
    pub entries: Vec<Entry>,
}

/// A WAL record that is not one this code writes: the WAL's checksum
/// passed, so this is a bug or another version; the node stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WAL record {lsn} is not a valid group record: {why}")]
pub struct RecordError {
    pub lsn: u64,
    pub why: &'static str,
}

/// Decodes a record; entry payloads are slices of `b`.
pub fn decode_record(lsn: u64, b: &Bytes) -> Result<Record, RecordError> {
    let err = |why| RecordError { lsn, why };
    if b.len() < REC_HEAD_BYTES || b[0] != REC_GROUP || b[1] & !(FLAG_HS | FLAG_INSTALL) != 0 {
        return Err(err("bad header"));
    }
    let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")) as usize;
    let group = u64at(8);
    let mut at = REC_HEAD_BYTES;
    let hs = if b[1] & FLAG_HS != 0 {
        if b.len() < at + HS_BYTES {
            return Err(err("truncated hard state"));
        }
        let hs = HardState {
            term: u64at(at),
            vote: u64at(at + 8),
            commit: u64at(at + 16),
        };
        at += HS_BYTES;
        Some(hs)
    } else {
        None
    };
    let installed = if b[1] & FLAG_INSTALL != 0 {
        if b.len() < at + INSTALL_BYTES {
            return Err(err("truncated install marker"));
        }
        let m = (u64at(at), u64at(at + 8));
        at += INSTALL_BYTES;
        Some(m)
    } else {
        None
    };
    let mut entries = Vec::with_capacity(count.min(b.len() / ENTRY_HEAD_BYTES));
    for _ in 0..count {
        if b.len() < at + ENTRY_HEAD_BYTES {
            return Err(err("truncated entry header"));
        }
        let kind = match b[at + 16] {
            0 => EntryKind::Normal,
            1 => EntryKind::Noop,
            2 => EntryKind::ConfChange,
            _ => return Err(err("bad entry kind")),
        };
        let len = u32::from_le_bytes(b[at + 20..at + 24].try_into().expect("4 bytes")) as usize;
        let (term, index) = (u64at(at), u64at(at + 8));
        at += ENTRY_HEAD_BYTES;
        if b.len() < at + len.next_multiple_of(8) {
            return Err(err("truncated entry"));
        }
        if entries.last().is_some_and(|p: &Entry| p.index + 1 != index) {
            return Err(err("entries not consecutive"));
        }
        entries.push(Entry {
            term,
            index,
            kind,
            data: b.slice(at..at + len),
        });
        at += len.next_multiple_of(8);
    }
    if at != b.len() {
        return Err(err("trailing bytes"));
    }
    Ok(Record {
        group,
        hs,
        installed,
        entries,
    })
}

/// What replay rebuilt for one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLog {
    pub hs: HardState,
    /// Consecutive entries (the first may follow a snapshot).
    pub entries: Vec<Entry>,
    /// First entry index of each record still holding live entries → its LSN.
    pub record_lsns: BTreeMap<Index, u64>,
    /// LSN of the record holding the latest hard state written.
    pub hs_lsn: u64,
    /// LSN of the latest hard-state record known durable (0: none). The
    /// WAL must keep it until a later one is durable: while `hs_lsn` is
    /// still in flight, a crash recovers this one (releasing it left a
    /// node that had voted to restart with no term and no vote).
    /// Invariant: `hs_lsn_durable <= hs_lsn`.
    pub hs_lsn_durable: u64,
    /// LSNs of the hard-state records written and not yet known durable,
    /// oldest first (as many as the WAL has records in flight; empty, and
    /// unallocated, for an idle group).
    pub hs_lsns_in_flight: VecDeque<u64>,
    /// Index of the last entry written (0: none); a record from `first` on
    /// ends the log where it ends.
    pub last_index: Index,
    /// A leader's snapshot (index, term) installed over a log that did not
    /// hold its last entry (dropped whole), not yet marked in the WAL: the
    /// next write of the group starts with its install
    /// marker (`LogStore::append_group`).
    pub install_pending: Option<(Index, u64)>,
}

impl GroupLog {
    /// Applies one record, as written (also used to track live writes).
    pub fn apply(&mut self, lsn: u64, r: Record) {
        if let Some(hs) = r.hs {
            self.hs = hs;
            self.hs_lsn = lsn;
            self.hs_lsn_durable = lsn;
            self.hs_lsns_in_flight.clear();
        }
        if let Some((index, _term)) = r.installed {
            self.replay_install(index);
        }
        let (Some(first), Some(last)) = (r.entries.first(), r.entries.last()) else {
            return;
        };
        let (first, last) = (first.index, last.index);
        self.last_index = last;
        self.record_lsns.split_off(&first);
        self.record_lsns.insert(first, lsn);
        let start = self.entries.first().map_or(first, |e| e.index);
        if first < start || first > start + self.entries.len() as u64 {
            // Before what is held, or after a gap (entries that follow a
            // snapshot installed since): start over from this record.
            self.entries.clear();
            self.record_lsns.retain(|&i, _| i >= first);
        } else {
            self.entries.truncate((first - start) as usize);
        }
        self.entries.extend(r.entries);
    }

    /// Where `entries` holds the entry (`index`, `term`), if it does.
    fn position_of(&self, index: Index, term: u64) -> Option<usize> {
        let start = self.entries.first()?.index;
        let at = usize::try_from(index.checked_sub(start)?).ok()?;
        self.entries.get(at).filter(|e| e.term == term).map(|_| at)
    }

    /// Replays an install marker as the core installed the snapshot
    /// through `index` (`RaftLog::install` with a log that did not hold
    /// its last entry): the whole log is dropped.
    fn replay_install(&mut self, index: Index) {
        self.entries.clear();
        self.record_lsns.clear();
        self.last_index = index;
    }

    /// Notes a record written at `lsn` while running (its hard state, the
    /// indexes of its first and last entries): what the group needs of the
    /// WAL. The entries themselves stay in the Raft log, not here.
    pub fn note_written(
        &mut self,
        lsn: u64,
        hs: Option<HardState>,
        entries: Option<(Index, Index)>,
    ) {
        if let Some(h) = hs {
            debug_assert!(lsn > self.hs_lsn, "hard-state records in LSN order");
            self.hs = h;
            self.hs_lsn = lsn;
            self.hs_lsns_in_flight.push_back(lsn);
        }
        if let Some((first, last)) = entries {
            // A record from `first` on supersedes the records after it.
            debug_assert!(first <= last);
            self.record_lsns.split_off(&first);
            self.record_lsns.insert(first, lsn);
            self.last_index = last;
        }
    }

    /// Notes a record written at `lsn` holding `hs` and the entries
    /// `first..=last`, which are every entry of the log past its durable
    /// snapshot (whose index is at least `first - 1`): the older records
    /// are no longer needed, whatever entries they hold
    /// (`LogStore::rewrite_records`).
    pub fn note_log_rewritten(&mut self, lsn: u64, hs: HardState, first: Index, last: Index) {
        debug_assert_eq!(last, self.last_index, "the whole log rewritten");
        self.note_written(lsn, Some(hs), Some((first, last)));
        self.record_lsns.retain(|&i, _| i >= first);
    }

    /// [`GroupLog::note_written`] for a record of `hs` and `entries`.
    pub fn note_record(&mut self, lsn: u64, hs: Option<HardState>, entries: &[Entry]) {
        let span = entries.first().zip(entries.last());
        self.note_written(lsn, hs, span.map(|(f, l)| (f.index, l.index)));
    }

    /// Notes that every record up to `durable_lsn` is durable.
    pub fn note_durable(&mut self, durable_lsn: u64) {
        while let Some(&l) = self.hs_lsns_in_flight.front() {
            if l > durable_lsn {
                break;
            }
            self.hs_lsn_durable = l;
            self.hs_lsns_in_flight.pop_front();
        }
        debug_assert!(self.hs_lsn_durable <= self.hs_lsn);
    }

    /// At run time, once a snapshot through `index` is durable: the
    /// records wholly at or below it are no longer needed. The record that
    /// holds `index + 1` and every later one stay (their entries are live,
    /// and may have been acknowledged). Replay's `trim_to_snapshot` also
    /// drops entries; at run time the entries live in the Raft log, not
    /// here (using it here dropped every record's LSN, so the WAL could be
    /// released past acknowledged entries).
    pub fn release_through(&mut self, index: Index) {
        if index >= self.last_index {
            // Every entry written is covered.
            self.record_lsns.clear();
            return;
        }
        let keep_from = self
            .record_lsns
            .range(..=index + 1)
            .next_back()
            .map(|(&i, _)| i);
        if let Some(k) = keep_from {
            self.record_lsns = self.record_lsns.split_off(&k);
        }
    }

    /// What a replica restarts from, given its latest durable snapshot
    /// (`index`, `term`): its hard state, the entries after the snapshot
    /// (taken out of `self`) and its applied index (the snapshot's).
    /// A crash may leave a hard state whose commit is past the entries
    /// that made it to disk: the commit is cut to them (the leader will
    /// say again).
    pub fn take_restart(&mut self, snap: Option<(Index, u64)>) -> Restart {
        let mut applied = 0;
        if let Some((index, term)) = snap {
            self.trim_to_snapshot(index, term);
            applied = index;
            // The term is at least the snapshot's (a term only grows, and
            // a node's log never ends in a later term than its own): a
            // replica made from a split starts from a snapshot with no
            // hard state written yet. A vote is for a term the hard state
            // names, so it goes with the older term (no vote at the
            // snapshot's term was durable, or the term would be).
            if self.hs.term < term {
                self.hs.term = term;
                self.hs.vote = 0;
            }
        }
        let last = self
            .entries
            .last()
            .map_or(applied, |e| e.index.max(applied));
        self.hs.commit = self.hs.commit.min(last).max(applied);
        Restart {
            hs: self.hs,
            entries: std::mem::take(&mut self.entries),
            applied,
        }
    }

    /// At replay: drops what snapshot (`index`, `term`) covers: entries up
    /// to it, and all of them if the log does not hold the snapshot's
    /// (index, term); with them the LSNs of records holding none of the
    /// entries kept.
    pub fn trim_to_snapshot(&mut self, index: Index, term: u64) {
        let start = self.entries.first().map_or(index + 1, |e| e.index);
        if let Some(at) = self.position_of(index, term) {
            self.entries.drain(..=at);
        } else if start <= index || start > index + 1 {
            self.entries.clear();
        }
        // Records wholly before the snapshot are no longer needed.
        self.release_through(index);
        if self.entries.is_empty() {
            self.record_lsns.clear();
        }
        self.hs.commit = self.hs.commit.max(index);
    }

    /// The lowest LSN this group still needs (`u64::MAX`: none; LSNs
    /// start at 1, so an `hs_lsn_durable` of 0 means no hard state is
    /// durable yet): its oldest record with live entries and its latest
    /// durable hard state.
    pub fn needed_lsn(&self) -> u64 {
        let hs = if self.hs_lsn_durable == 0 {
            u64::MAX
        } else {
            self.hs_lsn_durable
        };
        self.record_lsns
            .values()
            .next()
            .copied()
            .unwrap_or(u64::MAX)
            .min(hs)
    }
}

/// A replica's durable state after replay ([`GroupLog::take_restart`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub hs: HardState,
    /// Consecutive entries after the snapshot.
    pub entries: Vec<Entry>,
    /// The snapshot's index (0: none).
    pub applied: Index,
}

/// Opens the WAL in `disk` and replays it ([`Replay`]): the node's start
/// (`shard/load.rs`) and the simulator's restarts (over `MemDisk`) both
/// come through here. A record that does not decode is left in
/// `Replay::error` for the caller to report.
pub async fn open_wal<D: ringraft_wal::Disk>(
    disk: D,
    opts: ringraft_wal::WalOptions,
) -> Result<(ringraft_wal::Wal<D>, Replay, ringraft_wal::RecoveryReport), ringraft_wal::WalError> {
    let mut replay = Replay::default();
    let (wal, report) =
        ringraft_wal::Wal::open(disk, opts, |lsn, p| replay.on_record(lsn, p)).await?;
    Ok((wal, replay, report))
}

/// Replays WAL records into per-group logs and the replica catalog.
#[derive(Debug, Default)]
pub struct Replay {
    /// Per-group logs. After replay, only groups with a live replica in
    /// `catalog` are to be used (see [`Replay::finish`]).
    pub groups: HashMap<u64, GroupLog>,
    pub catalog: Catalog,
    pub records: u64,
    pub error: Option<RecordError>,
}

impl Replay {
    /// For `Wal::open`'s record callback. The payload is copied once per
    /// record; entries are slices of that copy.
    pub fn on_record(&mut self, lsn: u64, payload: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.records += 1;
        let b = Bytes::copy_from_slice(payload);
        if b.first() == Some(&catalog::REC_CATALOG) {
            match catalog::decode_catalog(lsn, &b) {
                Ok((restate, ops)) => {
                    for op in ops {
                        let group = op.group();
                        if self.catalog.apply(lsn, restate, op) == catalog::LogEffect::Discard {
                            self.groups.remove(&group);
                        }
                    }
                }
                Err(e) => self.error = Some(e),
            }
            return;
        }
        match decode_record(lsn, &b) {
            Ok(r) => self.groups.entry(r.group).or_default().apply(lsn, r),
            Err(e) => self.error = Some(e),
        }
    }

    /// Drops the logs of groups without a live replica (destroyed, or
    /// never created here); returns how many were dropped.
    pub fn finish(&mut self) -> usize {
        let before = self.groups.len();
        let catalog = &self.catalog;
        self.groups.retain(|&g, _| catalog.get(g).is_some());
        before - self.groups.len()
    }
}

#[cfg(test)]
mod tests;
