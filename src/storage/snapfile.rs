//! Snapshot files: one per group, written to a temporary name, fsynced,
//! renamed into place and the directory fsynced, so a file under its final
//! name is always whole.
//!
//! ```text
//! name = {group:08}-{index:020}.snap
//! file = header (64 bytes) | conf | data
//!   0  magic      [8] = "RRSNAP02" ("RRSNAP01": conf without placements)
//!   8  group      u64 LE
//!  16  index      u64 LE
//!  24  term       u64 LE
//!  32  conf_len   u32 LE
//!  36  data_crc   u32 LE  CRC32 of conf and data
//!  40  data_len   u64 LE
//!  48  reserved   [12] = 0
//!  60  head_crc   u32 LE  CRC32 of bytes 0..60
//! conf = voters | voters_outgoing | learners, each: count u32 | ids u64*
//!        | placements: count u32 (2 per placement) | (replica u64 | node u64)*
//!        | count u32 = 1 | next_replica_id u64
//! A version 1 file's members were placed on the nodes of their ids (the
//! ids were node ids then).
//! ```

use std::path::{Path, PathBuf};

use crate::raft::{ConfState, Placement, Snapshot, SnapshotMeta};

const MAGIC: &[u8; 8] = b"RRSNAP02";
const MAGIC_V1: &[u8; 8] = b"RRSNAP01";
const HEAD_BYTES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SnapFileError {
    #[error("snapshot file {file}: {why}")]
    Corrupt { file: String, why: &'static str },
    #[error("snapshot file {file}: {err}")]
    Io { file: String, err: std::io::Error },
}

fn io(file: &Path, e: impl Into<std::io::Error>) -> SnapFileError {
    SnapFileError::Io {
        file: file.display().to_string(),
        err: e.into(),
    }
}

fn gio(file: &Path, e: glommio::GlommioError<()>) -> SnapFileError {
    io(file, std::io::Error::from(e))
}

pub fn file_name(group: u64, index: u64) -> String {
    format!("{group:08}-{index:020}.snap")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let (g, i) = stem.split_once('-')?;
    Some((g.parse().ok()?, i.parse().ok()?))
}

fn encode_conf(out: &mut Vec<u8>, c: &ConfState) {
    for ids in [&c.voters, &c.voters_outgoing, &c.learners] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out.extend_from_slice(&(2 * c.placements.len() as u32).to_le_bytes());
    for p in &c.placements {
        out.extend_from_slice(&p.replica.to_le_bytes());
        out.extend_from_slice(&p.node.to_le_bytes());
    }
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&c.next_replica_id.to_le_bytes());
}

/// The bytes of a snapshot file.
pub fn encode(group: u64, s: &Snapshot) -> Vec<u8> {
    let mut out = head(group, s, crc32fast::hash(&s.data));
    out.extend_from_slice(&s.data);
    out
}

/// A snapshot file's first part, its header and membership, given the
/// CRC32 of its data (`data_crc`, computed where it costs no executor
/// time); the data follows it in the file. The header's checksum of
/// membership and data is combined from the two, so the data is not read
/// again here.
pub fn head(group: u64, s: &Snapshot, data_crc: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD_BYTES + 64);
    out.resize(HEAD_BYTES, 0);
    encode_conf(&mut out, &s.conf);
    let conf_len = out.len() - HEAD_BYTES;
    let mut body = crc32fast::Hasher::new();
    body.update(&out[HEAD_BYTES..]);
    body.combine(&crc32fast::Hasher::new_with_initial_len(
        data_crc,
        s.data.len() as u64,
    ));
    let mut h = Vec::with_capacity(HEAD_BYTES);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&group.to_le_bytes());
    h.extend_from_slice(&s.meta.index.to_le_bytes());
    h.extend_from_slice(&s.meta.term.to_le_bytes());
    h.extend_from_slice(&(conf_len as u32).to_le_bytes());
    h.extend_from_slice(&body.finalize().to_le_bytes());
    h.extend_from_slice(&(s.data.len() as u64).to_le_bytes());
    h.extend_from_slice(&[0u8; 12]);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    out[..HEAD_BYTES].copy_from_slice(&h);
    out
}

/// Decodes a snapshot file's bytes: (group, snapshot).
/// A snapshot file's header, checked (magic of either version, its own
/// checksum): what [`decode`] and [`read_chunk`] both start from.
struct Head {
    v1: bool,
    group: u64,
    index: u64,
    term: u64,
    conf_len: usize,
    data_crc: u32,
    data_len: u64,
}

fn parse_head(file: &str, b: &[u8]) -> Result<Head, SnapFileError> {
    let bad = |why| SnapFileError::Corrupt {
        file: file.to_string(),
        why,
    };
    let v1 = b.len() >= 8 && &b[..8] == MAGIC_V1;
    if b.len() < HEAD_BYTES || (&b[..8] != MAGIC && !v1) {
        return Err(bad("bad magic or short header"));
    }
    let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&b[..60]) != u32at(60) {
        return Err(bad("header checksum mismatch"));
    }
    Ok(Head {
        v1,
        group: u64at(8),
        index: u64at(16),
        term: u64at(24),
        conf_len: u32at(32) as usize,
        data_crc: u32at(36),
        data_len: u64at(40),
    })
}

