//! The per-core loop: a shard's groups (Raft core + KV), its WAL, its
//! transport and its clients.
//!
//! One turn: drain inbound messages and client requests → step groups →
//! tick (one timer for the whole shard) → collect the Readies of all groups
//! → send their messages (a leader does not wait for its own fsync) → one
//! WAL batch for every group's entries and hard states → apply what is
//! committed and answer clients → when the WAL reports durable, send acks
//! and votes and report persistence to the groups. The transport and the
//! WAL write when the turn yields, so everything of a turn is batched.

mod requests;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::FutureExt;
use glommio::net::TcpListener;
use ringraft_wal::{DmaDisk, Wal, WalError, WalOptions};

use crate::identity::PeerBook;
use crate::kv::{Command, Kv, KvLimits, WriteOp};
use crate::raft::{
    EntryKind, Index, Message, PersistToken, RaftConfig, RawNode, ReadState, Role, Snapshot,
    SnapshotMeta,
};
use crate::storage::{self, snapfile, GroupLog, Replay};
use crate::transport::{ClientConnId, ClientService, Transport, TransportConfig};
use crate::wire::{ClientError, Hello, Reply, Response, PROTOCOL_VERSION};

/// Everything one shard needs to run (built from the node's validated
/// configuration).
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub cluster: u64,
    pub node: u64,
    /// This node's store incarnation (`crate::identity`), sent in every
    /// handshake; 0 until the store is opened.
    pub incarnation: u64,
    pub shard: u32,
    pub shards: u32,
    /// Groups in the cluster; this shard hosts those with `g % shards == shard`.
    pub groups: u64,
    /// Every voter of the initial cluster (this node included).
    pub voters: Vec<u64>,
    /// This shard's directory (WAL and snapshots).
    pub dir: PathBuf,
    /// Address of this shard's index on each peer node.
    pub peers: Vec<(u64, SocketAddr)>,
    /// Raft settings (id and voters are filled per group).
    pub raft: RaftConfig,
    pub tick_ms: u64,
    pub kv: KvLimits,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub request_timeout_ms: u64,
    /// A group snapshots once this many entries were applied since its last.
    pub snapshot_entries: u64,
    /// ... or once this many bytes of entries were applied since its last.
    pub snapshot_log_bytes: u64,
    /// A group whose oldest needed WAL record is more than this many
    /// records behind the head rewrites its hard state (or snapshots), so
    /// idle groups do not pin old segments.
    pub wal_pin_records_max: u64,
    pub wal: WalOptions,
    pub transport: TransportConfig,
    /// Bound on a scan's pairs.
    pub scan_limit_max: u32,
    /// Serve `Op::Isolate` (tests and drills only).
    pub fault_injection: bool,
    /// This node's client address (shard 0), as the cluster map tells
    /// clients; empty when it listens on an unspecified address.
    pub client_addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {shard}: WAL: {err}")]
    Wal { shard: u32, err: WalError },
    #[error("shard {shard}: {err}")]
    Record {
        shard: u32,
        err: storage::RecordError,
    },
    #[error("shard {shard}: {err}")]
    Snapshot {
        shard: u32,
        err: snapfile::SnapFileError,
    },
    #[error("shard {shard}: group {group}: {what}")]
    Group {
        shard: u32,
        group: u64,
        what: String,
    },
    #[error("shard {shard}: {what}: {err}")]
    Io {
        shard: u32,
        what: &'static str,
        err: std::io::Error,
    },
    #[error("shard {shard}: {err}")]
    Identity {
        shard: u32,
        err: crate::identity::IdentityError,
    },
}

/// A client request waiting for its entry to be applied.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    term: u64,
    conn: ClientConnId,
    id: u64,
    deadline: Instant,
}

/// A read waiting for its read index, then for the apply to reach it.
#[derive(Debug, Clone)]
struct PendingRead {
    conn: ClientConnId,
    req: crate::wire::Request,
    deadline: Instant,
}

struct Group {
    id: u64,
    raft: RawNode,
    kv: Kv,
    /// Index of the group's durable snapshot file (0: none).
    snap_file_index: Index,
    /// A snapshot file write is in flight.
    snap_writing: bool,
    /// Bytes of entries applied since the last snapshot.
    bytes_since_snapshot: u64,
    /// Which WAL records the group still needs.
    lsns: GroupLog,
    proposals: BTreeMap<Index, Waiter>,
    /// Linearizable reads received this turn (one read index per turn).
    reads_new: Vec<PendingRead>,
    /// Reads waiting for read index `ctx`.
    reads_asked: HashMap<u64, Vec<PendingRead>>,
    /// Reads confirmed at an index, served once applied through it.
    reads_ready: Vec<(Index, PendingRead)>,
}

/// A Ready whose persistence is in progress (FIFO across the shard).
struct InFlight {
    group: usize,
    token: PersistToken,
    msgs: Vec<Message>,
    /// Durable once the WAL is durable through this LSN (0: nothing written
    /// before it).
    lsn: u64,
}

/// Counters of a shard (monotonic).
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    pub turns: u64,
    pub readies: u64,
    pub wal_records: u64,
    pub proposals: u64,
    pub applied: u64,
    pub reads: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub msgs_unknown_group: u64,
    pub errors_not_leader: u64,
    pub errors_timeout: u64,
    pub errors_busy: u64,
    pub errors_disk_full: u64,
    /// Times the disk filled up.
    pub disk_full_events: u64,
    /// 1 while the disk is full.
    pub disk_full: u64,
}

