//! Who this data directory is, and who its peers were.
//!
//! A node that lost its data must never vote as its old self: with its log
//! gone it could help elect a leader that lacks an acknowledged write (the
//! write lived on the lost disk and on one other node that is down). So:
//!
//! - every data directory carries a **store identity** (`STORE`), created
//!   once: cluster id, node id, shards, and a random **incarnation**. A
//!   wiped directory gets a new incarnation when it is initialised again;
//! - every shard keeps a **peer book** (`shard-N/peers`): the incarnation of
//!   each peer node it has ever completed a handshake with, written durably
//!   before the first message of that peer is used. A peer that comes back
//!   with another incarnation is refused at the handshake, with one log line
//!   at both ends naming the fix (remove it and add it back under a new
//!   node id: node ids are never reused, and its groups give it new
//!   replicas with new replica ids);
//! - starting a new cluster is explicit (`--initial-cluster-state new`, as in
//!   etcd); a node with an empty data directory that is neither bootstrapping
//!   nor joining refuses to start;
//! - one process at a time: `LOCK` is held with `flock(LOCK_EX)` for the
//!   life of the process (etcd locks its WAL files the same way).
//!
//! What this does not cover: a peer that never completed a handshake with a
//! node before that node's data was lost cannot tell the new incarnation
//! from the old one. Peers dial each other at start, so this needs the peer
//! to have been down since before the lost node's first start.
//!
//! ```text
//! STORE (64 bytes)
//!   0  magic        [8] = "RRSTORE1"
//!   8  cluster      u64 LE
//!  16  node         u64 LE
//!  24  incarnation  u64 LE   random, never 0
//!  32  shards       u32 LE
//!  36  mode         u8       1: started as one of a new cluster's nodes
//!                            (voters from --peers), 2: joined
//!  37  reserved     [3] = 0
//!  40  cuts         u32 LE   fingerprint of the key ranges the cluster was
//!                            bootstrapped with (`route::cuts_fingerprint`);
//!                            0: not known (joined, or written before it)
//!  44  groups       u32 LE   the cluster's groups (`--groups` when the
//!                            store was created); 0: not known (older)
//!  48  rf           u32 LE   the replication factor a new cluster's node
//!                            was bootstrapped with; 0: not known (joined,
//!                            or written before it)
//!  52  reserved     [8] = 0
//!  60  crc          u32 LE   CRC32 of bytes 0..60
//!
//! shard-N/OPENED   empty; written once the shard's WAL first opened: from
//!                  then on an empty WAL directory is lost data
//!
//! shard-N/peers
//!   0  magic        [8] = "RRPEERS1"
//!   8  count        u32 LE
//!  12  crc          u32 LE   CRC32 of the entries
//!  16  entries      count × (node u64 LE, incarnation u64 LE), by node
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::raft::NodeId;

const STORE_MAGIC: &[u8; 8] = b"RRSTORE1";
const STORE_BYTES: usize = 64;
const PEERS_MAGIC: &[u8; 8] = b"RRPEERS1";
const PEERS_HEAD_BYTES: usize = 16;
const PEER_ENTRY_BYTES: usize = 16;
/// The store identity's file name inside the data directory.
pub const STORE_FILE: &str = "STORE";
/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// The peer book's file name inside a shard's directory.
pub const PEERS_FILE: &str = "peers";
/// The marker a shard writes once its WAL first opened.
pub const OPENED_FILE: &str = "OPENED";
/// A shard directory's WAL subdirectory.
pub const WAL_DIR: &str = "wal";
/// A shard directory's snapshot subdirectory.
pub const SNAP_DIR: &str = "snapshots";
/// Most peer nodes one shard remembers. Node ids are never reused, so the
/// book only grows; a cluster that has seen this many nodes refuses the
/// next one at the handshake (with [`IdentityError::BookFull`]).
pub const PEER_BOOK_ENTRIES_MAX: usize = 1 << 16;

/// How a node with an empty data directory may start (`--initial-cluster-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// `new`: one of the first nodes of a new cluster (its `--peers` are
    /// the initial voters).
    New,
    /// `existing` (or `--join`): added to a running cluster later.
    Join,
    /// Neither: the data directory must already hold a store.
    Unset,
}