pub fn decode(file: &str, b: &[u8]) -> Result<(u64, Snapshot), SnapFileError> {
    let bad = |why| SnapFileError::Corrupt {
        file: file.to_string(),
        why,
    };
    let Head {
        v1,
        group,
        index,
        term,
        conf_len,
        data_crc,
        data_len,
    } = parse_head(file, b)?;
    let body = &b[HEAD_BYTES..];
    if body.len() as u64 != (conf_len as u64).saturating_add(data_len) {
        return Err(bad("length mismatch (truncated?)"));
    }
    if crc32fast::hash(body) != data_crc {
        return Err(bad("data checksum mismatch"));
    }
    let mut at = 0;
    let mut ids = || -> Option<Vec<u64>> {
        let n = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        let v = (0..n)
            .map(|k| {
                body.get(at + 8 * k..at + 8 * k + 8)
                    .map(|x| u64::from_le_bytes(x.try_into().expect("8 bytes")))
            })
            .collect::<Option<Vec<u64>>>()?;
        at += 8 * n;
        Some(v)
    };
    let conf = (|| {
        let (voters, voters_outgoing, learners) = (ids()?, ids()?, ids()?);
        if v1 {
            return Some(ConfState::on_their_ids(
                &voters,
                &voters_outgoing,
                &learners,
            ));
        }
        let pairs = ids()?;
        let next = ids()?;
        if !pairs.len().is_multiple_of(2) || next.len() != 1 {
            return None;
        }
        let c = ConfState {
            voters,
            voters_outgoing,
            learners,
            placements: pairs
                .chunks_exact(2)
                .map(|p| Placement {
                    replica: p[0],
                    node: p[1],
                })
                .collect(),
            next_replica_id: next[0],
        };
        // Checked as written (the checksum covers the bytes, not our code).
        c.placements_consistent().then_some(c)
    })()
    .ok_or_else(|| bad("bad membership"))?;
    if at != conf_len {
        return Err(bad("bad membership length"));
    }
    Ok((
        group,
        Snapshot {
            meta: SnapshotMeta { index, term },
            conf,
            data: bytes::Bytes::copy_from_slice(&body[conf_len..]),
        },
    ))
}

/// Writes `s` as group `group`'s snapshot in `dir` durably. The group's
/// previous file is the caller's to remove, once the replica has moved to
/// this one (a write whose snapshot turns out stale must leave the
/// replica's current file in place).
/// `data_crc`: the CRC32 of `s.data` (see [`head`]). The data is written
/// from `s` in 1 MiB pieces, never copied whole, past the page cache
/// ([`super::replace_file_direct`]): a shard's WAL syncs wait behind one
/// piece at most.
pub async fn write(
    dir: &Path,
    group: u64,
    s: &Snapshot,
    data_crc: u32,
) -> Result<PathBuf, SnapFileError> {
    let path = dir.join(file_name(group, s.meta.index));
    let head = head(group, s, data_crc);
    super::replace_file_direct(&path, &[&head, &s.data])
        .await
        .map_err(|(p, e)| io(&p, e))?;
    Ok(path)
}

/// `len` bytes at `offset` into the data of group `group`'s snapshot
/// `index` in `dir`, to send to a follower (`raft::SnapshotRead`), read
/// through io_uring (buffered: glommio's probe for polled direct I/O can
/// pass on an empty file and then fail every direct read of a device
/// that has no poll queues, as on a virtio disk, with EOPNOTSUPP). The header is checked (magic, its checksum,
/// group and index, the range within the data); the data's checksum is
/// the follower's to check, over the whole. Errors: the file is gone
/// (superseded, the replica destroyed), unreadable, or not that snapshot.
pub async fn read_chunk(
    dir: &Path,
    group: u64,
    index: u64,
    offset: u64,
    len: usize,
) -> Result<bytes::Bytes, SnapFileError> {
    let path = dir.join(file_name(group, index));
    let name = path.display().to_string();
    let bad = |why| SnapFileError::Corrupt {
        file: name.clone(),
        why,
    };
    let f = glommio::io::BufferedFile::open(&path)
        .await
        .map_err(|e| gio(&path, e))?;
    let r = async {
        let b = f.read_at(0, HEAD_BYTES).await.map_err(|e| gio(&path, e))?;
        let h = parse_head(&name, &b)?;
        if h.group != group || h.index != index {
            return Err(bad("name and contents disagree"));
        }
        if offset.saturating_add(len as u64) > h.data_len {
            return Err(bad("chunk past the end of the data"));
        }
        let at = (HEAD_BYTES + h.conf_len) as u64 + offset;
        let b = f.read_at(at, len).await.map_err(|e| gio(&path, e))?;
        if b.len() != len {
            return Err(bad("length mismatch (truncated?)"));
        }
        Ok(bytes::Bytes::copy_from_slice(&b))
    }
    .await;
    let _ = f.close().await;
    r
}