pub struct Shard {
    cfg: ShardConfig,
    groups: Vec<Group>,
    wal: Rc<Wal<DmaDisk>>,
    transport: Rc<Transport>,
    clients: Rc<ClientService>,
    inflight: VecDeque<InFlight>,
    next_ctx: u64,
    stats: ShardStats,
    /// Snapshot files written in the background: (group index, meta).
    snaps_done: Rc<RefCell<Vec<(usize, SnapshotMeta)>>>,
    snaps_failed: Rc<RefCell<Vec<snapfile::SnapFileError>>>,
    snap_dir: PathBuf,
    wal_dir: PathBuf,
    /// The disk filled up: writes are refused, reads served, and the shard
    /// rebuilds itself from disk once the WAL reopens.
    disk_full: bool,
    released_lsn: u64,
    /// Set from outside (a signal) to stop the shard.
    stop: Rc<Cell<bool>>,
    metrics: Option<crate::metrics::MetricsHub>,
    /// Entries per AppendEntries sent.
    append_entries: hdrhistogram::Histogram<u64>,
}

fn wal_err(shard: u32) -> impl Fn(WalError) -> ShardError {
    move |err| ShardError::Wal { shard, err }
}

impl Shard {
    /// Opens the shard: replays its WAL and snapshots and builds its
    /// groups. Must run on the shard's executor.
    pub async fn open(
        cfg: ShardConfig,
        stop: Rc<Cell<bool>>,
        metrics: Option<crate::metrics::MetricsHub>,
    ) -> Result<Shard, ShardError> {
        let started = Instant::now();
        let shard = cfg.shard;
        let wal_dir = cfg.dir.join("wal");
        let snap_dir = cfg.dir.join("snapshots");
        for d in [&wal_dir, &snap_dir] {
            std::fs::create_dir_all(d).map_err(|err| ShardError::Io {
                shard,
                what: "creating the data directory",
                err,
            })?;
        }
        let (wal, groups, replayed) = load(&cfg, &wal_dir, &snap_dir).await?;
        crate::identity::mark_shard_opened(&cfg.dir)
            .await
            .map_err(|err| ShardError::Identity { shard, err })?;
        tracing::info!(
            shard,
            groups = groups.len(),
            wal_records = replayed.records,
            snapshots = replayed.snapshots,
            torn_tail = ?replayed.torn_tail,
            ms = started.elapsed().as_millis() as u64,
            "recovered"
        );
        let me = Hello {
            cluster: cfg.cluster,
            node: cfg.node,
            shard,
            shards: cfg.shards,
            version: PROTOCOL_VERSION as u32,
            incarnation: cfg.incarnation,
            expected: 0,
        };
        let book = PeerBook::open(cfg.dir.join(crate::identity::PEERS_FILE))
            .await
            .map_err(|err| ShardError::Identity { shard, err })?;
        let transport = Transport::with_peer_book(me, cfg.transport.clone(), book);
        for &(node, addr) in &cfg.peers {
            transport.add_peer(node, addr);
        }
        let clients = ClientService::new(me, cfg.transport.clone());
        let book: Vec<(u64, String)> = groups
            .iter()
            .flat_map(|g: &Group| g.kv.members().iter().map(|(n, a)| (*n, a.clone())))
            .collect();
        let shard_value = Shard {
            groups,
            wal: Rc::new(wal),
            transport,
            clients,
            inflight: VecDeque::new(),
            next_ctx: first_read_ctx(),
            stats: ShardStats::default(),
            snaps_done: Rc::default(),
            snaps_failed: Rc::default(),
            snap_dir,
            wal_dir,
            disk_full: false,
            released_lsn: 0,
            stop,
            metrics,
            append_entries: hdrhistogram::Histogram::new_with_bounds(1, 1 << 20, 2)
                .expect("valid bounds"),
            cfg,
        };
        for (n, a) in book {
            shard_value.learn_peer(n, &a);
        }
        Ok(shard_value)
    }