/// What a new store records of the cluster's initial ranges
/// ([`StoreIdentity::groups`], [`StoreIdentity::cuts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitialRanges {
    /// `--groups`.
    pub groups: u32,
    /// `route::cuts_fingerprint` of the groups and their split keys.
    pub cuts: u32,
    /// `--replication-factor`.
    pub replication_factor: u32,
}

/// The identity of a data directory (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreIdentity {
    pub cluster: u64,
    pub node: NodeId,
    /// Random, never 0; new each time the directory is initialised.
    pub incarnation: u64,
    pub shards: u32,
    /// Started with --join (or `existing`): its groups begin with no
    /// voters. Fixed when the store is created, so that a restart with
    /// other flags cannot change a node's initial membership.
    pub joined: bool,
    /// Fingerprint of the initial key ranges of a new cluster's node
    /// (`route::cuts_fingerprint`), sent in every handshake so that nodes
    /// bootstrapped with other cuts refuse each other; 0: not known.
    pub cuts: u32,
    /// The cluster's groups, fixed when the store was created (a restart
    /// with another `--groups` must not create groups over the existing
    /// ranges); 0: not known (a store written before it).
    pub groups: u32,
    /// The replication factor a new cluster's node was bootstrapped with;
    /// 0: not known (a joined node's, or a store written before it).
    pub replication_factor: u32,
}

/// Why a data directory cannot be used, or a peer not admitted.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data dir {dir}: {err}")]
    Io { dir: String, err: std::io::Error },
    #[error("data dir {dir} is in use by another process ({holder}); stop it first, or give this node another --data-dir")]
    Locked { dir: String, holder: String },
    #[error("{file} is damaged ({why}): {fix}")]
    Corrupt {
        file: String,
        why: &'static str,
        fix: &'static str,
    },
    #[error("data dir {dir} belongs to {what} {stored}, not {given}: start it with the {flag} it was created with, or give this node another --data-dir")]
    Mismatch {
        dir: String,
        what: &'static str,
        flag: &'static str,
        stored: u64,
        given: u64,
    },
    #[error("data dir {dir} holds no store. To start a new cluster, pass --initial-cluster-state new to each of its first nodes; to add this node to a running cluster, pass --join (then move replicas to it: `ringraft ctl move-replica`). If node {node} was a member and lost its data, it cannot come back as node {node}: start it under a new --id with --join, then move node {node}'s replicas to it (`ringraft ctl replace-node {node} NEW`)")]
    Empty { dir: String, node: NodeId },
    #[error("data dir {dir} has a store but {missing} is missing: node {node}'s data was lost or damaged, so it must not vote as its old self; wipe the data dir, start it under a new --id with --join, and move node {node}'s replicas to it (`ringraft ctl replace-node {node} NEW`)")]
    Lost {
        dir: String,
        missing: String,
        node: NodeId,
    },
    #[error("node {node} comes back with a new store (incarnation {got:#x}; this node knew {known:#x}): its data dir was wiped or replaced, so it may have lost acknowledged writes and must not vote as its old self. Start it under a new id (`--id N --join`) and move node {node}'s replicas to it (`ringraft ctl replace-node {node} N`)")]
    NewIncarnation { node: NodeId, known: u64, got: u64 },
    #[error("node {caller} knew this node ({me}) as incarnation {known:#x}, but this data dir is incarnation {mine:#x}: this node's data was lost, so it must not vote as its old self. Stop it, start it under a new id (`--id N --join`) and move node {me}'s replicas to it (`ringraft ctl replace-node {me} N`)")]
    StaleSelf {
        caller: NodeId,
        me: NodeId,
        known: u64,
        mine: u64,
    },
    #[error("data dir {dir} was first started with other initial ranges or placement (--groups, --initial-split-keys, --peers or --replication-factor differ from that start), which was cut short before shard {shard} opened: start it again with the flags it was first started with (they fix where its founding replicas go), or, if the cluster never served, wipe every founder's data dir and start them all with the same flags")]
    Refounded { dir: String, shard: u32 },
    #[error("the peer book of this shard already holds {0} node ids (PEER_BOOK_ENTRIES_MAX) and node ids are never reused, so node {1} is refused; only a new cluster (fresh data dirs) makes room")]
    BookFull(usize, NodeId),
}

