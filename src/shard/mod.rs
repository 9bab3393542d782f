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

mod replicas;
mod requests;

pub use replicas::{ReplicaApiError, ReplicaInfo};

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

use crate::group::{GroupId, PendingRead, Replica, ReplicaId, Waiter};
use crate::identity::PeerBook;
use crate::kv::{Kv, KvLimits};
use crate::raft::{Message, PersistToken, RaftConfig, RawNode, Role, Snapshot, SnapshotMeta};
use crate::storage::{self, snapfile, Catalog, CatalogOp, Replay, ReplicaDesc};
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

/// A Ready whose persistence is in progress (FIFO across the shard).
struct InFlight {
    group: GroupId,
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
    /// This shard's replicas by group id. Iterated in id order, so a
    /// turn's work is the same for the same inputs.
    replicas: BTreeMap<GroupId, Replica>,
    /// The replica catalog as durable in the WAL. Invariant: its live
    /// entries are exactly the keys of `replicas`.
    catalog: Catalog,
    /// Scratch: ids of the replicas with a Ready this turn.
    ready_ids: Vec<GroupId>,
    wal: Rc<Wal<DmaDisk>>,
    transport: Rc<Transport>,
    clients: Rc<ClientService>,
    inflight: VecDeque<InFlight>,
    next_ctx: u64,
    stats: ShardStats,
    /// Snapshot files written in the background: (group, replica, meta).
    snaps_done: Rc<RefCell<Vec<(GroupId, ReplicaId, SnapshotMeta)>>>,
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
        let Loaded {
            wal,
            replicas,
            catalog,
            replayed,
        } = load(&cfg, &wal_dir, &snap_dir).await?;
        crate::identity::mark_shard_opened(&cfg.dir)
            .await
            .map_err(|err| ShardError::Identity { shard, err })?;
        tracing::info!(
            shard,
            replicas = replicas.len(),
            logs_dropped = replayed.logs_dropped,
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
        let book: Vec<(u64, String)> = replicas.values().flat_map(Replica::address_book).collect();
        let shard_value = Shard {
            replicas,
            catalog,
            ready_ids: Vec::new(),
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
                match self.replicas.get_mut(&g) {
                    Some(r) => r.raft.step(m),
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
                for r in self.replicas.values_mut() {
                    r.raft.tick();
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
                for r in self.replicas.values_mut() {
                    r.raft.report_unreachable(peer);
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
            if self.replicas.values().any(|r| r.raft.has_ready()) {
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
        for r in self.replicas.values_mut() {
            r.drain_waiters(&mut waiting);
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
            .replicas
            .values()
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

    /// The replica of group `gid`. Panics if this shard does not host it
    /// (callers looked it up in this turn, and nothing between destroys).
    fn replica(&self, gid: GroupId) -> &Replica {
        match self.replicas.get(&gid) {
            Some(r) => r,
            None => panic!("shard {}: group {gid} is not hosted here", self.cfg.shard),
        }
    }

    fn replica_mut(&mut self, gid: GroupId) -> &mut Replica {
        let shard = self.cfg.shard;
        match self.replicas.get_mut(&gid) {
            Some(r) => r,
            None => panic!("shard {shard}: group {gid} is not hosted here"),
        }
    }

    fn respond(&self, conn: ClientConnId, id: u64, result: Result<Reply, ClientError>) {
        self.clients.respond(conn, &Response { id, result });
    }

    async fn process_readies(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let mut ids = std::mem::take(&mut self.ready_ids);
        ids.clear();
        ids.extend(
            self.replicas
                .iter()
                .filter(|(_, r)| r.raft.has_ready())
                .map(|(&g, _)| g),
        );
        let result = self.process_ready_ids(shard, &ids).await;
        self.ready_ids = ids;
        result
    }

    async fn process_ready_ids(&mut self, shard: u32, ids: &[GroupId]) -> Result<(), ShardError> {
        for &gid in ids {
            let Some(r) = self.replicas.get_mut(&gid) else {
                continue;
            };
            self.stats.readies += 1;
            let mut rd = r.raft.ready();
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
                self.install_snapshot(gid, snap).await?;
            }
            let mut lsn = self.inflight.back().map_or(0, |f| f.lsn);
            let hs = self.hard_state_to_write(gid, &rd);
            if (hs.is_some() || !rd.entries.is_empty()) && !self.disk_full {
                match self.write_group(gid, hs, &rd.entries).await {
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
            self.apply(gid, &committed);
            let Some(r) = self.replicas.get_mut(&gid) else {
                continue;
            };
            for rs in rd.read_states.drain(..) {
                r.on_read_state(rs);
            }
            let mut failed = Vec::new();
            for ctx in rd.reads_failed.drain(..) {
                failed.extend(r.on_read_failed(ctx));
            }
            if !failed.is_empty() {
                let leader = r.raft.leader().unwrap_or(0);
                self.stats.errors_not_leader += failed.len() as u64;
                for p in failed {
                    self.respond(p.conn, p.req.id, Err(ClientError::NotLeader { leader }));
                }
            }
            self.serve_ready_reads(gid);
            if self.disk_full {
                // Nothing of it is durable, nor will be: no ack, no report.
                // The shard rebuilds its groups from disk once space is back.
                continue;
            }
            self.inflight.push_back(InFlight {
                group: gid,
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
        gid: GroupId,
        rd: &crate::raft::Ready,
    ) -> Option<crate::raft::HardState> {
        let g = &self.replicas[&gid];
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
        gid: GroupId,
        mut hs: Option<crate::raft::HardState>,
        entries: &[crate::raft::Entry],
    ) -> Result<u64, ShardError> {
        let max = self.cfg.wal.record_bytes_max;
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
            if let Some(g) = self.replicas.get_mut(&gid) {
                if let Some(h) = hs {
                    g.lsns.hs = h;
                    g.lsns.hs_lsn = lsn;
                }
                if let Some(first) = chunk.first() {
                    g.lsns.record_lsns.split_off(&first.index);
                    g.lsns.record_lsns.insert(first.index, lsn);
                }
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
        let bytes = storage::record_bytes(hs.is_some(), entries);
        self.submit_encoded(bytes, |out| storage::encode_record(out, gid, hs, entries))
            .await
    }

    /// Appends one record of `bytes` bytes written by `encode` to the WAL,
    /// waiting while its queue is full (backpressure: until the oldest
    /// write lands); its LSN.
    async fn submit_encoded(
        &mut self,
        bytes: usize,
        encode: impl Fn(&mut [u8]),
    ) -> Result<u64, ShardError> {
        let shard = self.cfg.shard;
        loop {
            match self.wal.try_submit_with(bytes, &encode) {
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
            // A replica destroyed since: its acks and reports go nowhere.
            let Some(r) = self.replicas.get_mut(&f.group) else {
                continue;
            };
            tracing::trace!(group = f.group, lsn = f.lsn, acks = f.msgs.len(), "durable");
            for m in &f.msgs {
                self.transport.send(f.group, m);
            }
            r.raft.on_persisted(f.token);
        }
    }

    fn apply(&mut self, gid: GroupId, committed: &[crate::raft::Entry]) {
        let Some(r) = self.replicas.get_mut(&gid) else {
            return;
        };
        if committed.is_empty() {
            return;
        }
        let mut answers = Vec::new();
        let applied = r.apply(committed, &mut answers);
        self.stats.applied += applied.entries;
        for (node, addr) in applied.new_members {
            self.learn_peer(node, &addr);
        }
        for (conn, id, r) in answers {
            if matches!(r, Err(ClientError::NotLeader { .. })) {
                self.stats.errors_not_leader += 1;
            }
            self.respond(conn, id, r);
        }
        self.maybe_snapshot(gid);
    }

    /// Answers requests past their deadline with `Timeout`.
    fn expire_requests(&mut self, now: Instant) {
        let mut late = Vec::new();
        for r in self.replicas.values_mut() {
            r.expire(now, &mut late);
        }
        self.stats.errors_timeout += late.len() as u64;
        for (conn, id) in late {
            self.respond(conn, id, Err(ClientError::Timeout));
        }
    }

    // ---- snapshots ----

    fn maybe_snapshot(&mut self, gid: GroupId) {
        let every = self.cfg.snapshot_entries;
        let Some(g) = self.replicas.get(&gid) else {
            return;
        };
        let applied = g.kv.applied();
        let current = g.raft.snapshot().map_or(0, |s| s.meta.index);
        let by_entries = every > 0 && applied >= current + every;
        let by_bytes = g.bytes_since_snapshot >= self.cfg.snapshot_log_bytes;
        if g.snap_writing || !(by_entries || by_bytes) {
            return;
        }
        self.snapshot_now(gid);
    }

    /// Compacts the group at its applied index and writes the snapshot
    /// file in the background; the WAL is released once it is durable.
    fn snapshot_now(&mut self, gid: GroupId) {
        if self.disk_full {
            return;
        }
        let Some(g) = self.replicas.get_mut(&gid) else {
            return;
        };
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
        let (gid, replica, prev) = (g.id, g.replica, g.snap_file_index);
        let done = self.snaps_done.clone();
        let failed = self.snaps_failed.clone();
        glommio::spawn_local(async move {
            match snapfile::write(&dir, gid, &snap, Some(prev).filter(|&p| p > 0)).await {
                Ok(_) => done.borrow_mut().push((gid, replica, snap.meta)),
                Err(e) => failed.borrow_mut().push(e),
            }
        })
        .detach();
    }

    /// A snapshot received from the leader: durable before anything after
    /// it is written; the state machine restarts from it.
    async fn install_snapshot(&mut self, gid: GroupId, snap: Snapshot) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let Some(prev) = self.replicas.get(&gid).map(|r| r.snap_file_index) else {
            return Ok(());
        };
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
        let Some(g) = self.replicas.get_mut(&gid) else {
            return Ok(());
        };
        g.kv = Kv::restore(&snap.data, self.cfg.kv.clone()).map_err(|e| ShardError::Group {
            shard,
            group: gid,
            what: e.to_string(),
        })?;
        if written {
            g.snap_file_index = snap.meta.index;
            g.lsns.trim_to_snapshot(snap.meta.index, snap.meta.term);
        }
        let book: Vec<(u64, String)> = g.address_book().collect();
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
            for r in self.replicas.values_mut() {
                r.snap_writing = false;
            }
        }
        let done = std::mem::take(&mut *self.snaps_done.borrow_mut());
        if done.is_empty() {
            return Ok(());
        }
        for (gid, replica, meta) in done {
            let g = match self.replicas.get_mut(&gid) {
                Some(g) if g.replica == replica => g,
                other => {
                    // Its replica was destroyed while the file was written:
                    // the file goes too (unless a new replica of the group
                    // wrote one under the same name since).
                    if other.is_none_or(|g| g.snap_file_index != meta.index) {
                        let path = self.snap_dir.join(snapfile::file_name(gid, meta.index));
                        let _ = glommio::io::remove(path).await;
                    }
                    continue;
                }
            };
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
        for g in self.replicas.values_mut() {
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
        let loaded = match load(&self.cfg, &self.wal_dir, &self.snap_dir).await {
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
        for r in self.replicas.values_mut() {
            r.drain_waiters(&mut waiting);
        }
        for (conn, id) in waiting {
            self.respond(conn, id, Err(ClientError::Timeout));
        }
        let Loaded {
            wal,
            replicas,
            catalog,
            replayed,
        } = loaded;
        self.replicas = replicas;
        self.catalog = catalog;
        self.wal = Rc::new(wal);
        self.inflight.clear();
        self.released_lsn = 0;
        self.disk_full = false;
        self.stats.disk_full = 0;
        let book: Vec<(u64, String)> = self
            .replicas
            .values()
            .flat_map(Replica::address_book)
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
        let ids: Vec<GroupId> = self.replicas.keys().copied().collect();
        for gid in ids {
            let g = &self.replicas[&gid];
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
                self.snapshot_now(gid);
            } else if !entries_pinned {
                self.rewrite_hard_state(gid).await?;
                rewrote = true;
            }
        }
        // Catalog entries are restated like hard states: an old create or
        // tombstone must not be released with its segment.
        let stale_at_or_below = head.saturating_sub(max).saturating_sub(1);
        if self.catalog.needed_lsn() <= stale_at_or_below {
            let ops = self.catalog.stated_at_or_below(stale_at_or_below);
            let wal = self.wal.clone();
            storage::catalog::append_catalog(
                &wal,
                &mut self.catalog,
                true,
                &ops,
                self.cfg.wal.record_bytes_max,
            )
            .await
            .map_err(wal_err(self.cfg.shard))?;
            rewrote = true;
        }
        if rewrote {
            self.release_wal().await?;
        }
        Ok(())
    }

    /// Writes the group's current hard state again (a record of its own).
    /// Making it durable early is harmless: replay takes the latest record.
    async fn rewrite_hard_state(&mut self, gid: GroupId) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let Some(hs) = self.replicas.get(&gid).map(|r| r.raft.hard_state()) else {
            return Ok(());
        };
        let lsn = self.submit_record(gid, Some(&hs), &[]).await?;
        // Released only once durable: wait for it here (rare: idle groups).
        self.wal.wait_durable(lsn).await.map_err(wal_err(shard))?;
        if let Some(r) = self.replicas.get_mut(&gid) {
            r.lsns.hs = hs;
            r.lsns.hs_lsn = lsn;
        }
        Ok(())
    }

    async fn release_wal(&mut self) -> Result<(), ShardError> {
        let shard = self.cfg.shard;
        let needed = self
            .replicas
            .values()
            .map(|g| g.lsns.needed_lsn())
            .min()
            .unwrap_or(u64::MAX)
            .min(self.catalog.needed_lsn())
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
        for r in self.replicas.values_mut() {
            if r.reads_new.is_empty() {
                continue;
            }
            let ctx = self.next_ctx;
            self.next_ctx += 1;
            r.start_reads(ctx, &mut failed);
        }
        self.stats.errors_not_leader += failed.len() as u64;
        for (conn, id, leader) in failed {
            self.respond(conn, id, Err(ClientError::NotLeader { leader }));
        }
    }

    fn serve_ready_reads(&mut self, gid: GroupId) {
        let mut ready = Vec::new();
        match self.replicas.get_mut(&gid) {
            Some(r) => r.take_ready_reads(&mut ready),
            None => return,
        }
        for p in ready {
            let result = self.read_now(gid, &p.req);
            self.respond(p.conn, p.req.id, result);
        }
    }
}

/// What `load` found.
struct Replayed {
    records: u64,
    snapshots: usize,
    torn_tail: Option<ringraft_wal::TornTail>,
    /// Logs of groups without a live replica (destroyed), dropped.
    logs_dropped: usize,
}

/// A shard rebuilt from disk.
struct Loaded {
    wal: Wal<DmaDisk>,
    replicas: BTreeMap<GroupId, Replica>,
    catalog: Catalog,
    replayed: Replayed,
}

/// Opens the WAL and rebuilds the shard's replica catalog and every live
/// replica from it and from the snapshot files (at start, and after a full
/// disk has been freed).
///
/// The static deployment (`--groups G`: every group on every node) is one
/// way to create replicas: each group of this shard that the catalog does
/// not hold, and that was never destroyed here, is created (a restate, so
/// a data dir written before the catalog existed keeps its logs). A
/// destroy that a crash interrupted is finished here: snapshot files of
/// groups without a live replica are removed.
async fn load(
    cfg: &ShardConfig,
    wal_dir: &std::path::Path,
    snap_dir: &std::path::Path,
) -> Result<Loaded, ShardError> {
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
    let boot: Vec<CatalogOp> = crate::route::groups_of_shard(shard, cfg.shards, cfg.groups)
        .map(|g| ReplicaDesc {
            group: g,
            replica: cfg.node,
            voters: cfg.voters.clone(),
            descriptor: Bytes::new(),
        })
        .filter(|d| replay.catalog.get(d.group).is_none() && replay.catalog.check_create(d).is_ok())
        .map(CatalogOp::Create)
        .collect();
    storage::catalog::append_catalog(
        &wal,
        &mut replay.catalog,
        true,
        &boot,
        cfg.wal.record_bytes_max,
    )
    .await
    .map_err(wal_err(shard))?;
    let logs_dropped = replay.finish();
    let mut snaps: HashMap<u64, Snapshot> = HashMap::new();
    for (g, snap) in snapfile::load_latest(snap_dir)
        .await
        .map_err(|err| ShardError::Snapshot { shard, err })?
    {
        if replay.catalog.get(g).is_some() {
            snaps.insert(g, snap);
        } else {
            snapfile::remove_group(snap_dir, g)
                .await
                .map_err(|err| ShardError::Snapshot { shard, err })?;
        }
    }
    let mut replicas = BTreeMap::new();
    for d in replay.catalog.live() {
        let log = replay.groups.remove(&d.group).unwrap_or_default();
        let r = build_replica(cfg, d, log, snaps.get(&d.group).cloned())?;
        replicas.insert(d.group, r);
    }
    let replayed = Replayed {
        records: replay.records,
        snapshots: snaps.len(),
        torn_tail: report.torn_tail,
        logs_dropped,
    };
    Ok(Loaded {
        wal,
        replicas,
        catalog: replay.catalog,
        replayed,
    })
}

/// A replica of `d` from its replayed log and latest snapshot.
fn build_replica(
    cfg: &ShardConfig,
    d: &ReplicaDesc,
    mut log: storage::GroupLog,
    snap: Option<Snapshot>,
) -> Result<Replica, ShardError> {
    let (shard, g) = (cfg.shard, d.group);
    let group_err = |what: String| ShardError::Group {
        shard,
        group: g,
        what,
    };
    let mut kv = Kv::new(cfg.kv.clone());
    let mut applied = 0;
    if let Some(s) = &snap {
        log.trim_to_snapshot(s.meta.index, s.meta.term);
        kv = Kv::restore(&s.data, cfg.kv.clone()).map_err(|e| group_err(e.to_string()))?;
        applied = s.meta.index;
    }
    let last = log.entries.last().map_or(applied, |e| e.index.max(applied));
    // A crash may leave a hard state whose commit is past the entries that
    // made it to disk: the leader will say again.
    log.hs.commit = log.hs.commit.min(last).max(applied);
    let mut rc = cfg.raft.clone();
    rc.id = d.replica;
    rc.voters = d.voters.clone();
    rc.seed = cfg.raft.seed ^ g.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let rc = rc.validate().map_err(|e| group_err(e.to_string()))?;
    let entries = std::mem::take(&mut log.entries);
    let raft = RawNode::restart_from(rc, log.hs, snap.clone(), entries, applied);
    let snap_index = snap.as_ref().map_or(0, |s| s.meta.index);
    Ok(Replica::new(g, d.replica, raft, kv, snap_index, log))
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
