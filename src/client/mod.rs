//! The Rust client: routes each key to the owning shard of its group's
//! leader, keeps many requests in flight per connection, follows leader
//! hints, and retries writes with the same session sequence number (so a
//! retried write is applied once).
//!
//! Runs on a glommio executor (one `Client` per executor thread).
//!
//! Keys map to ranges, and a range is a group: the client keeps a
//! `route::RangeMap` of the descriptors the nodes report (`Op::Ranges`),
//! loaded at connect, asked again for a key it has no range for, and
//! corrected when a node answers `KeyNotInRange`. A scan walks the ranges
//! in key order.

mod conn;
mod meta;
mod moves;
mod splits;
pub use splits::SplitDone;

pub use meta::MetaRoster;

pub use moves::{
    CatchUpWatch, MoveOutcome, MOVE_CATCH_UP_WAIT_MS, MOVE_LEADER_WAIT_MS, MOVE_PROGRESS_LOOK_MS,
};

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::meta::{show_key, RangeDesc};
use crate::route::{shard_addr, shard_of, RangeMap, Refusal};
use crate::wire::{ClientError, GroupStatus, Op, ReadMode, Reply, Request, RANGES_REPLY_MAX};
use conn::Conn;

/// Longest pause between two lookups of the range holding a key, ms (the
/// pauses double from 10 ms): a range just split off is reported once it
/// has a leader, usually within tens of ms, and a longer pause (it was
/// 500 ms) made a client find it 300 ms late.
pub const RANGE_LOOKUP_PAUSE_MS_MAX: u64 = 100;

/// Times an operation on a key is sent again after a `KeyNotInRange` that
/// is no newer than the client's descriptor of the range (each time with
/// the range map asked again for that key): the nodes disagree. A refusal
/// of a newer version (the range split) is followed for as long as
/// `op_timeout_ms` allows instead (`Client::call_key`).
pub const KEY_RANGE_RETRIES_MAX: u32 = 3;

/// Descriptors asked of a node for a key the range map has no range for
/// (the range and the next ones: CockroachDB's range cache prefetches
/// alike).
pub const RANGES_MISS_FETCH: u32 = 16;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client addresses (shard 0) of the cluster's nodes.
    pub cluster: Vec<SocketAddr>,
    pub cluster_id: u64,
    /// Total time an operation may take, retries included; past it the
    /// operation fails with `Timeout` (outcome unknown for a write).
    pub op_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// How long one attempt waits for its answer before the client gives
    /// up on that node for this operation: the connection is closed (its
    /// other requests retry too), the node is avoided for as long again,
    /// and the operation is retried elsewhere with the same session
    /// sequence (a retried write is applied once). This is what keeps a
    /// hung node (paused, swapping, half-partitioned) from holding clients
    /// for the whole hang: a crashed node resets its connections, a hung
    /// one does not. Longer than a healthy answer under load (seconds of
    /// fsync stall make a node look hung, which costs a retry, not an
    /// error). Default 500 ms; at most `op_timeout_ms`.
    pub attempt_timeout_ms: u64,
    pub read_mode: ReadMode,
    /// Client id of the exactly-once session (unique per client).
    pub client_id: u64,
    /// Read every node's range descriptors at connect (default true). A
    /// node's own upkeep tasks, which route only to the meta group, skip
    /// it: a copy of the whole map per task would cost memory and a pass
    /// over every node's ranges per connect.
    pub fetch_ranges_at_connect: bool,
}

impl ClientConfig {
    pub fn new(cluster: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            cluster,
            cluster_id: 1,
            op_timeout_ms: 10_000,
            connect_timeout_ms: 1_000,
            attempt_timeout_ms: 500,
            read_mode: ReadMode::Linearizable,
            client_id: fresh_client_id(),
            fetch_ranges_at_connect: true,
        }
    }
}

/// A client id unlikely to collide: time, process id and a counter.
pub fn fresh_client_id() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut z = t ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Server(ClientError),
    /// No answer within `op_timeout_ms`: a write may or may not be applied.
    #[error("no answer within {0} ms (outcome unknown)")]
    Timeout(u64),
    /// No node could be reached; or the operation's time ran out while
    /// its group's leader was a node whose client address neither this
    /// client nor the node that named it knows (nothing was applied).
    #[error("cannot reach the cluster: {0}")]
    Unreachable(String),
}

impl Error {
    /// Whether a write that failed so may have been applied.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Server(e) => e.outcome_unknown(),
            _ => false,
        }
    }
}

/// What asking for the cluster map found about a leader's address.
enum Learned {
    Known,
    /// The node asked answered, without it.
    Unknown,
    /// No answer, or another fetch was under way.
    Busy,
}

/// A connection-level failure of one attempt (retried).
#[derive(Debug, Clone)]
pub(crate) struct ConnLost(pub String);

struct Inner {
    cfg: ClientConfig,
    /// node id → client address of its shard 0.
    nodes: RefCell<HashMap<u64, SocketAddr>>,
    shards: Cell<u32>,
    groups: Cell<u64>,
    /// The cluster's replication factor, from the maps (0: not known).
    replication_factor: Cell<u32>,
    /// Last known leader node of each group (absent: unknown). Keyed by
    /// group id, not indexed: ranges made by splits have ids above the
    /// bootstrap's groups (issue #18), and a client that kept leaders only
    /// for those sent every request of a split range to its replicas in
    /// turn, two thirds of them to a follower that refused it.
    leaders: RefCell<HashMap<u64, u64>>,
    /// The ranges the nodes reported: key → group.
    ranges: RefCell<RangeMap>,
    conns: RefCell<HashMap<(u64, u32), Rc<Conn>>>,
    seq: Cell<u64>,
    /// Writes in flight (for `ack`: the lowest seq without an answer).
    unanswered: RefCell<BTreeSet<u64>>,
    next_node: Cell<usize>,
    /// Nodes that left an attempt unanswered, avoided until the instant.
    suspects: RefCell<HashMap<u64, Instant>>,
    /// A cluster map is being fetched to learn a node named in a leader
    /// hint (one at a time: the other callers back off and retry).
    learning: Cell<bool>,
    /// `close` was called: calls end, no connection is opened any more.
    closed: Cell<bool>,
    /// The meta group's leader as last learned (0: not known).
    meta_leader: Cell<u64>,
    /// node id → peer address of its shard 0, where a map gave it.
    peer_addrs: RefCell<HashMap<u64, String>>,
}