fn io_err(dir: &Path) -> impl Fn(std::io::Error) -> IdentityError + '_ {
    move |err| IdentityError::Io {
        dir: dir.display().to_string(),
        err,
    }
}

impl StoreIdentity {
    /// The bytes of a `STORE` file.
    pub fn encode(&self) -> [u8; STORE_BYTES] {
        let mut b = [0u8; STORE_BYTES];
        b[0..8].copy_from_slice(STORE_MAGIC);
        b[8..16].copy_from_slice(&self.cluster.to_le_bytes());
        b[16..24].copy_from_slice(&self.node.to_le_bytes());
        b[24..32].copy_from_slice(&self.incarnation.to_le_bytes());
        b[32..36].copy_from_slice(&self.shards.to_le_bytes());
        b[36] = if self.joined { 2 } else { 1 };
        b[40..44].copy_from_slice(&self.cuts.to_le_bytes());
        b[44..48].copy_from_slice(&self.groups.to_le_bytes());
        b[48..52].copy_from_slice(&self.replication_factor.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a `STORE` file's bytes (`file` names it in errors).
    pub fn decode(file: &str, b: &[u8]) -> Result<StoreIdentity, IdentityError> {
        let bad = |why| {
            IdentityError::Corrupt {
            file: file.to_string(),
            why,
            fix: "it says which node this data dir belongs to; restore it from a backup, or wipe the data dir and add the node back under a new --id",
        }
        };
        if b.len() != STORE_BYTES || &b[..8] != STORE_MAGIC {
            return Err(bad("bad magic or size"));
        }
        let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        if crc32fast::hash(&b[..60]) != u32at(60) {
            return Err(bad("checksum mismatch"));
        }
        let id = StoreIdentity {
            cluster: u64at(8),
            node: u64at(16),
            incarnation: u64at(24),
            shards: u32at(32),
            joined: b[36] == 2,
            cuts: u32at(40),
            groups: u32at(44),
            replication_factor: u32at(48),
        };
        if id.incarnation == 0
            || id.node == 0
            || !(1..=2).contains(&b[36])
            || b[37..40] != [0; 3]
            || b[52..60] != [0; 8]
        {
            return Err(bad("invalid fields"));
        }
        Ok(id)
    }
}

/// The data directory's lock, held until dropped (the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory's exclusive lock (`LOCK`, `flock`), creating
/// the directory if needed; the lock file then holds this process's pid so
/// that a refused second process can name the holder.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, IdentityError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(LOCK_FILE);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(dir))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "pid unknown".to_string(),
                p => format!("pid {p}"),
            };
            return Err(IdentityError::Locked {
                dir: dir.display().to_string(),
                holder,
            });
        }
        return Err(io_err(dir)(err));
    }
    f.set_len(0).map_err(io_err(dir))?;
    f.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io_err(dir))?;
    Ok(DataDirLock { _file: f })
}

/// A random, non-zero incarnation (from the kernel's generator).
fn new_incarnation(dir: &Path) -> Result<u64, IdentityError> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err(dir))?;
    Ok(u64::from_le_bytes(b).max(1))
}

/// Writes `bytes` to `dir/name` durably: a temporary file, fdatasync,
/// rename, then the directory synced. Blocking: call it before the shards'
/// executors start.
fn replace_file_blocking(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io_err(dir))?;
    f.write_all(bytes).map_err(io_err(dir))?;
    f.sync_data().map_err(io_err(dir))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(io_err(dir))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Whether shard `s`'s WAL directory exists and holds a file (data
/// written by a node of a version before store identities).
fn shard_has_wal(dir: &Path, s: u32) -> bool {
    std::fs::read_dir(shard_dir(dir, s).join(WAL_DIR)).is_ok_and(|mut rd| rd.next().is_some())
}

/// Shard `s`'s directory inside the data directory `dir`.
pub fn shard_dir(dir: &Path, s: u32) -> PathBuf {
    dir.join(format!("shard-{s}"))
}