/// The snapshot files in `dir`: (group, index, path), in order. Touches
/// nothing: a temporary file may be a write in progress.
pub fn list(dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>, SnapFileError> {
    let mut out = Vec::new();
    for_each_name(dir, |name, path| {
        if let Some((g, i)) = parse_name(name) {
            out.push((g, i, path));
        }
    })?;
    out.sort();
    Ok(out)
}

/// Removes the temporary files a crash during a write left in `dir`, and
/// retired files a crash left unremoved ([`retire_group`]). Only at
/// start, before any write of this process: at run time a temporary file
/// is a write in progress.
fn remove_leftovers(dir: &Path) -> Result<(), SnapFileError> {
    for_each_name(dir, |name, path| {
        if name.ends_with(".snap.tmp") || name.ends_with(RETIRED_SUFFIX) {
            let _ = std::fs::remove_file(path);
        }
    })
}

/// Calls `f(name, path)` for each entry of `dir` (none if it is missing).
fn for_each_name(dir: &Path, mut f: impl FnMut(&str, PathBuf)) -> Result<(), SnapFileError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| io(dir, e))?;
        f(&ent.file_name().to_string_lossy(), ent.path());
    }
    Ok(())
}

/// Removes every snapshot file of `group` in `dir` (its replica was
/// destroyed). Idempotent: the next open removes what a crash left.
pub async fn remove_group(dir: &Path, group: u64) -> Result<usize, SnapFileError> {
    let mut n = 0;
    for (g, _, p) in list(dir)? {
        if g == group {
            glommio::io::remove(&p).await.map_err(|e| gio(&p, e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// What a retired snapshot file's name ends with ([`retire_group`]).
const RETIRED_SUFFIX: &str = ".snap.retired";

/// Renames every snapshot file of `group` in `dir` out of the way (its
/// replica was destroyed; `name.snap` becomes `name.snap.retired`, which
/// no replica ever writes or reads) and returns the new paths, for
/// [`remove_files`] to unlink in the background: unlinking a 400 MiB
/// file held a shard's turn for about 200 ms, and a new replica of the
/// same group may write a file under the old name meanwhile. A crash
/// before the removal leaves retired files, removed at the next start.
pub async fn retire_group(dir: &Path, group: u64) -> Result<Vec<PathBuf>, SnapFileError> {
    let mut out = Vec::new();
    for (g, _, p) in list(dir)? {
        if g == group {
            let mut to = p.clone().into_os_string();
            to.push(".retired");
            let to = PathBuf::from(to);
            glommio::io::rename(&p, &to).await.map_err(|e| gio(&p, e))?;
            out.push(to);
        }
    }
    Ok(out)
}

/// Unlinks `paths`: the files [`retire_group`] renamed, or superseded
/// snapshot files (errors ignored: the next start removes what is left).
/// Blocking: the shard calls it on a helper thread.
pub fn remove_files(paths: Vec<PathBuf>) {
    for p in paths {
        let _ = std::fs::remove_file(&p);
    }
}

/// The latest snapshot of each group in `dir` (read at startup, when
/// leftover temporary files and superseded snapshot files are removed
/// too).
pub async fn load_latest(dir: &Path) -> Result<Vec<(u64, Snapshot)>, SnapFileError> {
    remove_leftovers(dir)?;
    let mut latest: std::collections::BTreeMap<u64, (u64, PathBuf)> = Default::default();
    // Earlier files of a group (in order) are superseded: kept only while
    // a follower was being sent them (`shard::snapshots`), removed once
    // the latest is read whole.
    let mut superseded: std::collections::BTreeMap<u64, Vec<PathBuf>> = Default::default();
    for (g, i, p) in list(dir)? {
        if let Some((_, old)) = latest.insert(g, (i, p)) {
            superseded.entry(g).or_default().push(old);
        }
    }
    let mut out = Vec::new();
    for (g, (i, p)) in latest {
        let f = glommio::io::BufferedFile::open(&p)
            .await
            .map_err(|e| gio(&p, e))?;
        let len = f.file_size().await.map_err(|e| gio(&p, e))? as usize;
        let b = f.read_at(0, len).await.map_err(|e| gio(&p, e))?;
        let _ = f.close().await;
        let name = p.display().to_string();
        let (group, snap) = decode(&name, &b)?;
        if group != g || snap.meta.index != i {
            return Err(SnapFileError::Corrupt {
                file: name,
                why: "name and contents disagree",
            });
        }
        for old in superseded.remove(&g).unwrap_or_default() {
            let _ = std::fs::remove_file(old);
        }
        out.push((g, snap));
    }
    Ok(out)
}