    /// Serves until stopped (`stop` set) or a fatal error.
    pub async fn run(
        mut self,
        peer_listener: TcpListener,
        client_listener: TcpListener,
    ) -> Result<(), ShardError> {
        glommio::spawn_local(self.transport.clone().serve(peer_listener)).detach();
        glommio::spawn_local(self.clients.clone().serve(client_listener)).detach();
        // One timer for the shard, in its own task: the loop itself never
        // arms a timer per turn (each costs io_uring submissions).
        let tick = Duration::from_millis(self.cfg.tick_ms);
        let ticks = Rc::new(crate::transport::sync::Ticker::default());
        {
            let ticks = ticks.clone();
            let stop = self.stop.clone();
            glommio::spawn_local(async move {
                while !stop.get() {
                    glommio::timer::sleep(tick).await;
                    ticks.fire();
                }
            })
            .detach();
        }
        let ticks_per_second = (1000 / self.cfg.tick_ms).max(1);
        let mut tick_count = 0u64;
        let mut msgs = Vec::new();
        let mut reqs = Vec::new();
        let mut down = Vec::new();
        let result = loop {
            if self.stop.get() {
                break Ok(());
            }
            self.stats.turns += 1;
            // 1. inbound messages
            self.transport.drain_inbox(&mut msgs);
            for (g, m) in msgs.drain(..) {
                tracing::trace!(group = g, from = m.from, "step");
                match self.local(g) {
                    Some(i) => self.groups[i].raft.step(m),
                    None => self.stats.msgs_unknown_group += 1,
                }
            }
            // 2. client requests
            self.clients.drain(&mut reqs);
            for (conn, r) in reqs.drain(..) {
                self.on_request(conn, r);
            }
            self.start_reads();
            // 3. ticks, batched for the whole shard
            if ticks.take() {
                for g in &mut self.groups {
                    g.raft.tick();
                }
                self.expire_requests(Instant::now());
                tick_count += 1;
                if tick_count.is_multiple_of(ticks_per_second) {
                    if self.disk_full {
                        if let Err(e) = self.try_recover_disk().await {
                            break Err(e);
                        }
                        if self.disk_full {
                            self.hand_off_leadership();
                        }
                    }
                    self.publish_metrics();
                    if let Err(e) = self.unpin_wal().await {
                        break Err(e);
                    }
                }
            }
            self.transport.take_unreachable(&mut down);
            for peer in down.drain(..) {
                for g in &mut self.groups {
                    g.raft.report_unreachable(peer);
                }
            }
            // 4. readies → messages, one WAL batch, apply
            if let Err(e) = self.process_readies().await {
                break Err(e);
            }
            // 5. durability → acks, on_persisted
            self.complete_durable();
            if let Err(e) = self.finish_snapshots().await {
                break Err(e);
            }
            if self.groups.iter().any(|g| g.raft.has_ready()) {
                futures_lite::future::yield_now().await;
                continue;
            }
            // Wait for anything to do.
            let wal = self.wal.clone();
            let oldest = self.inflight.front().map(|f| f.lsn);
            let wal_failure: Rc<RefCell<Option<WalError>>> = Rc::default();
            let failure = wal_failure.clone();
            let durable = async move {
                match oldest {
                    Some(lsn) if lsn > wal.durable_lsn() => {
                        if let Err(e) = wal.wait_durable(lsn).await {
                            *failure.borrow_mut() = Some(e);
                        }
                    }
                    Some(_) => {}
                    None => futures_lite::future::pending::<()>().await,
                }
            };
            let transport = self.transport.clone();
            let clients = self.clients.clone();
            let snaps_done = self.snaps_done.clone();
            let snap_poll = async move {
                // Background snapshot writes report through `snaps_done`;
                // checked at the tick at the latest.
                if snaps_done.borrow().is_empty() {
                    futures_lite::future::pending::<()>().await
                }
            };
            async { transport.inbox_ready().await }
                .or(async { clients.ready().await })
                .or(durable)
                .or(snap_poll)
                .or(ticks.wait())
                .await;
            // A write that will never be durable: a full disk degrades the
            // shard; anything else (an fsync or write error) stops the node.
            let failed = wal_failure.borrow_mut().take();
            if let Some(err) = failed {
                if err.is_disk_full() {
                    self.enter_disk_full(&err);
                } else {
                    break Err(ShardError::Wal {
                        shard: self.cfg.shard,
                        err,
                    });
                }
            }
        };
        self.shutdown().await;
        result
    }

    async fn shutdown(&mut self) {
        self.clients.close();
        self.transport.close();
        // Answer everything still waiting: the outcome of a proposal is
        // unknown (it may still commit elsewhere).
        let mut waiting = Vec::new();
        for g in &mut self.groups {
            for (_, w) in std::mem::take(&mut g.proposals) {
                waiting.push((w.conn, w.id));
            }
            for r in g
                .reads_new
                .drain(..)
                .chain(g.reads_asked.drain().flat_map(|(_, v)| v))
            {
                waiting.push((r.conn, r.req.id));
            }
            for (_, r) in g.reads_ready.drain(..) {
                waiting.push((r.conn, r.req.id));
            }
        }
        for (conn, id) in waiting {
            self.respond(conn, id, Err(ClientError::ShuttingDown));
        }
        if let Some(l) = self.inflight.back().map(|f| f.lsn).filter(|&l| l > 0) {
            let _ = self.wal.wait_durable(l).await;
        }
        // Let the writers flush the last responses.
        futures_lite::future::yield_now().await;
        glommio::timer::sleep(Duration::from_millis(20)).await;
        tracing::info!(shard = self.cfg.shard, "stopped");
    }

    /// Adds `node` (peer address of its shard 0) to this shard's transport,
    /// from the replicated address book.
    fn learn_peer(&self, node: u64, addr: &str) {
        if node == self.cfg.node || addr.is_empty() || self.transport.knows(node) {
            return;
        }
        match addr.parse::<SocketAddr>() {
            Ok(a) => {
                let a = crate::route::shard_addr(a, self.cfg.shard);
                tracing::info!(shard = self.cfg.shard, node, addr = %a, "learned a peer");
                self.transport.add_peer(node, a);
            }
            Err(e) => tracing::warn!(node, addr, "address book entry is not an address: {e}"),
        }
    }