/// Opens (or creates, when `bootstrap` allows) the store identity of the
/// locked data directory `dir`, for node `node` of cluster `cluster` with
/// `shards` shards.
///
/// Errors: a store of another node, cluster or shard count
/// ([`IdentityError::Mismatch`]); a store whose shard directories are gone
/// ([`IdentityError::Lost`]); an empty directory with
/// [`Bootstrap::Unset`] ([`IdentityError::Empty`]); a damaged `STORE`.
/// `cuts` and `replication_factor` are stored in a store created for
/// [`Bootstrap::New`] (a joined node's, or an adopted one's, are 0: not
/// known); `groups` in every store created.
/// A directory with WAL data and no `STORE` (written before store
/// identities existed) is adopted under a new incarnation.
pub fn open_store(
    dir: &Path,
    _lock: &DataDirLock,
    cluster: u64,
    node: NodeId,
    shards: u32,
    bootstrap: Bootstrap,
    ranges: InitialRanges,
) -> Result<(StoreIdentity, bool), IdentityError> {
    let InitialRanges {
        groups,
        cuts,
        replication_factor,
    } = ranges;
    let path = dir.join(STORE_FILE);
    let d = || dir.display().to_string();
    match std::fs::read(&path) {
        Ok(b) => {
            let id = StoreIdentity::decode(&path.display().to_string(), &b)?;
            for (what, flag, stored, given) in [
                ("cluster", "--cluster-id", id.cluster, cluster),
                ("node", "--id", id.node, node),
                (
                    "a node of shards",
                    "--shards",
                    id.shards.into(),
                    shards.into(),
                ),
            ] {
                if stored != given {
                    return Err(IdentityError::Mismatch {
                        dir: d(),
                        what,
                        flag,
                        stored,
                        given,
                    });
                }
            }
            for s in 0..shards {
                let missing = if !shard_dir(dir, s).join(WAL_DIR).is_dir() {
                    format!("shard-{s}/wal")
                } else if shard_dir(dir, s).join(OPENED_FILE).exists() && !shard_has_wal(dir, s) {
                    format!("every WAL file of shard-{s}")
                } else {
                    continue;
                };
                return Err(IdentityError::Lost {
                    dir: d(),
                    missing,
                    node,
                });
            }
            // A first start cut short before every shard opened founds the
            // rest of its ranges at the next start (`shard::load`): from the
            // flags given then, which must be those the store was created
            // with, or this node places replicas the other founders do not.
            if id.cuts != 0 && cuts != id.cuts {
                if let Some(shard) =
                    (0..shards).find(|&s| !shard_dir(dir, s).join(OPENED_FILE).exists())
                {
                    return Err(IdentityError::Refounded { dir: d(), shard });
                }
            }
            if (bootstrap == Bootstrap::Join) != id.joined && bootstrap != Bootstrap::Unset {
                tracing::warn!(
                    joined = id.joined,
                    "the data dir's store says how this node first started; --initial-cluster-state / --join given now are ignored"
                );
            }
            Ok((id, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let legacy = (0..shards).any(|s| shard_has_wal(dir, s));
            if !legacy && bootstrap == Bootstrap::Unset {
                return Err(IdentityError::Empty { dir: d(), node });
            }
            let id = StoreIdentity {
                cluster,
                node,
                incarnation: new_incarnation(dir)?,
                shards,
                joined: bootstrap == Bootstrap::Join,
                cuts: if bootstrap == Bootstrap::New && !legacy {
                    cuts
                } else {
                    0
                },
                groups,
                replication_factor: if bootstrap == Bootstrap::New && !legacy {
                    replication_factor
                } else {
                    0
                },
            };
            // The shard directories first, durably: a store without them
            // reads as lost data at the next start.
            for s in 0..shards {
                for sub in [WAL_DIR, SNAP_DIR] {
                    std::fs::create_dir_all(shard_dir(dir, s).join(sub)).map_err(io_err(dir))?;
                }
                std::fs::File::open(shard_dir(dir, s))
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(dir))?;
            }
            replace_file_blocking(dir, STORE_FILE, &id.encode())?;
            Ok((id, true))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// The incarnation of each peer node a shard has completed a handshake
/// with (see the module docs). Lives on the shard's executor.
pub struct PeerBook {
    /// `None`: kept in memory only (transport tests and benches).
    path: Option<PathBuf>,
    entries_max: usize,
    known: RefCell<BTreeMap<NodeId, u64>>,
    /// One write of the file at a time.
    writing: glommio::sync::Semaphore,
    /// Entries admitted while the disk was full, not in the file yet
    /// ([`PeerBook::save_unsaved`] writes them once space returns).
    unsaved: std::cell::Cell<bool>,
}

/// Whether `e` is a write that failed for want of space (ENOSPC, EDQUOT).
fn no_space(e: &IdentityError) -> bool {
    matches!(e, IdentityError::Io { err, .. }
        if matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            || err.kind() == std::io::ErrorKind::StorageFull)
}

fn encode_book(known: &BTreeMap<NodeId, u64>) -> Vec<u8> {
    let mut entries = Vec::with_capacity(known.len() * PEER_ENTRY_BYTES);
    for (n, i) in known {
        entries.extend_from_slice(&n.to_le_bytes());
        entries.extend_from_slice(&i.to_le_bytes());
    }
    let mut out = Vec::with_capacity(PEERS_HEAD_BYTES + entries.len());
    out.extend_from_slice(PEERS_MAGIC);
    out.extend_from_slice(&(known.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&entries).to_le_bytes());
    out.extend_from_slice(&entries);
    out
}

fn decode_book(file: &str, b: &[u8]) -> Result<BTreeMap<NodeId, u64>, IdentityError> {
    let bad = |why| {
        IdentityError::Corrupt {
        file: file.to_string(),
        why,
        fix: "remove it to start anyway (this shard then trusts the next incarnation of each peer it meets)",
    }
    };
    if b.len() < PEERS_HEAD_BYTES || &b[..8] != PEERS_MAGIC {
        return Err(bad("bad magic or short header"));
    }
    let count = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
    let entries = &b[PEERS_HEAD_BYTES..];
    if entries.len() != count.saturating_mul(PEER_ENTRY_BYTES) {
        return Err(bad("length mismatch (truncated?)"));
    }
    if crc32fast::hash(entries) != u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    let mut known = BTreeMap::new();
    for e in entries.chunks_exact(PEER_ENTRY_BYTES) {
        let n = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
        let i = u64::from_le_bytes(e[8..].try_into().expect("8 bytes"));
        if n == 0 || i == 0 || known.insert(n, i).is_some() {
            return Err(bad("invalid or repeated entry"));
        }
    }
    Ok(known)
}

fn gio(e: glommio::GlommioError<()>) -> std::io::Error {
    std::io::Error::from(e)
}

/// [`crate::storage::replace_file`], its error naming the path.
async fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    crate::storage::replace_file(path, bytes)
        .await
        .map_err(|(p, err)| io_err(&p)(err))
}

/// Marks shard `dir` as opened once (its WAL exists from now on, so an
/// empty WAL directory later is lost data). Call after the WAL opened.
pub async fn mark_shard_opened(dir: &Path) -> Result<(), IdentityError> {
    let path = dir.join(OPENED_FILE);
    // A stat at start-up, once per shard.
    if path.exists() {
        return Ok(());
    }
    replace_file(&path, &[]).await
}

impl PeerBook {
    /// A book that is not persisted (for transport tests and benches).
    pub fn in_memory(entries_max: usize) -> PeerBook {
        PeerBook {
            path: None,
            entries_max,
            known: RefCell::default(),
            writing: glommio::sync::Semaphore::new(1),
            unsaved: Default::default(),
        }
    }

    /// Opens the book at `path` (an absent file is an empty book). Must run
    /// on an executor.
    pub async fn open(path: PathBuf) -> Result<PeerBook, IdentityError> {
        let file = path.display().to_string();
        let known = match glommio::io::BufferedFile::open(&path).await {
            Ok(f) => {
                let len = f.file_size().await.map_err(|e| io_err(&path)(gio(e)))? as usize;
                let b = f.read_at(0, len).await.map_err(|e| io_err(&path)(gio(e)))?;
                let _ = f.close().await;
                decode_book(&file, &b)?
            }
            Err(e) => {
                let e = gio(e);
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(io_err(&path)(e));
                }
                BTreeMap::new()
            }
        };
        Ok(PeerBook {
            path: Some(path),
            entries_max: PEER_BOOK_ENTRIES_MAX,
            known: RefCell::new(known),
            writing: glommio::sync::Semaphore::new(1),
            unsaved: Default::default(),
        })
    }

    /// The incarnation this shard knows `node` by (0: never met).
    pub fn known(&self, node: NodeId) -> u64 {
        self.known.borrow().get(&node).copied().unwrap_or(0)
    }

    /// Nodes in the book.
    pub fn len(&self) -> usize {
        self.known.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits `node` presenting `incarnation`: `Ok` when it is the one this
    /// shard knows, or when the node is new here and its incarnation is now
    /// durably recorded (so a restart still knows it). Refused when the
    /// book knows another incarnation, when it is full, or when the record
    /// cannot be written — except for want of space: then the node is
    /// admitted on the record in memory, saved by [`save_unsaved`] once
    /// space returns. (Refusing it took a node with a full disk off the
    /// network for every peer it had not met yet: a new node could not be
    /// caught up by it, and a membership change stalled. Found by the
    /// 30-minute chaos soak.) Until saved, a restart forgets the node: it
    /// is then checked as new, as it was.
    ///
    /// [`save_unsaved`]: PeerBook::save_unsaved
    pub async fn admit(&self, node: NodeId, incarnation: u64) -> Result<(), IdentityError> {
        debug_assert!(node != 0 && incarnation != 0, "callers check the hello");
        let check = |known: u64| match known {
            0 => Ok(false),
            k if k == incarnation => Ok(true),
            k => Err(IdentityError::NewIncarnation {
                node,
                known: k,
                got: incarnation,
            }),
        };
        if check(self.known(node))? {
            return Ok(());
        }
        let _permit = self
            .writing
            .acquire_permit(1)
            .await
            .expect("the book's semaphore is never closed");
        // Another handshake of the same node may have won the race.
        if check(self.known(node))? {
            return Ok(());
        }
        if self.len() >= self.entries_max {
            return Err(IdentityError::BookFull(self.entries_max, node));
        }
        let mut next = self.known.borrow().clone();
        next.insert(node, incarnation);
        if let Some(p) = &self.path {
            match replace_file(p, &encode_book(&next)).await {
                Ok(()) => {}
                Err(e) if no_space(&e) => {
                    tracing::warn!(
                        peer = node,
                        "{e}: the peer's incarnation is recorded in memory until space returns"
                    );
                    self.unsaved.set(true);
                }
                Err(e) => return Err(e),
            }
        }
        *self.known.borrow_mut() = next;
        tracing::info!(
            peer = node,
            incarnation = format_args!("{incarnation:#x}"),
            "recorded the store incarnation of a new peer"
        );
        Ok(())
    }
}

impl PeerBook {
    /// Writes the entries admitted while the disk was full, if any. A
    /// disk still full leaves them for the next call; `Ok(true)` once
    /// they are in the file.
    pub async fn save_unsaved(&self) -> Result<bool, IdentityError> {
        let Some(p) = &self.path else {
            return Ok(true);
        };
        if !self.unsaved.get() {
            return Ok(true);
        }
        let _permit = self
            .writing
            .acquire_permit(1)
            .await
            .expect("the book's semaphore is never closed");
        let bytes = encode_book(&self.known.borrow());
        match replace_file(p, &bytes).await {
            Ok(()) => {
                self.unsaved.set(false);
                tracing::info!("peer incarnations admitted during a full disk are saved");
                Ok(true)
            }
            Err(e) if no_space(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::local_cluster::run_on_executor as on_executor;

    /// A full disk does not refuse a peer the book has not met: it is
    /// admitted on the record in memory and saved once space returns; a
    /// reopened book then knows it. (It was refused, which took a node
    /// with a full disk off the network for new peers.)
    #[test]
    fn a_full_disk_admits_a_new_peer_and_saves_it_when_space_returns() {
        let fs = match crate::local_cluster::SmallFs::new(16) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("skipped: cannot mount a small filesystem here: {e}");
                return;
            }
        };
        let path = fs.path().join("peers");
        let p = path.clone();
        let fs = std::sync::Arc::new(fs);
        let f2 = fs.clone();
        on_executor(move || async move {
            let book = PeerBook::open(p.clone()).await.unwrap();
            book.admit(2, 0x22).await.unwrap();
            f2.fill(0).unwrap();
            book.admit(3, 0x33)
                .await
                .expect("admitted despite the full disk");
            assert_eq!(book.known(3), 0x33);
            assert!(!book.save_unsaved().await.unwrap(), "still full");
            // The same node with another incarnation is refused meanwhile.
            assert!(book.admit(3, 0x34).await.is_err());
            f2.unfill();
            assert!(book.save_unsaved().await.unwrap());
            let again = PeerBook::open(p).await.unwrap();
            assert_eq!((again.known(2), again.known(3)), (0x22, 0x33));
        });
        drop(fs);
        let _ = path;
    }

    /// What the tests' stores record of their cluster's ranges.
    const R8: InitialRanges = InitialRanges {
        groups: 8,
        cuts: 9,
        replication_factor: 3,
    };

    #[test]
    fn store_round_trips_and_damage_is_named() {
        let id = StoreIdentity {
            cluster: 7,
            node: 3,
            incarnation: 0xdead_beef,
            shards: 2,
            joined: true,
            cuts: 0x1234_5678,
            groups: 8,
            replication_factor: 5,
        };
        let b = id.encode();
        assert_eq!(StoreIdentity::decode("S", &b).unwrap(), id);
        for i in [0, 9, 25, 33, 36, 40, 48, 53, 61] {
            let mut d = b;
            d[i] ^= 1;
            let e = StoreIdentity::decode("S", &d).unwrap_err().to_string();
            assert!(e.contains("S is damaged"), "byte {i}: {e}");
        }
        assert!(StoreIdentity::decode("S", &b[..63]).is_err());
    }

    #[test]
    fn an_empty_dir_needs_an_explicit_bootstrap_and_keeps_its_identity() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("data");
        let lock = lock_data_dir(&dir).unwrap();
        let e = open_store(&dir, &lock, 1, 3, 2, Bootstrap::Unset, R8)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--initial-cluster-state new") && e.contains("--join"),
            "{e}"
        );
        assert!(!dir.join(STORE_FILE).exists(), "nothing written: {e}");
        let (id, created) = open_store(&dir, &lock, 1, 3, 2, Bootstrap::New, R8).unwrap();
        assert!(created && id.incarnation != 0);
        assert_eq!((id.groups, id.cuts, id.replication_factor), (8, 9, 3));
        assert!(dir.join("shard-1/wal").is_dir());
        // Restarted with the same flags, or with none: the same identity.
        for b in [Bootstrap::New, Bootstrap::Unset, Bootstrap::Join] {
            assert_eq!(
                open_store(&dir, &lock, 1, 3, 2, b, R8).unwrap(),
                (id, false)
            );
        }
        // Another node id, cluster or shard count: refused, named.
        let e = open_store(&dir, &lock, 1, 4, 2, Bootstrap::New, R8).unwrap_err();
        assert!(e.to_string().contains("--id"), "{e}");
        let e = open_store(&dir, &lock, 2, 3, 2, Bootstrap::New, R8).unwrap_err();
        assert!(e.to_string().contains("--cluster-id"), "{e}");
        let e = open_store(&dir, &lock, 1, 3, 4, Bootstrap::New, R8).unwrap_err();
        assert!(e.to_string().contains("--shards"), "{e}");
        assert!(!id.joined, "started as a new cluster's node");
        // Every WAL file of a shard that had opened wiped: lost.
        std::fs::write(dir.join("shard-0/wal/00000000000000000001.wal"), b"x").unwrap();
        std::fs::write(dir.join("shard-0").join(OPENED_FILE), b"").unwrap();
        open_store(&dir, &lock, 1, 3, 2, Bootstrap::New, R8).expect("a WAL file: fine");
        std::fs::remove_file(dir.join("shard-0/wal/00000000000000000001.wal")).unwrap();
        let e = open_store(&dir, &lock, 1, 3, 2, Bootstrap::New, R8).unwrap_err();
        assert!(e.to_string().contains("every WAL file of shard-0"), "{e}");
        // Not yet opened (a crash before the first WAL open): fine.
        std::fs::remove_file(dir.join("shard-0").join(OPENED_FILE)).unwrap();
        open_store(&dir, &lock, 1, 3, 2, Bootstrap::New, R8).expect("never opened");
        // ... but only with the initial ranges it was created with: shard 0
        // would found its ranges from the flags given now.
        let other = InitialRanges { cuts: 10, ..R8 };
        let e = open_store(&dir, &lock, 1, 3, 2, Bootstrap::New, other).unwrap_err();
        assert!(
            matches!(e, IdentityError::Refounded { shard: 0, .. }),
            "{e}"
        );
        // Once every shard opened, other flags are only warned about.
        for s in 0..2 {
            std::fs::write(dir.join(format!("shard-{s}")).join(OPENED_FILE), b"").unwrap();
        }
        std::fs::write(dir.join("shard-0/wal/00000000000000000001.wal"), b"x").unwrap();
        std::fs::write(dir.join("shard-1/wal/00000000000000000001.wal"), b"x").unwrap();
        open_store(&dir, &lock, 1, 3, 2, Bootstrap::New, other).expect("opened: the store rules");
        for s in 0..2 {
            std::fs::remove_file(dir.join(format!("shard-{s}")).join(OPENED_FILE)).unwrap();
        }
        std::fs::remove_file(dir.join("shard-1/wal/00000000000000000001.wal")).unwrap();
        // A shard's WAL wiped under a store: lost, not silently recreated.
        std::fs::remove_dir_all(dir.join("shard-1")).unwrap();
        let e = open_store(&dir, &lock, 1, 3, 2, Bootstrap::New, R8).unwrap_err();
        assert!(matches!(e, IdentityError::Lost { .. }), "{e}");
        // The whole dir wiped and bootstrapped again: a new incarnation.
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
        let lock = lock_data_dir(&dir).unwrap();
        let (again, _) = open_store(&dir, &lock, 1, 3, 2, Bootstrap::New, R8).unwrap();
        assert_ne!(again.incarnation, id.incarnation);
    }

    #[test]
    fn data_written_before_store_identities_is_adopted() {
        let t = tempfile::tempdir().unwrap();
        let wal = t.path().join("shard-0/wal");
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(wal.join("00000000000000000001.wal"), b"x").unwrap();
        let lock = lock_data_dir(t.path()).unwrap();
        let (_, created) = open_store(t.path(), &lock, 1, 2, 1, Bootstrap::Unset, R8).unwrap();
        assert!(created);
    }

    #[test]
    fn a_second_lock_of_a_live_data_dir_is_refused_naming_the_holder() {
        let t = tempfile::tempdir().unwrap();
        let first = lock_data_dir(t.path()).unwrap();
        let e = lock_data_dir(t.path()).unwrap_err().to_string();
        assert!(
            e.contains("in use by another process")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        lock_data_dir(t.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn the_peer_book_remembers_incarnations_and_refuses_a_new_one() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join(PEERS_FILE);
        on_executor(move || async move {
            let book = PeerBook::open(path.clone()).await.unwrap();
            assert!(book.is_empty());
            book.admit(2, 0x22).await.unwrap();
            book.admit(3, 0x33).await.unwrap();
            book.admit(2, 0x22).await.unwrap();
            drop(book);
            // After a restart: still known, a new incarnation refused.
            let book = PeerBook::open(path.clone()).await.unwrap();
            assert_eq!(
                (book.known(2), book.known(3), book.known(4)),
                (0x22, 0x33, 0)
            );
            let e = book.admit(3, 0x99).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    IdentityError::NewIncarnation {
                        node: 3,
                        known: 0x33,
                        got: 0x99
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("replace-node 3"), "{e}");
            // Damage is named, not read as an empty book.
            let mut b = std::fs::read(&path).unwrap();
            let last = b.len() - 1;
            b[last] ^= 1;
            std::fs::write(&path, &b).unwrap();
            let e = PeerBook::open(path.clone())
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("checksum"), "{e}");
        });
    }

    #[test]
    fn a_full_peer_book_refuses_the_next_node() {
        on_executor(|| async {
            let book = PeerBook::in_memory(2);
            book.admit(1, 1).await.unwrap();
            book.admit(2, 2).await.unwrap();
            let e = book.admit(3, 3).await.unwrap_err();
            assert!(matches!(e, IdentityError::BookFull(2, 3)), "{e}");
            book.admit(2, 2).await.expect("known nodes still pass");
        });
    }
}