/// The last handle of a client gone: its connections close (the tasks
/// that serve them end once the nodes close their ends).
impl Drop for Inner {
    fn drop(&mut self) {
        for c in self.conns.get_mut().values() {
            c.close("the client was dropped".into());
        }
    }
}

/// A client of one cluster.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

impl Client {
    /// Connects: learns node ids, groups, shards and leaders.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, Error> {
        let c = Client {
            inner: Rc::new(Inner {
                cfg,
                nodes: RefCell::new(HashMap::new()),
                shards: Cell::new(1),
                groups: Cell::new(0),
                replication_factor: Cell::new(0),
                leaders: RefCell::new(HashMap::new()),
                ranges: RefCell::new(RangeMap::new()),
                conns: RefCell::new(HashMap::new()),
                seq: Cell::new(0),
                unanswered: RefCell::new(BTreeSet::new()),
                next_node: Cell::new(0),
                suspects: RefCell::new(HashMap::new()),
                learning: Cell::new(false),
                closed: Cell::new(false),
                meta_leader: Cell::new(0),
                peer_addrs: RefCell::new(HashMap::new()),
            }),
        };
        let mut last_err = String::from("no addresses given");
        for &a in &c.inner.cfg.cluster.clone() {
            match Conn::open(a, c.inner.cfg.cluster_id, 0, c.inner.cfg.connect_timeout_ms).await {
                Ok(conn) => {
                    c.inner.nodes.borrow_mut().insert(conn.node, a);
                    c.inner.conns.borrow_mut().insert((conn.node, 0), conn);
                }
                Err(e) if e.0.starts_with(&a.to_string()) => last_err = e.0,
                Err(e) => last_err = format!("{a}: {}", e.0),
            }
        }
        if c.inner.nodes.borrow().is_empty() {
            return Err(Error::Unreachable(last_err));
        }
        c.refresh_map().await?;
        if c.inner.cfg.fetch_ranges_at_connect {
            c.fetch_ranges(b"", true).await;
        }
        Ok(c)
    }

    /// Closes every connection of this client and waits (at most
    /// `connect_timeout_ms`) until their tasks ended and their sockets are
    /// closed. Calls in flight on any handle end with a lost connection.
    /// Dropping the last handle closes them too, but their tasks end only
    /// when the executor runs them again: a program that runs one short
    /// executor per client (tests, tools) leaks their sockets unless it
    /// closes the client first.
    pub async fn close(&self) {
        self.inner.closed.set(true);
        let conns: Vec<Rc<Conn>> = self
            .inner
            .conns
            .borrow_mut()
            .drain()
            .map(|(_, c)| c)
            .collect();
        let limit = Duration::from_millis(self.inner.cfg.connect_timeout_ms.max(1));
        for c in &conns {
            c.close("the client was closed".into());
        }
        let _ = glommio::timer::timeout(limit, async {
            for c in &conns {
                c.ended().await;
            }
            Ok(())
        })
        .await;
    }

    pub fn groups(&self) -> u64 {
        self.inner.groups.get()
    }

    /// Replicas per range the cluster was bootstrapped with, as its
    /// founding nodes report it (0: no node reached knows it).
    pub fn replication_factor(&self) -> u32 {
        self.inner.replication_factor.get()
    }

    pub fn shards(&self) -> u32 {
        self.inner.shards.get()
    }

    /// Node ids reached, with their client addresses.
    pub fn nodes(&self) -> Vec<(u64, SocketAddr)> {
        let mut v: Vec<_> = self
            .inner
            .nodes
            .borrow()
            .iter()
            .map(|(&k, &v)| (k, v))
            .collect();
        v.sort();
        v
    }

    /// Last known leader of each group (0: unknown).
    ///
    /// Indexed by group id: as long as the bootstrap's groups, or longer
    /// to hold the highest range id whose leader is known (range ids come
    /// from the meta group's counter). The meta group is not in it
    /// (`meta_leader`).
    pub fn leaders(&self) -> Vec<u64> {
        let l = self.inner.leaders.borrow();
        let ranges = || l.iter().filter(|&(&g, _)| g < crate::route::META_GROUP);
        let len = ranges().map(|(&g, _)| g + 1).max().unwrap_or(0);
        let mut v = vec![0; len.max(self.inner.groups.get()) as usize];
        for (&g, &n) in ranges() {
            v[g as usize] = n;
        }
        v
    }

    /// Range → the node of its last known leader, for every range whose
    /// leader is known (the meta group left out): what the balancer plans
    /// with (`meta::planner::Observed::leaders`).
    pub fn known_leaders(&self) -> std::collections::BTreeMap<u64, u64> {
        self.inner
            .leaders
            .borrow()
            .iter()
            .filter(|&(&g, _)| g < crate::route::META_GROUP)
            .map(|(&g, &n)| (g, n))
            .collect()
    }

    /// The last known leader node of group `group` (0: not known).
    pub fn leader_of(&self, group: u64) -> u64 {
        self.inner
            .leaders
            .borrow()
            .get(&group)
            .copied()
            .unwrap_or(0)
    }

    /// Notes `node` as group `group`'s leader (0: forgets it).
    fn set_leader(&self, group: u64, node: u64) {
        let mut l = self.inner.leaders.borrow_mut();
        if node == 0 {
            l.remove(&group);
        } else {
            l.insert(group, node);
        }
    }

    /// Asks every shard of every node for its groups' leaders, and the
    /// nodes it learns of that way in turn, until no new node is named: a
    /// node names the nodes its groups share with it, which with ranges on
    /// a subset of the nodes need not be all of them (each node is asked
    /// once, so this ends).
    pub async fn refresh_map(&self) -> Result<(), Error> {
        let mut asked = std::collections::BTreeSet::new();
        let mut first = true;
        let mut any = false;
        loop {
            let new: Vec<u64> = self
                .nodes()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| !asked.contains(n))
                .collect();
            if new.is_empty() {
                break;
            }
            for n in new {
                asked.insert(n);
                let mut s = 0;
                while s < self.inner.shards.get() {
                    let req = sessionless(0, Op::ClusterMap);
                    if let Some(Ok(Ok(Reply::Map(m)))) = self.attempt(n, s, req).await {
                        any = true;
                        self.learn_nodes(&m);
                        let rf = &self.inner.replication_factor;
                        rf.set(rf.get().max(m.replication_factor));
                        if first {
                            first = false;
                            self.inner.shards.set(m.shards);
                            self.inner.groups.set(m.groups);
                        }
                        for &(g, leader) in &m.leaders {
                            if leader != 0 && shard_of(g, m.shards) == s {
                                self.set_leader(g, leader);
                            }
                        }
                    }
                    s += 1;
                }
            }
        }
        if any {
            Ok(())
        } else {
            Err(Error::Unreachable(
                "no node answered the cluster map".into(),
            ))
        }
    }

    /// Asks the nodes, shard by shard, for the descriptors of their
    /// ranges holding keys from `from` on, and keeps those not older than
    /// what the map holds (`RangeMap::insert`). `whole`: every node, every
    /// page (at connect); else nodes in turn until one reports a range
    /// holding `from` (a key the map has none for). A node reports only
    /// the ranges it hosts, so no one node's answer is taken for all.
    pub async fn fetch_ranges(&self, from: &[u8], whole: bool) {
        let nodes = self.nodes();
        let limit = if whole {
            RANGES_REPLY_MAX
        } else {
            RANGES_MISS_FETCH
        };
        for s in 0..self.inner.shards.get() {
            for &(n, _) in &nodes {
                let mut at = Bytes::copy_from_slice(from);
                loop {
                    let op = Op::Ranges {
                        from: at.clone(),
                        limit,
                    };
                    let Some(Ok(Ok(Reply::Ranges(page)))) =
                        self.attempt(n, s, sessionless(0, op)).await
                    else {
                        break;
                    };
                    let mut last_end = None;
                    for b in &page {
                        // A descriptor that does not decode is a node's
                        // bug; the others still route.
                        if let Ok(d) = RangeDesc::decode(b) {
                            last_end = Some(d.end.clone());
                            let _ = self.inner.ranges.borrow_mut().insert(d);
                        }
                    }
                    match last_end {
                        Some(e) if whole && !e.is_empty() => at = e,
                        _ => break,
                    }
                }
                if !whole && self.group_of(from).is_some() {
                    return;
                }
            }
        }
    }

    /// The ranges this client knows, in key order.
    pub fn ranges(&self) -> Vec<RangeDesc> {
        self.inner.ranges.borrow().iter().cloned().collect()
    }

    /// The key intervals `[start, end)` no known range covers, in key
    /// order (an empty `end`: the end of the keyspace). Empty when the
    /// map covers the whole keyspace. A node reports only the ranges
    /// whose leader it knows, so a range whose leader just died is a gap
    /// until it elects another.
    pub fn map_gaps(&self) -> Vec<(Bytes, Bytes)> {
        let map = self.inner.ranges.borrow();
        let mut gaps = Vec::new();
        let mut next = Bytes::new();
        let mut any = false;
        for d in map.iter() {
            any = true;
            if d.start != next {
                gaps.push((next.clone(), d.start.clone()));
            }
            next = d.end.clone();
        }
        if !any || !next.is_empty() {
            gaps.push((next, Bytes::new()));
        }
        gaps
    }

    /// Fetches the whole range map again until it covers every key or
    /// `op_timeout_ms` has passed (a range whose leader died is reported
    /// again once it has elected another, within an election timeout).
    /// Returns the keys still not covered (empty: the whole map is known).
    pub async fn fetch_whole_map(&self) -> Vec<(Bytes, Bytes)> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.cfg.op_timeout_ms);
        let mut pause = Duration::from_millis(20);
        loop {
            self.fetch_ranges(b"", true).await;
            let gaps = self.map_gaps();
            if gaps.is_empty() || Instant::now() + pause >= deadline {
                return gaps;
            }
            glommio::timer::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The group holding `key`, as this client's range map has it (`None`:
    /// no range known for it).
    pub fn group_of(&self, key: &[u8]) -> Option<u64> {
        self.inner.ranges.borrow().range_of(key).map(|d| d.id)
    }

    /// The group holding `key`: from the map, else after asking the nodes,
    /// again with a growing pause until `op_timeout_ms` has passed (a
    /// node reports only the ranges whose leader it knows: none while the
    /// cluster elects).
    async fn group_for(&self, key: &[u8]) -> Result<u64, Error> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.cfg.op_timeout_ms);
        self.group_for_until(key, deadline).await
    }

    /// [`Client::group_for`], looking until `deadline`.
    async fn group_for_until(&self, key: &[u8], deadline: Instant) -> Result<u64, Error> {
        if let Some(g) = self.group_of(key) {
            return Ok(g);
        }
        let mut pause_ms = 10;
        loop {
            self.fetch_ranges(key, false).await;
            if let Some(g) = self.group_of(key) {
                return Ok(g);
            }
            if Instant::now() >= deadline || self.inner.closed.get() {
                return Err(Error::Unreachable(format!(
                    "no node reached reports a range holding key {} that has a leader (nodes down, or still electing; `ctl status` shows which)",
                    show_key(key)
                )));
            }
            glommio::timer::sleep(Duration::from_millis(pause_ms)).await;
            pause_ms = (pause_ms * 2).min(RANGE_LOOKUP_PAUSE_MS_MAX);
        }
    }

    /// `op` on `key`'s group, sent again to the group the nodes then
    /// report if one answers that the key is not in its range. That answer
    /// is a refusal (nothing applied), so a write may be sent again under
    /// a new sequence.
    ///
    /// An answer of a newer version than the map's descriptor of the
    /// group (the range split or merged) narrows that descriptor, and the
    /// key is looked up again, for as long as `op_timeout_ms` allows:
    /// ranges that keep splitting keep making progress. So does an answer
    /// the map knew already (another request on this client was refused
    /// first). An answer of no newer version, from a group the map still
    /// sends the key to, means the nodes disagree (bootstrapped with other
    /// cuts, or a replica behind its own descriptor): after
    /// [`KEY_RANGE_RETRIES_MAX`] such answers the client says so
    /// ([`RangeMap::learn_refusal`]).
    async fn call_key(&self, key: &[u8], op: Op, write: bool) -> Result<Reply, Error> {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(self.inner.cfg.op_timeout_ms);
        let mut tries = 0;
        // One request for every attempt, whatever range it goes to.
        let mut req = self.request(0, op);
        let mut first = true;
        // The last refusal of a range that no longer holds `key`.
        let mut last: Option<ClientError> = None;
        loop {
            // The clock is read again only if time passed since `start`: a
            // retry, or a map to fetch.
            let (g, now) = match self.group_of(key) {
                Some(g) if first => (g, start),
                _ => {
                    let g = self.group_for_until(key, deadline).await?;
                    (g, Instant::now())
                }
            };
            if let Some(e) = last.as_ref().filter(|_| now >= deadline) {
                // Refused by the range asked last (nothing applied), and
                // no time left to send it again.
                return Err(self.range_kept_changing(key, e));
            }
            first = false;
            req.group = g;
            let e = match self.call_request(&mut req, write, now, deadline).await {
                Err(Error::Server(e @ ClientError::KeyNotInRange { .. })) => e,
                r => return r,
            };
            if let ClientError::KeyNotInRange {
                start,
                end,
                version,
                ..
            } = &e
            {
                let learnt = self
                    .inner
                    .ranges
                    .borrow_mut()
                    .learn_refusal(g, key, start, end, *version);
                if learnt == Refusal::Disagrees {
                    tries += 1;
                }
            }
            if tries > KEY_RANGE_RETRIES_MAX {
                return Err(Error::Server(ClientError::Failed {
                    reason: format!(
                        "the nodes disagree on which range holds key {} (asked {tries} times; the last: {e}): were they all bootstrapped with the same --groups and --initial-split-keys?",
                        show_key(key),
                    ),
                }));
            }
            if Instant::now() >= deadline {
                return Err(self.range_kept_changing(key, &e));
            }
            last = Some(e);
            self.fetch_ranges(key, false).await;
        }
    }

    /// `call_key`'s time ran out while the range holding `key` kept
    /// refusing it (`last`: the last refusal).
    fn range_kept_changing(&self, key: &[u8], last: &ClientError) -> Error {
        Error::Server(ClientError::Failed {
            reason: format!(
                "the range holding key {} kept changing for {} ms (op_timeout_ms; the last answer: {last}): ranges splitting or merging faster than a client can follow; try again",
                show_key(key),
                self.inner.cfg.op_timeout_ms
            ),
        })
    }

    /// Adds the nodes `m` names that this client did not know (added to
    /// the cluster after it connected). Never forgets one: a map from a
    /// lagging node may miss a recent member.
    fn learn_nodes(&self, m: &crate::wire::ClusterMap) {
        for info in &m.nodes {
            if let Ok(a) = info.client_addr.parse::<SocketAddr>() {
                self.inner.nodes.borrow_mut().entry(info.id).or_insert(a);
            }
            if !info.peer_addr.is_empty() {
                self.inner
                    .peer_addrs
                    .borrow_mut()
                    .entry(info.id)
                    .or_insert_with(|| info.peer_addr.clone());
            }
        }
        if m.meta_leader != 0 {
            self.inner.meta_leader.set(m.meta_leader);
        }
    }

    /// Node `node`'s peer address (shard 0), if a map gave it.
    pub fn peer_addr(&self, node: u64) -> Option<String> {
        self.inner.peer_addrs.borrow().get(&node).cloned()
    }

    /// A leader hint named `hint`, a node this client has no address for
    /// (it joined after the client connected): asks `via`, which gave the
    /// hint and so applied the membership change, for its cluster map.
    /// Whether `hint` is known now. One fetch at a time per client; a
    /// caller that finds one under way gets `Busy` (and backs off).
    async fn learn_node(&self, hint: u64, via: u64, shard: u32) -> Learned {
        if self.inner.learning.replace(true) {
            return Learned::Busy;
        }
        // Cleared however this ends, also when the caller's future is
        // dropped mid-fetch (a timeout around a call).
        struct Learning<'a>(&'a Cell<bool>);
        impl Drop for Learning<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let learning = Learning(&self.inner.learning);
        let r = self
            .attempt(via, shard, sessionless(0, Op::ClusterMap))
            .await;
        drop(learning);
        let answered = matches!(r, Some(Ok(Ok(Reply::Map(_)))));
        if let Some(Ok(Ok(Reply::Map(m)))) = r {
            self.learn_nodes(&m);
        }
        let known = self.inner.nodes.borrow().contains_key(&hint);
        tracing::debug!(
            hint,
            via,
            known,
            "asked for the cluster map to reach a new leader"
        );
        match (known, answered) {
            (true, _) => Learned::Known,
            (false, true) => Learned::Unknown,
            (false, false) => Learned::Busy,
        }
    }

    /// The open connection to `node`'s `shard`, if there is one.
    fn open_conn(&self, node: u64, shard: u32) -> Option<Rc<Conn>> {
        self.inner
            .conns
            .borrow()
            .get(&(node, shard))
            .filter(|c| !c.is_closed())
            .cloned()
    }

    async fn conn(&self, node: u64, shard: u32) -> Result<Rc<Conn>, ConnLost> {
        if let Some(c) = self.open_conn(node, shard) {
            return Ok(c);
        }
        if self.inner.closed.get() {
            return Err(ConnLost("the client was closed".into()));
        }
        let base = *self
            .inner
            .nodes
            .borrow()
            .get(&node)
            .ok_or_else(|| ConnLost(format!("node {node} is not known to this client")))?;
        let c = Conn::open(
            shard_addr(base, shard),
            self.inner.cfg.cluster_id,
            shard,
            self.inner.cfg.connect_timeout_ms,
        )
        .await?;
        if c.node != node {
            return Err(ConnLost(format!(
                "{} answered as node {}, expected {node}",
                shard_addr(base, shard),
                c.node
            )));
        }
        self.inner
            .conns
            .borrow_mut()
            .insert((node, shard), c.clone());
        Ok(c)
    }

    /// The next node in turn, skipping suspects while any node is not.
    fn some_node(&self) -> u64 {
        let nodes = self.nodes();
        for _ in 0..nodes.len() {
            let i = self.inner.next_node.get();
            self.inner.next_node.set(i + 1);
            let n = nodes[i % nodes.len()].0;
            if !self.is_suspect(n) {
                return n;
            }
        }
        let i = self.inner.next_node.get();
        nodes[i % nodes.len()].0
    }

    /// A node to ask about `group` when its leader is not known: one of the
    /// nodes its descriptor places it on (in turn, skipping suspects while
    /// any is not), else any node ([`Client::some_node`]: the range is not
    /// in the map, or no node it names is known to this client).
    fn replica_node(&self, group: u64) -> u64 {
        let placed: Vec<u64> = {
            let ranges = self.inner.ranges.borrow();
            let nodes = self.inner.nodes.borrow();
            ranges
                .get(group)
                .map(|d| {
                    d.replicas
                        .iter()
                        .map(|r| r.node)
                        .filter(|n| nodes.contains_key(n))
                        .collect()
                })
                .unwrap_or_default()
        };
        if placed.is_empty() {
            return self.some_node();
        }
        let i = self.inner.next_node.get();
        self.inner.next_node.set(i + 1);
        (0..placed.len())
            .map(|k| placed[(i + k) % placed.len()])
            .find(|&n| !self.is_suspect(n))
            .unwrap_or(placed[i % placed.len()])
    }

    /// Whether `node` left an attempt unanswered recently.
    fn is_suspect(&self, node: u64) -> bool {
        let mut s = self.inner.suspects.borrow_mut();
        match s.get(&node) {
            Some(&until) if Instant::now() < until => true,
            Some(_) => {
                s.remove(&node);
                false
            }
            None => false,
        }
    }

    /// `node` did not answer within `attempt_timeout_ms`: its connection to
    /// `shard` is closed (whatever waits on it retries) and the node is
    /// avoided for as long again.
    fn suspect(&self, node: u64, shard: u32) {
        let ms = self.attempt_timeout_ms();
        if let Some(c) = self.inner.conns.borrow_mut().remove(&(node, shard)) {
            c.close(format!("node {node} did not answer within {ms} ms"));
        }
        let until = Instant::now() + Duration::from_millis(ms);
        self.inner.suspects.borrow_mut().insert(node, until);
    }

    /// How long one operation may take, retries included
    /// (`ClientConfig::op_timeout_ms`).
    pub fn op_timeout_ms(&self) -> u64 {
        self.inner.cfg.op_timeout_ms
    }

    fn attempt_timeout_ms(&self) -> u64 {
        let c = &self.inner.cfg;
        c.attempt_timeout_ms.clamp(1, c.op_timeout_ms.max(1))
    }

    /// One request to `node`'s `shard`, connecting if needed, bounded by
    /// `attempt_timeout_ms` (`None`: no answer in time; the node is then a
    /// suspect). For requests outside the retry loop (the map, status).
    async fn attempt(
        &self,
        node: u64,
        shard: u32,
        req: Request,
    ) -> Option<Result<Result<Reply, ClientError>, ConnLost>> {
        let limit = Duration::from_millis(self.attempt_timeout_ms());
        let once = async {
            let c = self.conn(node, shard).await?;
            c.call(req).await
        };
        match glommio::timer::timeout(limit, async { Ok(once.await) }).await {
            Ok(r) => Some(r),
            Err(_) => {
                self.suspect(node, shard);
                None
            }
        }
    }

    /// Sends `op` for `group` to its leader, following hints and retrying
    /// until it gets an answer that is not "ask someone else", or the
    /// operation's deadline passes.
    pub async fn call(&self, group: u64, op: Op, write: bool) -> Result<Reply, Error> {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(self.inner.cfg.op_timeout_ms);
        self.call_request(&mut self.request(group, op), write, now, deadline)
            .await
    }

    /// A request of this client's for `op` on `group`, outside any session
    /// sequence yet (`call_request` gives a write its own).
    fn request(&self, group: u64, op: Op) -> Request {
        Request {
            id: 0,
            group,
            client: self.inner.cfg.client_id,
            seq: 0,
            ack: 0,
            op,
        }
    }

    /// [`Client::call`] of `req` (its group and op), from `now` (the
    /// clock, read by the caller) until `deadline`: a write gets a new
    /// session sequence number, kept by every attempt.
    async fn call_request(
        &self,
        req: &mut Request,
        write: bool,
        now: Instant,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let inner = &self.inner;
        (req.seq, req.ack) = if write {
            let s = inner.seq.get() + 1;
            inner.seq.set(s);
            let mut un = inner.unanswered.borrow_mut();
            un.insert(s);
            (s, *un.first().expect("just inserted"))
        } else {
            (0, 0)
        };
        let r = self.call_inner(req, now, deadline).await;
        if write {
            // Answered, or given up: either way the client will not retry it.
            inner.unanswered.borrow_mut().remove(&req.seq);
        }
        r
    }

    async fn call_inner(
        &self,
        req: &mut Request,
        mut now: Instant,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let inner = &self.inner;
        let timeout_ms = inner.cfg.op_timeout_ms;
        let (group, seq) = (req.group, req.seq);
        let shard = shard_of(group, inner.shards.get());
        let mut backoff_ms = 2;
        // The last refusal for a full disk: reported if nothing better comes.
        let mut disk_full = false;
        // A write some attempt of which may have been applied (sent, then
        // no answer or an answer that does not say): however later
        // attempts end, its outcome is unknown — never a refusal. (A write
        // reported DiskFull after an earlier attempt had been applied is
        // what the chaos soak caught: a value read that "was never written".)
        let write = seq != 0;
        let mut maybe_applied = false;
        // The last "ask node N" whose node's client address the node
        // that named it did not know either: (group's leader, that node).
        let mut unknown_leader: Option<(u64, u64)> = None;
        let give_up = |disk_full: bool, maybe_applied: bool, unknown: Option<(u64, u64)>| {
            if disk_full && !(write && maybe_applied) {
                Error::Server(ClientError::DiskFull)
            } else if let (Some((leader, via)), false) = (unknown, write && maybe_applied) {
                // Nodes started with `--peers` tell each other their Raft
                // addresses only: the client needs every node's.
                Error::Unreachable(format!(
                    "group {group} is led by node {leader}, whose client address node {via} does not know: list every node's client address in the cluster addresses given (e.g. ctl --cluster A,B,C)"
                ))
            } else {
                Error::Timeout(timeout_ms)
            }
        };
        loop {
            if now >= deadline {
                return Err(give_up(disk_full, maybe_applied, unknown_leader));
            }
            if inner.closed.get() {
                // Closed meanwhile: a write that may have been applied
                // stays of unknown outcome.
                return Err(if write && maybe_applied {
                    Error::Timeout(timeout_ms)
                } else {
                    Error::Unreachable("the client was closed".into())
                });
            }
            let leader = self.leader_of(group);
            let node = if leader != 0
                && inner.nodes.borrow().contains_key(&leader)
                && !self.is_suspect(leader)
            {
                leader
            } else {
                self.replica_node(group)
            };
            let sent = Cell::new(false);
            let left = deadline.saturating_duration_since(now);
            let per_attempt = Duration::from_millis(self.attempt_timeout_ms());
            // Err(()): no answer within the attempt's time.
            let outcome: Result<_, ()> = match self.open_conn(node, shard) {
                // The common case: an open connection, a full attempt's
                // time. Its deadlines grow with the clock, as the
                // connection's watchdog needs (`Conn::call_until`).
                Some(c) if left >= per_attempt => {
                    sent.set(true);
                    c.call_until(req, now + per_attempt).await.map_err(|_| ())
                }
                // A connection to open, or the operation's last moments:
                // a timer of its own. Opening a connection is rare and its
                // future is large: boxed, so every call does not carry
                // (and move) it.
                _ => {
                    let attempt = async {
                        let c = match self.open_conn(node, shard) {
                            Some(c) => c,
                            None => Box::pin(self.conn(node, shard)).await?,
                        };
                        sent.set(true);
                        c.call(req.clone()).await
                    };
                    glommio::timer::timeout(left.min(per_attempt), async { Ok(attempt.await) })
                        .await
                        .map_err(|_| ())
                }
            };
            if sent.get()
                && match &outcome {
                    Err(_) | Ok(Err(_)) => true,
                    Ok(Ok(Err(e))) => e.outcome_unknown(),
                    Ok(Ok(Ok(_))) => false,
                }
            {
                // Sent, then no answer, or one that does not say: it may
                // have been applied.
                maybe_applied = true;
            }
            match &outcome {
                Ok(Ok(Ok(_))) => {}
                Err(_) => tracing::debug!(group, node, shard, seq, "no answer in time"),
                Ok(Ok(Err(e))) => tracing::debug!(group, node, shard, seq, "refused: {e}"),
                Ok(Err(e)) => tracing::debug!(group, node, shard, seq, "connection lost: {}", e.0),
            }
            let wait = match outcome {
                Err(_) if Instant::now() >= deadline => {
                    return Err(give_up(disk_full, maybe_applied, unknown_leader))
                }
                // No answer in time: a hung node. Ask another (the same
                // sequence number: applied once whichever answers).
                Err(_) => {
                    self.suspect(node, shard);
                    self.set_leader(group, 0);
                    false
                }
                Ok(Ok(Ok(reply))) => {
                    self.set_leader(group, node);
                    return Ok(reply);
                }
                Ok(Ok(Err(ClientError::NotLeader { leader: hint }))) => {
                    // A leader this client never heard of joined after it
                    // connected: the node that named it has its address.
                    if hint != 0 && hint != node && !inner.nodes.borrow().contains_key(&hint) {
                        // Within what is left of the operation's time.
                        let left = deadline.saturating_duration_since(Instant::now());
                        let learned = glommio::timer::timeout(left, async {
                            Ok(self.learn_node(hint, node, shard).await)
                        })
                        .await;
                        // The node that named the leader has no address
                        // for it either. Retried all the same (leadership
                        // may move to a node this client knows: a failover
                        // from a node that is down), and said if the
                        // operation's time runs out so.
                        if matches!(learned, Ok(Learned::Unknown)) {
                            unknown_leader = Some((hint, node));
                        }
                    }
                    let known = hint != 0
                        && hint != node
                        && inner.nodes.borrow().contains_key(&hint)
                        && !self.is_suspect(hint);
                    self.set_leader(group, if known { hint } else { 0 });
                    !known
                }
                // The node gave up waiting, or has no replica of the group
                // (it was removed from it): ask again, elsewhere if need
                // be. The write keeps its seq, so a retry cannot apply it
                // twice.
                Ok(Ok(Err(
                    e @ (ClientError::Timeout
                    | ClientError::Busy
                    | ClientError::ShuttingDown
                    | ClientError::NotHosted { .. }),
                ))) => {
                    self.set_leader(group, 0);
                    if matches!(e, ClientError::NotHosted { .. }) {
                        // The descriptor that named this node is out of
                        // date (the replica moved): forget it, so the next
                        // attempt asks any node and the next key lookup
                        // loads the current one.
                        inner.ranges.borrow_mut().remove(group);
                    }
                    true
                }
                // That node's disk is full: leadership moves elsewhere.
                Ok(Ok(Err(ClientError::DiskFull))) => {
                    disk_full = true;
                    self.set_leader(group, 0);
                    true
                }
                Ok(Ok(Err(_))) if write && maybe_applied => {
                    // An attempt may have been applied: whatever this one
                    // says, the outcome is unknown.
                    return Err(Error::Timeout(timeout_ms));
                }
                Ok(Ok(Err(e))) => return Err(Error::Server(e)),
                Ok(Err(ConnLost(_))) => {
                    self.set_leader(group, 0);
                    true
                }
            };
            if wait {
                glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(100);
            }
            now = Instant::now();
        }
    }

    /// Admin `op` (a membership change, a leader transfer, a snapshot)
    /// on `group`'s leader, following leader changes like a read does,
    /// until `op_timeout_ms`. Membership changes already in force are
    /// answered Done, so a retry is safe.
    pub async fn admin_on_leader(&self, group: u64, op: Op) -> Result<Reply, Error> {
        self.call(group, op, false).await
    }

    /// The id of every range: the bootstrap's (`0..groups()`) and every
    /// one the nodes report now (the whole map fetched again: ranges split
    /// off since), ascending.
    ///
    /// # Errors
    /// `Unreachable` naming the keys no reported range holds, if the map
    /// still has a gap after `op_timeout_ms` (a range with no leader
    /// reported: nodes down, or electing): a caller that must reach every
    /// range would miss the one holding them.
    pub async fn range_ids(&self) -> Result<Vec<u64>, Error> {
        let gaps = self.fetch_whole_map().await;
        if let Some((from, to)) = gaps.first() {
            return Err(Error::Unreachable(format!(
                "no node reports a range with a leader for the keys from {} to {} ({} such gaps): nodes down, or still electing; `ctl ranges` shows the map",
                show_key(from),
                if to.is_empty() { "+inf".into() } else { show_key(to) },
                gaps.len()
            )));
        }
        let mut ids: BTreeSet<u64> = (0..self.groups()).collect();
        ids.extend(self.inner.ranges.borrow().iter().map(|d| d.id));
        Ok(ids.into_iter().collect())
    }

    /// `admin_on_leader` on every range's group in turn (not the meta
    /// group: `move_meta_replica`); an error that may pass (`Failed`: a
    /// membership change still in progress, a learner not caught up yet;
    /// `NotLeader`, `Busy`, a timeout, an unreachable node: an election)
    /// is asked again until `patience` has passed (the membership
    /// operations are safe to repeat). The ranges are listed again after
    /// each pass, and the ones the pass did not see (split off meanwhile,
    /// perhaps from their parent as it was before the operation) are
    /// done too, until a listing shows none. The first group that fails,
    /// with its error (`None`: the listing itself, a gap in the map that
    /// did not close, or ranges still splitting off when `patience` ran
    /// out).
    pub async fn admin_every_group(
        &self,
        op: Op,
        patience: Duration,
    ) -> Result<(), (Option<u64>, Error)> {
        let deadline = Instant::now() + patience;
        let mut done = BTreeSet::new();
        loop {
            let todo = self
                .ranges_left(&done, deadline)
                .await
                .map_err(|e| (None, e))?;
            if todo.is_empty() {
                return Ok(());
            }
            for g in todo {
                loop {
                    match self.admin_on_leader(g, op.clone()).await {
                        Ok(_) => break,
                        // Through an election or a slow answer too, not
                        // only a refusal that may pass.
                        Err(e) if moves::transient(&e) && Instant::now() < deadline => {
                            glommio::timer::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err((Some(g), e)),
                    }
                }
                done.insert(g);
            }
        }
    }

    /// The ranges not in `done` (those an operation over every range has
    /// not gone over yet): `range_ids`, listed again while the map has a
    /// gap until `deadline`. Empty once a listing shows none left. An
    /// operation calls it after each pass, so ranges split off meanwhile
    /// (perhaps from a parent as it was before the operation) are done
    /// too. Errors: the listing's, once `deadline` passed; or, once
    /// `deadline` passed with `done` not empty, ranges still splitting
    /// off (`Unreachable`, naming them: ask again).
    pub async fn ranges_left(
        &self,
        done: &BTreeSet<u64>,
        deadline: Instant,
    ) -> Result<Vec<u64>, Error> {
        let ids = loop {
            match self.range_ids().await {
                Ok(ids) => break ids,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("listing the ranges again: {e}");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let todo: Vec<u64> = ids.into_iter().filter(|g| !done.contains(g)).collect();
        if !todo.is_empty() && !done.is_empty() && Instant::now() >= deadline {
            return Err(Error::Unreachable(format!(
                "ranges {todo:?} split off while the operation went over the others, and more kept coming until its deadline: ask again"
            )));
        }
        Ok(todo)
    }

    /// A node address learned elsewhere (the meta group's map): kept if
    /// this client knows none for `node`.
    pub fn learn_node_addr(&self, node: u64, addr: SocketAddr) {
        self.inner.nodes.borrow_mut().entry(node).or_insert(addr);
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let op = Op::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        };
        self.call_key(key, op, true).await.map(|_| ())
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        self.get_with(key, self.inner.cfg.read_mode).await
    }

    pub async fn get_with(&self, key: &[u8], mode: ReadMode) -> Result<Option<Bytes>, Error> {
        let op = Op::Get {
            key: Bytes::copy_from_slice(key),
            mode,
        };
        match self.call_key(key, op, false).await? {
            Reply::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete(&self, key: &[u8]) -> Result<(), Error> {
        let op = Op::Delete {
            key: Bytes::copy_from_slice(key),
        };
        self.call_key(key, op, true).await.map(|_| ())
    }

    /// Compare-and-swap: (swapped, value now).
    pub async fn cas(
        &self,
        key: &[u8],
        expect: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(bool, Option<Bytes>), Error> {
        let op = Op::Cas {
            key: Bytes::copy_from_slice(key),
            expect: expect.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
        };
        match self.call_key(key, op, true).await? {
            Reply::Cas { swapped, current } => Ok((swapped, current)),
            other => Err(unexpected(other)),
        }
    }

    /// Adds `by` to the integer `key` holds (absent: 0), atomically:
    /// `Ok(n)`, the value now, or `Err(current)`, unchanged: `Some` if the
    /// sum would overflow, `None` if it is not a decimal `i64`
    /// (`Op::Incr`).
    pub async fn incr(&self, key: &[u8], by: i64) -> Result<Result<i64, Option<Bytes>>, Error> {
        let op = Op::Incr {
            key: Bytes::copy_from_slice(key),
            by,
        };
        match self.call_key(key, op, true).await? {
            Reply::Cas {
                swapped: true,
                current: Some(v),
            } => match crate::kv::redis_integer(&v) {
                Some(n) => Ok(Ok(n)),
                None => Err(unexpected(Reply::Value(Some(v)))),
            },
            Reply::Cas { current, .. } => Ok(Err(current)),
            other => Err(unexpected(other)),
        }
    }

    /// Appends `value` to what `key` holds, atomically: `Some(len)`, its
    /// length now, or `None` if the result would pass the value limit
    /// (`Op::Append`).
    pub async fn append(&self, key: &[u8], value: &[u8]) -> Result<Option<usize>, Error> {
        let op = Op::Append {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        };
        match self.call_key(key, op, true).await? {
            Reply::Cas {
                swapped: true,
                current: Some(len),
            } => match std::str::from_utf8(&len).ok().and_then(|l| l.parse().ok()) {
                Some(len) => Ok(Some(len)),
                None => Err(unexpected(Reply::Value(Some(len)))),
            },
            Reply::Cas { swapped: false, .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Pairs with `start <= key < end` (`end` empty: unbounded) in key
    /// order across every range, at most `limit`; `true` if more were in
    /// range. Each range is read in the client's read mode, one after the
    /// other: the result is ordered, and each range's part is as of its own
    /// read (not one snapshot of the whole keyspace).
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool), Error> {
        self.scan_with(start, end, limit, false).await
    }

    /// [`scan`](Self::scan)'s keys only (`Op::Scan::keys_only`: no value
    /// crosses the wire).
    pub async fn scan_keys(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<(Vec<Bytes>, bool), Error> {
        let (pairs, more) = self.scan_with(start, end, limit, true).await?;
        Ok((pairs.into_iter().map(|(k, _)| k).collect(), more))
    }

    async fn scan_with(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        keys_only: bool,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool), Error> {
        let mut out: Vec<(Bytes, Bytes)> = Vec::new();
        let mut at = Bytes::copy_from_slice(start);
        let end = Bytes::copy_from_slice(end);
        loop {
            let left = limit.saturating_sub(out.len() as u32);
            let op = Op::Scan {
                start: at.clone(),
                end: end.clone(),
                // With nothing left to take, one pair says whether more
                // keys are in range.
                limit: left.max(1),
                mode: self.inner.cfg.read_mode,
                keys_only,
            };
            let (pairs, more, range_end) = match self.call_key(&at, op, false).await? {
                Reply::Scan {
                    pairs,
                    more,
                    range_end,
                } => (pairs, more, range_end),
                other => return Err(unexpected(other)),
            };
            if left == 0 && (more || !pairs.is_empty()) {
                return Ok((out, true));
            }
            if left > 0 {
                out.extend(pairs.into_iter().map(|kv| (kv.key, kv.value)));
            }
            let done = range_end.is_empty() || (!end.is_empty() && range_end >= end);
            if more || done {
                return Ok((out, more));
            }
            if range_end <= at {
                return Err(Error::Server(ClientError::Failed {
                    reason: format!(
                        "a range ending at {} answered a scan from {}",
                        show_key(&range_end),
                        show_key(&at)
                    ),
                }));
            }
            at = range_end;
        }
    }

    /// Status of every group, as each node's shards report them.
    pub async fn status(&self) -> Vec<(u64, Result<Vec<GroupStatus>, String>)> {
        let mut out = Vec::new();
        for (n, _) in self.nodes() {
            let mut all = Vec::new();
            let mut err = None;
            for s in 0..self.inner.shards.get() {
                let req = sessionless(0, Op::Status);
                match self.attempt(n, s, req).await {
                    Some(Ok(Ok(Reply::Status(v)))) => all.extend(v),
                    Some(Ok(Ok(other))) => err = Some(format!("{other:?}")),
                    Some(Ok(Err(e))) => err = Some(e.to_string()),
                    Some(Err(e)) => err = Some(e.0),
                    None => {
                        let ms = self.attempt_timeout_ms();
                        err = Some(format!("no answer within {ms} ms (hung or overloaded)"));
                    }
                }
            }
            out.push((n, err.map_or(Ok(all), Err)));
        }
        out
    }

    /// Sends an admin request for `group` to `node` (not retried).
    pub async fn admin(&self, node: u64, group: u64, op: Op) -> Result<Reply, Error> {
        let shard = shard_of(group, self.inner.shards.get());
        let c = self
            .conn(node, shard)
            .await
            .map_err(|e| Error::Unreachable(e.0))?;
        let req = sessionless(group, op);
        match c.call(req).await {
            Ok(r) => r.map_err(Error::Server),
            Err(e) => Err(Error::Unreachable(e.0)),
        }
    }
}

/// A request outside any session (reads of the map and status, admin).
fn sessionless(group: u64, op: Op) -> Request {
    Request {
        id: 0,
        group,
        client: 0,
        seq: 0,
        ack: 0,
        op,
    }
}

fn unexpected(r: Reply) -> Error {
    Error::Server(ClientError::Failed {
        reason: format!("unexpected reply {r:?}"),
    })
}