    /// Hands a snapshot of this shard's counters to the metrics server.
    fn publish_metrics(&self) {
        let Some(hub) = &self.metrics else { return };
        let wal = self.wal.stats();
        let groups = self
            .groups
            .iter()
            .map(|g| crate::metrics::GroupMetrics {
                group: g.id,
                role: match g.raft.role() {
                    Role::Follower => 0,
                    Role::PreCandidate => 1,
                    Role::Candidate => 2,
                    Role::Leader => 3,
                },
                term: g.raft.term(),
                leader: g.raft.leader().unwrap_or(0),
                commit: g.raft.commit_index(),
                applied: g.kv.applied(),
                inflight: if g.raft.role() == Role::Leader {
                    g.raft
                        .conf()
                        .members()
                        .into_iter()
                        .filter(|&p| p != self.cfg.node)
                        .filter_map(|p| g.raft.progress(p).map(|pr| (p, pr.inflight.len())))
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        hub.publish(crate::metrics::ShardMetrics {
            shard: self.cfg.shard,
            stats: self.stats,
            transport: self.transport.stats(),
            clients: self.clients.stats(),
            groups,
            wal_syncs: wal.syncs,
            wal_records: wal.records,
            wal_bytes_written: wal.bytes_written,
            wal_sync_latency_us: wal.sync_latency_us,
            wal_batch_records: wal.batch_records,
            append_entries: self.append_entries.clone(),
        });
    }

    /// Index in `groups` of group `g`, if this shard hosts it.
    fn local(&self, g: u64) -> Option<usize> {
        let hosted =
            g < self.cfg.groups && crate::route::shard_of(g, self.cfg.shards) == self.cfg.shard;
        // `load` builds the groups in `groups_of_shard` order.
        hosted.then_some((g / u64::from(self.cfg.shards)) as usize)
    }

    fn respond(&self, conn: ClientConnId, id: u64, result: Result<Reply, ClientError>) {
        self.clients.respond(conn, &Response { id, result });
    }

    async fn process_readies(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        for gi in 0..self.groups.len() {
            if !self.groups[gi].raft.has_ready() {
                continue;
            }
            self.stats.readies += 1;
            let mut rd = self.groups[gi].raft.ready();
            let gid = self.groups[gi].id;
            if let Some(ss) = rd.soft_state {
                log_role_change(shard, gid, ss.role, ss.leader, ss.term);
            }
            for m in &rd.messages {
                if let crate::raft::Body::Append { entries, .. } = &m.body {
                    self.append_entries
                        .saturating_record(entries.len().max(1) as u64);
                }
                self.transport.send(gid, m);
            }
            if let Some(snap) = rd.snapshot.take() {
                self.install_snapshot(gi, snap).await?;
            }
            let mut lsn = self.inflight.back().map_or(0, |f| f.lsn);
            let hs = self.hard_state_to_write(gi, &rd);
            if (hs.is_some() || !rd.entries.is_empty()) && !self.disk_full {
                match self.write_group(gi, hs, &rd.entries).await {
                    Ok(l) => lsn = l,
                    Err(ShardError::Wal { err, .. }) if err.is_disk_full() => {
                        self.enter_disk_full(&err)
                    }
                    Err(e) => return Err(e),
                }
            }
            tracing::trace!(
                group = gid,
                msgs = rd.messages.len(),
                entries = rd.entries.len(),
                committed = rd.committed.len(),
                lsn,
                "ready"
            );
            let token = rd.token();
            let committed = std::mem::take(&mut rd.committed);
            self.apply(gi, committed);
            for rs in rd.read_states.drain(..) {
                self.on_read_state(gi, rs);
            }
            for ctx in rd.reads_failed.drain(..) {
                self.on_read_failed(gi, ctx);
            }
            self.serve_ready_reads(gi);
            if self.disk_full {
                // Nothing of it is durable, nor will be: no ack, no report.
                // The shard rebuilds its groups from disk once space is back.
                continue;
            }
            self.inflight.push_back(InFlight {
                group: gi,
                token,
                msgs: std::mem::take(&mut rd.persisted_messages),
                lsn,
            });
        }
        Ok(())
    }

    /// The hard state to write with `rd` (see `HardState::to_write`: a
    /// leader's commit index moves after every write, and syncing that on
    /// its own made the next write wait behind the sync).
    fn hard_state_to_write(
        &self,
        gi: usize,
        rd: &crate::raft::Ready,
    ) -> Option<crate::raft::HardState> {
        let g = &self.groups[gi];
        crate::raft::HardState::to_write(
            &g.lsns.hs,
            rd.hard_state,
            g.raft.hard_state(),
            !rd.entries.is_empty(),
        )
    }

    /// Appends the group's hard state `hs` and `entries` to the WAL (one
    /// record, or several if they exceed `record_bytes_max`); the LSN of
    /// the last.
    async fn write_group(
        &mut self,
        gi: usize,
        mut hs: Option<crate::raft::HardState>,
        entries: &[crate::raft::Entry],
    ) -> Result<u64, ShardError> {
        let max = self.cfg.wal.record_bytes_max;
        let gid = self.groups[gi].id;
        let mut rest = entries;
        loop {
            // As many entries as fit in one record (at least one).
            let mut n = 0;
            let mut bytes = storage::record_bytes(hs.is_some(), &[]);
            while n < rest.len() {
                let b = storage::entry_record_bytes(&rest[n]);
                if n > 0 && bytes + b > max {
                    break;
                }
                bytes += b;
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            let lsn = self.submit_record(gid, hs.as_ref(), chunk).await?;
            let g = &mut self.groups[gi];
            if let Some(h) = hs {
                g.lsns.hs = h;
                g.lsns.hs_lsn = lsn;
            }
            if let Some(first) = chunk.first() {
                g.lsns.record_lsns.split_off(&first.index);
                g.lsns.record_lsns.insert(first.index, lsn);
            }
            hs = None;
            rest = tail;
            if rest.is_empty() {
                return Ok(lsn);
            }
        }
    }

    /// Appends one group record to the WAL, waiting while its queue is full
    /// (backpressure: until the oldest write lands); its LSN.
    async fn submit_record(
        &mut self,
        gid: u64,
        hs: Option<&crate::raft::HardState>,
        entries: &[crate::raft::Entry],
    ) -> Result<u64, ShardError> {
        let shard = self.cfg.shard;
        let bytes = storage::record_bytes(hs.is_some(), entries);
        loop {
            match self
                .wal
                .try_submit_with(bytes, |out| storage::encode_record(out, gid, hs, entries))
            {
                Ok(l) => {
                    self.stats.wal_records += 1;
                    return Ok(l);
                }
                Err(WalError::QueueFull { .. }) => {
                    let oldest = self.wal.durable_lsn() + 1;
                    self.wal
                        .wait_durable(oldest)
                        .await
                        .map_err(wal_err(shard))?;
                }
                Err(e) => return Err(wal_err(shard)(e)),
            }
        }
    }

    /// Sends the acks and reports persistence of every Ready durable now.
    fn complete_durable(&mut self) {
        let durable = self.wal.durable_lsn();
        while self.inflight.front().is_some_and(|f| f.lsn <= durable) {
            let f = self.inflight.pop_front().expect("checked");
            let gid = self.groups[f.group].id;
            tracing::trace!(group = gid, lsn = f.lsn, acks = f.msgs.len(), "durable");
            for m in &f.msgs {
                self.transport.send(gid, m);
            }
            self.groups[f.group].raft.on_persisted(f.token);
        }
    }

    fn apply(&mut self, gi: usize, committed: Vec<crate::raft::Entry>) {
        let Some(last) = committed.last().map(|e| e.index) else {
            return;
        };
        let shard = self.cfg.shard;
        let mut answers = Vec::new();
        let mut new_members = Vec::new();
        let g = &mut self.groups[gi];
        for e in &committed {
            g.bytes_since_snapshot += e.size_bytes();
            let result = match e.kind {
                EntryKind::Normal => match Command::decode(&e.data) {
                    Some(cmd) => {
                        if let WriteOp::Member {
                            node, peer_addr, ..
                        } = &cmd.op
                        {
                            new_members.push((*node, peer_addr.clone()));
                        }
                        g.kv.apply(e.index, &cmd)
                    }
                    None => panic!(
                        "shard {shard} group {}: committed entry {} is not a command",
                        g.id, e.index
                    ),
                },
                EntryKind::ConfChange => {
                    g.kv.skip(e.index);
                    tracing::info!(
                        shard,
                        group = g.id,
                        index = e.index,
                        conf = ?g.raft.conf(),
                        "membership change applied"
                    );
                    Ok(Reply::Done)
                }
                EntryKind::Noop => {
                    g.kv.skip(e.index);
                    Err(ClientError::NotLeader {
                        leader: g.raft.leader().unwrap_or(0),
                    })
                }
            };
            // Proposals at or below this index: answered if this entry is
            // theirs; else their entry was overwritten (a new leader): the
            // client retries with the same sequence number.
            while let Some((&i, w)) = g.proposals.first_key_value() {
                if i > e.index {
                    break;
                }
                let w = *w;
                g.proposals.pop_first();
                if i == e.index && w.term == e.term {
                    answers.push((w.conn, w.id, result.clone()));
                } else {
                    answers.push((
                        w.conn,
                        w.id,
                        Err(ClientError::NotLeader {
                            leader: g.raft.leader().unwrap_or(0),
                        }),
                    ));
                }
            }
        }
        g.raft.on_applied(last);
        self.stats.applied += committed.len() as u64;
        for (node, addr) in new_members {
            self.learn_peer(node, &String::from_utf8_lossy(&addr));
        }
        for (conn, id, r) in answers {
            if matches!(r, Err(ClientError::NotLeader { .. })) {
                self.stats.errors_not_leader += 1;
            }
            self.respond(conn, id, r);
        }
        self.maybe_snapshot(gi);
    }

    /// Answers requests past their deadline with `Timeout`.
    fn expire_requests(&mut self, now: Instant) {
        let mut late = Vec::new();
        for g in &mut self.groups {
            g.proposals.retain(|_, w| {
                let keep = w.deadline > now;
                if !keep {
                    late.push((w.conn, w.id));
                }
                keep
            });
            let mut expire = |r: &PendingRead| {
                let keep = r.deadline > now;
                if !keep {
                    late.push((r.conn, r.req.id));
                }
                keep
            };
            g.reads_new.retain(&mut expire);
            for v in g.reads_asked.values_mut() {
                v.retain(&mut expire);
            }
            g.reads_ready.retain(|(_, r)| expire(r));
        }
        self.stats.errors_timeout += late.len() as u64;
        for (conn, id) in late {
            self.respond(conn, id, Err(ClientError::Timeout));
        }
    }

    // ---- snapshots ----

    fn maybe_snapshot(&mut self, gi: usize) {
        let every = self.cfg.snapshot_entries;
        let g = &self.groups[gi];
        let applied = g.kv.applied();
        let current = g.raft.snapshot().map_or(0, |s| s.meta.index);
        let by_entries = every > 0 && applied >= current + every;
        let by_bytes = g.bytes_since_snapshot >= self.cfg.snapshot_log_bytes;
        if g.snap_writing || !(by_entries || by_bytes) {
            return;
        }
        self.snapshot_now(gi);
    }

    /// Compacts the group at its applied index and writes the snapshot
    /// file in the background; the WAL is released once it is durable.
    fn snapshot_now(&mut self, gi: usize) {
        if self.disk_full {
            return;
        }
        let g = &mut self.groups[gi];
        let applied = g.kv.applied();
        if g.snap_writing || applied <= g.raft.snapshot().map_or(0, |s| s.meta.index) {
            return;
        }
        if g.raft.compact(applied, g.kv.snapshot()).is_err() {
            return;
        }
        let snap = g.raft.snapshot().cloned().expect("just compacted");
        g.snap_writing = true;
        g.bytes_since_snapshot = 0;
        self.stats.snapshots_taken += 1;
        let dir = self.snap_dir.clone();
        let (gid, prev) = (g.id, g.snap_file_index);
        let done = self.snaps_done.clone();
        let failed = self.snaps_failed.clone();
        glommio::spawn_local(async move {
            match snapfile::write(&dir, gid, &snap, Some(prev).filter(|&p| p > 0)).await {
                Ok(_) => done.borrow_mut().push((gi, snap.meta)),
                Err(e) => failed.borrow_mut().push(e),
            }
        })
        .detach();
    }

    /// A snapshot received from the leader: durable before anything after
    /// it is written; the state machine restarts from it.
    async fn install_snapshot(&mut self, gi: usize, snap: Snapshot) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let gid = self.groups[gi].id;
        let prev = self.groups[gi].snap_file_index;
        // With the disk full, the state machine still moves to it (it is
        // committed state); the file is not written, and the rebuild from
        // disk once space is back starts from what is there.
        if !self.disk_full {
            match snapfile::write(&self.snap_dir, gid, &snap, Some(prev).filter(|&p| p > 0)).await {
                Ok(_) => {}
                Err(err) if snap_err_is_disk_full(&err) => self.enter_disk_full(&err),
                Err(err) => return Err(ShardError::Snapshot { shard, err }),
            }
        }
        let written = !self.disk_full;
        let g = &mut self.groups[gi];
        g.kv = Kv::restore(&snap.data, self.cfg.kv.clone()).map_err(|e| ShardError::Group {
            shard,
            group: gid,
            what: e.to_string(),
        })?;
        if written {
            g.snap_file_index = snap.meta.index;
            g.lsns.trim_to_snapshot(snap.meta.index, snap.meta.term);
        }
        let book: Vec<(u64, String)> =
            g.kv.members()
                .iter()
                .map(|(n, a)| (*n, a.clone()))
                .collect();
        for (n, a) in book {
            self.learn_peer(n, &a);
        }
        self.stats.snapshots_installed += 1;
        tracing::info!(
            shard,
            group = gid,
            index = snap.meta.index,
            bytes = snap.data.len(),
            "installed snapshot from the leader"
        );
        Ok(())
    }

    /// Takes in finished snapshot writes and releases the WAL below the
    /// lowest LSN any group still needs.
    async fn finish_snapshots(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let failed = self.snaps_failed.borrow_mut().pop();
        if let Some(err) = failed {
            if !snap_err_is_disk_full(&err) {
                return Err(ShardError::Snapshot { shard, err });
            }
            self.enter_disk_full(&err);
            // The snapshot stays in memory; its write is retried later.
            for g in &mut self.groups {
                g.snap_writing = false;
            }
        }
        let done = std::mem::take(&mut *self.snaps_done.borrow_mut());
        if done.is_empty() {
            return Ok(());
        }
        for (gi, meta) in done {
            let g = &mut self.groups[gi];
            g.snap_writing = false;
            g.snap_file_index = meta.index;
            g.lsns.trim_to_snapshot(meta.index, meta.term);
            tracing::info!(shard, group = g.id, index = meta.index, "snapshot taken");
        }
        self.release_wal().await
    }

    fn enter_disk_full(&mut self, err: &dyn std::fmt::Display) {
        if self.disk_full {
            return;
        }
        self.disk_full = true;
        // Never durable now: no acks, no reports; the rebuild starts over.
        self.inflight.clear();
        self.stats.disk_full = 1;
        self.stats.disk_full_events += 1;
        tracing::error!(
            shard = self.cfg.shard,
            "disk full ({err}): writes are refused with DiskFull, reads are served; retrying every second"
        );
        self.hand_off_leadership();
    }

    /// A leader that cannot persist cannot commit its own entries: hand
    /// each group it leads to its most caught-up follower. (It cannot win
    /// an election meanwhile: its own vote never becomes durable.)
    fn hand_off_leadership(&mut self) {
        let me = self.cfg.node;
        for g in &mut self.groups {
            if g.raft.role() != Role::Leader || g.raft.transferee().is_some() {
                continue;
            }
            let best = g
                .raft
                .conf()
                .voters
                .iter()
                .copied()
                .filter(|&p| p != me)
                .max_by_key(|&p| g.raft.progress(p).map_or(0, |pr| pr.match_));
            if let Some(to) = best {
                match g.raft.transfer_leader(to) {
                    Ok(()) => tracing::info!(
                        shard = self.cfg.shard,
                        group = g.id,
                        to,
                        "disk full: handing leadership over"
                    ),
                    Err(e) => tracing::debug!(group = g.id, "leadership hand-off: {e}"),
                }
            }
        }
    }

    /// With the disk full: tries to reopen the WAL; once it opens, rebuilds
    /// every group from disk (as after a restart) and serves writes again.
    /// Requests waiting on the old groups get `Timeout` (outcome unknown:
    /// their entries may still commit through the other replicas).
    async fn try_recover_disk(&mut self) -> Result<(), ShardError> {
        let (wal, groups, replayed) = match load(&self.cfg, &self.wal_dir, &self.snap_dir).await {
            Ok(x) => x,
            Err(ShardError::Wal { err, .. }) if err.is_disk_full() => {
                tracing::debug!(shard = self.cfg.shard, "still full: {err}");
                return Ok(());
            }
            Err(ShardError::Snapshot { err, .. }) if snap_err_is_disk_full(&err) => {
                tracing::debug!(shard = self.cfg.shard, "still full: {err}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut waiting = Vec::new();
        for g in &mut self.groups {
            waiting.extend(
                std::mem::take(&mut g.proposals)
                    .into_values()
                    .map(|w| (w.conn, w.id)),
            );
            waiting.extend(g.reads_new.drain(..).map(|r| (r.conn, r.req.id)));
            waiting.extend(
                g.reads_asked
                    .drain()
                    .flat_map(|(_, v)| v)
                    .map(|r| (r.conn, r.req.id)),
            );
            waiting.extend(g.reads_ready.drain(..).map(|(_, r)| (r.conn, r.req.id)));
        }
        for (conn, id) in waiting {
            self.respond(conn, id, Err(ClientError::Timeout));
        }
        self.groups = groups;
        self.wal = Rc::new(wal);
        self.inflight.clear();
        self.released_lsn = 0;
        self.disk_full = false;
        self.stats.disk_full = 0;
        let book: Vec<(u64, String)> = self
            .groups
            .iter()
            .flat_map(|g| g.kv.members().iter().map(|(n, a)| (*n, a.clone())))
            .collect();
        for (n, a) in book {
            self.learn_peer(n, &a);
        }
        tracing::info!(
            shard = self.cfg.shard,
            wal_records = replayed.records,
            "disk space is back: groups rebuilt from disk, writes served again"
        );
        Ok(())
    }

    /// Moves groups that hold the WAL's release point far back forward: one
    /// whose needed entries are old snapshots; one whose only old record is
    /// its hard state writes it again. Then releases what that freed.
    async fn unpin_wal(&mut self) -> Result<(), ShardError> {
        if self.disk_full {
            return Ok(());
        }
        let head = self.wal.next_lsn();
        let max = self.cfg.wal_pin_records_max;
        let mut rewrote = false;
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            if g.snap_writing || g.lsns.needed_lsn().saturating_add(max) >= head {
                continue;
            }
            let entries_pinned = g
                .lsns
                .record_lsns
                .values()
                .next()
                .is_some_and(|&l| l + max < head);
            let can_snapshot = g.kv.applied() > g.raft.snapshot().map_or(0, |s| s.meta.index);
            if entries_pinned && can_snapshot {
                self.snapshot_now(gi);
            } else if !entries_pinned {
                self.rewrite_hard_state(gi).await?;
                rewrote = true;
            }
        }
        if rewrote {
            self.release_wal().await?;
        }
        Ok(())
    }

    /// Writes the group's current hard state again (a record of its own).
    /// Making it durable early is harmless: replay takes the latest record.
    async fn rewrite_hard_state(&mut self, gi: usize) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let gid = self.groups[gi].id;
        let hs = self.groups[gi].raft.hard_state();
        let lsn = self.submit_record(gid, Some(&hs), &[]).await?;
        // Released only once durable: wait for it here (rare: idle groups).
        self.wal.wait_durable(lsn).await.map_err(wal_err(shard))?;
        self.groups[gi].lsns.hs = hs;
        self.groups[gi].lsns.hs_lsn = lsn;
        Ok(())
    }

    async fn release_wal(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let needed = self
            .groups
            .iter()
            .map(|g| g.lsns.needed_lsn())
            .min()
            .unwrap_or(u64::MAX)
            .min(self.wal.next_lsn());
        if needed > self.released_lsn {
            let n = match self.wal.release_before(needed).await {
                Ok(n) => n,
                Err(err) if err.is_disk_full() => {
                    self.enter_disk_full(&err);
                    return Ok(());
                }
                Err(err) => return Err(ShardError::Wal { shard, err }),
            };
            self.released_lsn = needed;
            if n > 0 {
                tracing::debug!(shard, segments = n, before_lsn = needed, "WAL released");
            }
        }
        Ok(())
    }

    // ---- reads ----

    /// One read index per group per turn for all reads received in it.
    fn start_reads(&mut self) {
        let mut failed = Vec::new();
        for g in &mut self.groups {
            if g.reads_new.is_empty() {
                continue;
            }
            let ctx = self.next_ctx;
            self.next_ctx += 1;
            match g.raft.read_index(ctx) {
                Ok(()) => {
                    let batch = std::mem::take(&mut g.reads_new);
                    g.reads_asked.insert(ctx, batch);
                }
                Err(_) => {
                    let leader = g.raft.leader().unwrap_or(0);
                    for r in g.reads_new.drain(..) {
                        failed.push((r.conn, r.req.id, leader));
                    }
                }
            }
        }
        self.stats.errors_not_leader += failed.len() as u64;
        for (conn, id, leader) in failed {
            self.respond(conn, id, Err(ClientError::NotLeader { leader }));
        }
    }

    fn on_read_state(&mut self, gi: usize, rs: ReadState) {
        let g = &mut self.groups[gi];
        if let Some(batch) = g.reads_asked.remove(&rs.ctx) {
            g.reads_ready
                .extend(batch.into_iter().map(|r| (rs.index, r)));
        }
    }

    fn on_read_failed(&mut self, gi: usize, ctx: u64) {
        let g = &mut self.groups[gi];
        let leader = g.raft.leader().unwrap_or(0);
        if let Some(batch) = g.reads_asked.remove(&ctx) {
            self.stats.errors_not_leader += batch.len() as u64;
            for r in batch {
                self.respond(r.conn, r.req.id, Err(ClientError::NotLeader { leader }));
            }
        }
    }

    fn serve_ready_reads(&mut self, gi: usize) {
        let applied = self.groups[gi].kv.applied();
        if self.groups[gi]
            .reads_ready
            .iter()
            .all(|(i, _)| *i > applied)
        {
            return;
        }
        let ready = std::mem::take(&mut self.groups[gi].reads_ready);
        let mut keep = Vec::new();
        for (i, r) in ready {
            if i <= applied {
                let result = self.read_now(gi, &r.req);
                self.respond(r.conn, r.req.id, result);
            } else {
                keep.push((i, r));
            }
        }
        self.groups[gi].reads_ready = keep;
    }
}

/// What `load` found.
struct Replayed {
    records: u64,
    snapshots: usize,
    torn_tail: Option<ringraft_wal::TornTail>,
}

/// Opens the WAL and rebuilds every group of the shard from it and from
/// the snapshot files (at start, and after a full disk has been freed).
async fn load(
    cfg: &ShardConfig,
    wal_dir: &std::path::Path,
    snap_dir: &std::path::Path,
) -> Result<(Wal<DmaDisk>, Vec<Group>, Replayed), ShardError> {
    let shard = cfg.shard;
    let disk = DmaDisk::new(wal_dir).map_err(|err| ShardError::Io {
        shard,
        what: "opening the WAL directory",
        err,
    })?;
    let mut replay = Replay::default();
    let (wal, report) = Wal::open(disk, cfg.wal.clone(), |lsn, p| replay.on_record(lsn, p))
        .await
        .map_err(wal_err(shard))?;
    if let Some(err) = replay.error.take() {
        return Err(ShardError::Record { shard, err });
    }
    let snaps: HashMap<u64, Snapshot> = snapfile::load_latest(snap_dir)
        .await
        .map_err(|err| ShardError::Snapshot { shard, err })?
        .into_iter()
        .collect();
    let mut groups = Vec::new();
    for g in crate::route::groups_of_shard(shard, cfg.shards, cfg.groups) {
        let mut log = replay.groups.remove(&g).unwrap_or_default();
        let snap = snaps.get(&g).cloned();
        let mut kv = Kv::new(cfg.kv.clone());
        let mut applied = 0;
        if let Some(s) = &snap {
            log.trim_to_snapshot(s.meta.index, s.meta.term);
            kv = Kv::restore(&s.data, cfg.kv.clone()).map_err(|e| ShardError::Group {
                shard,
                group: g,
                what: e.to_string(),
            })?;
            applied = s.meta.index;
        }
        let last = log.entries.last().map_or(applied, |e| e.index.max(applied));
        // A crash may leave a hard state whose commit is past the
        // entries that made it to disk: the leader will say again.
        log.hs.commit = log.hs.commit.min(last).max(applied);
        let mut rc = cfg.raft.clone();
        rc.id = cfg.node;
        rc.voters = cfg.voters.clone();
        rc.seed = cfg.raft.seed ^ g.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let rc = rc.validate().map_err(|e| ShardError::Group {
            shard,
            group: g,
            what: e.to_string(),
        })?;
        let entries = std::mem::take(&mut log.entries);
        let raft = RawNode::restart_from(rc, log.hs, snap.clone(), entries, applied);
        groups.push(Group {
            id: g,
            raft,
            kv,
            snap_file_index: snap.as_ref().map_or(0, |s| s.meta.index),
            snap_writing: false,
            bytes_since_snapshot: 0,
            lsns: log,
            proposals: BTreeMap::new(),
            reads_new: Vec::new(),
            reads_asked: HashMap::new(),
            reads_ready: Vec::new(),
        });
    }
    let replayed = Replayed {
        records: replay.records,
        snapshots: snaps.len(),
        torn_tail: report.torn_tail,
    };
    Ok((wal, groups, replayed))
}

fn snap_err_is_disk_full(e: &snapfile::SnapFileError) -> bool {
    matches!(e, snapfile::SnapFileError::Io { err, .. }
        if err.raw_os_error() == Some(28) || err.kind() == std::io::ErrorKind::StorageFull)
}

fn log_role_change(shard: u32, group: u64, role: Role, leader: Option<u64>, term: u64) {
    match role {
        Role::Leader => tracing::info!(shard, group, term, "became leader"),
        Role::Follower => tracing::info!(
            shard,
            group,
            term,
            leader = leader.unwrap_or(0),
            "following"
        ),
        Role::Candidate | Role::PreCandidate => {
            tracing::debug!(shard, group, term, ?role, "campaigning")
        }
    }
}

/// Bytes of a client payload as a key or value bounded by `max`.
fn check_len(b: &Bytes, max: usize, key: bool) -> Result<(), ClientError> {
    if b.len() <= max {
        Ok(())
    } else if key {
        Err(ClientError::KeyTooLarge {
            len: b.len() as u64,
            max: max as u64,
        })
    } else {
        Err(ClientError::ValueTooLarge {
            len: b.len() as u64,
            max: max as u64,
        })
    }
}

/// The first ReadIndex context of this incarnation: the wall clock in
/// nanoseconds. The core matches a forwarded read to the leader's answer
/// by context alone, so contexts restarting at 1 would let an answer
/// addressed to a previous incarnation (queued before a kill, delivered
/// after the restart, same term) serve a new read at an old index. The
/// shard answers linearizable reads on the leader only today, so this is
/// a guard for when followers forward reads, not the cause of the chaos
/// soak's violations (that was the client; see `Client::call`). Each
/// incarnation starts past every context an earlier one used (they take
/// far fewer than one per nanosecond).
fn first_read_ctx() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        .max(1)
}

#[cfg(test)]
mod read_ctx_tests {
    /// A later incarnation starts past the contexts an earlier one used.
    #[test]
    fn a_restarted_shard_does_not_reuse_read_contexts() {
        let first = super::first_read_ctx();
        // An incarnation that used a context per microsecond for a while.
        let t0 = std::time::Instant::now();
        let mut used = first;
        while t0.elapsed() < std::time::Duration::from_millis(20) {
            used += 1;
            std::thread::sleep(std::time::Duration::from_micros(1));
        }
        assert!(super::first_read_ctx() > used);
    }
}
