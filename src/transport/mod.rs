//! Per-shard TCP transport: Raft messages to and from the same shard index
//! on every peer node, and the connections of clients.
//!
//! Peer links are one-way: shard `s` of node A sends everything for node B
//! (all groups of the shard) on **one** connection it dials to shard `s` of
//! B, and receives B's messages on the connection B dialed. One writer per
//! socket and one reader per socket means no locking around a socket, and
//! each direction reconnects on its own. The one exception is [`back`]: a
//! node this shard has no link to (not a member of any of its groups any
//! more) is answered on the connection it dialled.
//!
//! Sending: during a turn the shard encodes messages straight into the
//! peer's pending buffer; the link's writer task, which runs when the turn
//! yields, swaps it out and writes the whole batch with one `write` (double
//! buffering: both buffers are reused, nothing is allocated per message).
//! A pending buffer past `peer_queue_bytes_max` drops Raft messages (Raft
//! tolerates loss; drops are counted); so does a link that is down.
//!
//! Receiving: see [`reader`]. Anything malformed closes the connection with
//! one log line naming the peer and the reason; nothing else is affected.

mod back;
mod clients;
mod link;
mod socket;

pub(crate) use socket::{set_ack_timeout, set_socket_buffers};
pub mod reader;
pub(crate) mod sync;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

pub use clients::{shard_addr, ClientConnId, ClientService, ClientStats, UNATTRIBUTED_ID};
pub use reader::FrameReader;
use sync::WaitList;

use crate::identity::{IdentityError, PeerBook, PEER_BOOK_ENTRIES_MAX};
use crate::raft::{Message, NodeId};
use crate::wire::hello::{encode_reply, Hello, HelloError, KIND_HELLO};
use crate::wire::message::MessageError;
use crate::wire::FrameError;

/// Bounds and timings of a shard's transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Bytes of Raft messages queued for one peer beyond which further
    /// messages are dropped (and counted) until the queue drains.
    pub peer_queue_bytes_max: usize,
    /// Bytes of responses queued for one client beyond which the node stops
    /// reading that client's requests until they drain (never dropped).
    pub client_queue_bytes_max: usize,
    /// Size of a connection's receive buffer (how much one read can take).
    pub recv_buffer_bytes: usize,
    /// Largest frame payload accepted; a larger one closes the connection.
    pub frame_bytes_max: usize,
    /// Requests of one client connection taken in and not yet answered
    /// (its pipelining depth); beyond it the connection is not read.
    pub client_inflight_max: usize,
    /// SO_SNDBUF / SO_RCVBUF of peer sockets (0: the kernel's autotuning).
    /// Larger buffers move more per wakeup on a busy host.
    pub socket_buffer_bytes: usize,
    /// Received messages waiting for the shard beyond which connections
    /// stop being read (TCP pushes back on the senders).
    pub inbox_msgs_max: usize,
    /// First delay before redialing a peer; doubled per failure.
    pub reconnect_backoff_ms_min: u64,
    /// Cap of the redial delay (each delay is jittered over its upper half).
    pub reconnect_backoff_ms_max: u64,
    pub connect_timeout_ms: u64,
    /// A peer connection whose sent data stays unacknowledged this long is
    /// aborted by the kernel (`TCP_USER_TIMEOUT`, RFC 5482) and the link
    /// redials (0: the kernel's default, about 15 minutes of retries).
    /// Without it a connection cut by a partition stays open through
    /// TCP's retransmission backoff, which grows towards 2 minutes between
    /// tries, so the link could stay silent for that long after the
    /// network healed (seen on separate hosts: a 3 s cut left links dead
    /// for the next cut's whole duration). Well above a round trip, well
    /// below an outage worth waiting out.
    pub peer_ack_timeout_ms: u64,
    /// Time a new connection has to complete its handshake.
    pub handshake_timeout_ms: u64,
    /// Client connections this shard keeps open (the node's
    /// `client-conns-max` divided over its shards). One more is answered
    /// with a refusal that names the setting, then closed: client load
    /// must never take the descriptors the WAL and snapshots need.
    pub client_conns_max: usize,
    /// A client connection with no request in flight and nothing received
    /// for this long is closed (0: never).
    pub client_idle_timeout_ms: u64,
    /// A link that wrote nothing for this long sends a ping frame
    /// ([`crate::wire::KIND_PING`]): idle groups send nothing (they
    /// quiesce), and the peer must still tell idle from gone.
    pub peer_ping_ms: u64,
    /// A peer heard from before (any frame, pings included) and silent for
    /// this long is reported unreachable once ([`Transport::take_unreachable`]),
    /// until heard again: quiesced followers of a leader on a hung or
    /// cut-off node wake and elect another. A killed node is noticed at
    /// once (its connections close). At least twice `peer_ping_ms`.
    pub peer_silence_ms: u64,
}

/// Capacity, in bytes, that a connection's write buffer keeps once written
/// ([`crate::buffers::shrink_after_burst`]): a burst's larger buffer (a
/// cluster start's elections, a slow peer) is given back when writes are
/// small again.
pub const WRITE_BUFFER_RETAINED_BYTES: usize = 64 << 10;

/// Connections over `client_conns_max` being refused at once; beyond it
/// the shard stops accepting until one is done (the kernel's backlog holds
/// the rest), so a flood cannot take descriptors through refusals either.
pub const CLIENT_REFUSALS_INFLIGHT_MAX: usize = 16;

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            peer_queue_bytes_max: 16 << 20,
            client_queue_bytes_max: 4 << 20,
            recv_buffer_bytes: 256 << 10,
            frame_bytes_max: crate::wire::FRAME_BYTES_MAX_DEFAULT,
            client_inflight_max: 4096,
            inbox_msgs_max: 65_536,
            socket_buffer_bytes: 4 << 20,
            reconnect_backoff_ms_min: 20,
            reconnect_backoff_ms_max: 2_000,
            connect_timeout_ms: 1_000,
            peer_ack_timeout_ms: 2_000,
            handshake_timeout_ms: 2_000,
            client_conns_max: 1024,
            client_idle_timeout_ms: 600_000,
            peer_ping_ms: 250,
            peer_silence_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportConfigError {
    #[error("{name} = {value} is out of range: {why}")]
    Range {
        name: &'static str,
        value: u64,
        why: &'static str,
    },
}

impl TransportConfig {
    pub fn validate(&self) -> Result<(), TransportConfigError> {
        let check = |name, value: u64, ok: bool, why| {
            if ok {
                Ok(())
            } else {
                Err(TransportConfigError::Range { name, value, why })
            }
        };
        let r = self.recv_buffer_bytes as u64;
        check(
            "recv_buffer_bytes",
            r,
            (4096..=1 << 30).contains(&r) && r.is_multiple_of(16),
            "must be a multiple of 16 in [4 KiB, 1 GiB]",
        )?;
        let f = self.frame_bytes_max as u64;
        check(
            "frame_bytes_max",
            f,
            (4096..=u32::MAX as u64).contains(&f),
            "must be in [4 KiB, 4 GiB)",
        )?;
        let p = self.peer_queue_bytes_max as u64;
        check(
            "peer_queue_bytes_max",
            p,
            p >= 64 << 10,
            "must be at least 64 KiB",
        )?;
        let c = self.client_queue_bytes_max as u64;
        check(
            "client_queue_bytes_max",
            c,
            c >= 64 << 10,
            "must be at least 64 KiB",
        )?;
        let d = self.client_inflight_max as u64;
        check("client_inflight_max", d, d >= 1, "must be at least 1")?;
        let i = self.inbox_msgs_max as u64;
        check("inbox_msgs_max", i, i >= 16, "must be at least 16")?;
        let (lo, hi) = (self.reconnect_backoff_ms_min, self.reconnect_backoff_ms_max);
        check(
            "reconnect_backoff_ms_min",
            lo,
            lo >= 1 && lo <= hi,
            "must be at least 1 and at most reconnect_backoff_ms_max",
        )?;
        check(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            self.connect_timeout_ms >= 1,
            "must be at least 1",
        )?;
        let a = self.peer_ack_timeout_ms;
        check(
            "peer_ack_timeout_ms",
            a,
            a == 0 || (100..=u32::MAX as u64).contains(&a),
            "must be 0 (the kernel's default) or 100 ms to 2^32 - 1 ms",
        )?;
        check(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            self.handshake_timeout_ms >= 1,
            "must be at least 1",
        )?;
        check(
            "peer_ping_ms",
            self.peer_ping_ms,
            self.peer_ping_ms >= 1,
            "must be at least 1",
        )?;
        check(
            "peer_silence_ms",
            self.peer_silence_ms,
            self.peer_silence_ms >= 2 * self.peer_ping_ms,
            "must be at least twice peer_ping_ms",
        )?;
        let m = self.client_conns_max as u64;
        check("client_conns_max", m, m >= 1, "must be at least 1")
    }
}

/// What an accept loop does after `accept` failed: out of descriptors
/// (`EMFILE`, `ENFILE`) it backs off, doubling from 10 ms to 1 s, and says
/// so once per episode; other errors wait 10 ms. `backoff_ms` is the
/// loop's state (0 after a success).
pub(crate) async fn accept_failed(
    what: &str,
    shard: u32,
    err: &glommio::GlommioError<()>,
    backoff_ms: &mut u64,
) {
    let raw = match err {
        glommio::GlommioError::IoError(e) => e.raw_os_error(),
        _ => None,
    };
    if matches!(raw, Some(libc::EMFILE) | Some(libc::ENFILE)) {
        if *backoff_ms == 0 {
            tracing::warn!(
                shard,
                "accepting {what}: {err}: out of file descriptors; backing off (lower client-conns-max, or raise the process's limit)"
            );
            *backoff_ms = 10;
        } else {
            *backoff_ms = (*backoff_ms * 2).min(1_000);
        }
        glommio::timer::sleep(Duration::from_millis(*backoff_ms)).await;
    } else {
        tracing::warn!(shard, "accepting {what}: {err}");
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

impl RecvError {
    /// A handshake refused for who the peer is (another cluster, protocol
    /// version or store incarnation), as opposed to a connection failure.
    /// What the peer is told: the handshake error itself, without the
    /// "handshake:" this node's own log line adds.
    fn reason(&self) -> String {
        match self {
            RecvError::Hello(e) => e.to_string(),
            RecvError::Identity(e) => e.to_string(),
            e => e.to_string(),
        }
    }

    fn is_refusal(&self) -> bool {
        matches!(
            self,
            RecvError::Hello(_)
                | RecvError::Identity(_)
                | RecvError::Frame(FrameError::Version { .. })
        )
    }
}

/// Why a connection was closed (each is logged once, with the peer).
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error("i/o: {0}")]
    Io(std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("bad message: {0}")]
    Message(#[from] MessageError),
    #[error("handshake: {0}")]
    Hello(#[from] HelloError),
    #[error("handshake: {0}")]
    Identity(#[from] IdentityError),
    #[error("connection ended inside a frame ({bytes} bytes of it received)")]
    Truncated { bytes: usize },
    #[error("unexpected frame kind {kind} {when}")]
    Unexpected { kind: u8, when: &'static str },
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
}

/// Counters of one shard's transport (monotonic).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransportStats {
    pub msgs_queued: u64,
    /// Heartbeats and answers sent in coalesced frames
    /// (`wire::KIND_HEARTBEATS`), and those frames.
    pub heartbeats_coalesced: u64,
    pub heartbeat_frames: u64,
    /// Raft messages dropped: link down or queue over its bound.
    pub msgs_dropped: u64,
    /// Raft messages for a node this shard has no address for.
    pub msgs_unroutable: u64,
    pub bytes_written: u64,
    /// Write calls (each carries every message queued since the last).
    pub writes: u64,
    pub msgs_received: u64,
    pub connects: u64,
    pub disconnects: u64,
    /// Inbound connections closed for malformed input.
    pub conns_rejected: u64,
    /// Handshakes refused (either end).
    pub handshakes_refused: u64,
    /// Pings sent on idle links (`peer_ping_ms`).
    pub pings_sent: u64,
    /// Peers reported unreachable for their silence (`peer_silence_ms`).
    pub peers_silent: u64,
}

#[derive(Default)]
struct Counters {
    s: Cell<TransportStats>,
}

impl Counters {
    fn bump(&self, f: impl FnOnce(&mut TransportStats)) {
        let mut s = self.s.get();
        f(&mut s);
        self.s.set(s);
    }
}

/// State shared by the shard, the link writers and the connection readers
/// (all on the shard's executor).
struct Shared {
    me: Hello,
    cfg: TransportConfig,
    /// The incarnation of every peer met: a peer whose store changed is
    /// refused (see `crate::identity`).
    book: PeerBook,
    stats: Counters,
    inbox: RefCell<Vec<(u64, NodeId, Message)>>,
    /// The shard waits here for messages.
    inbox_ready: WaitList,
    /// Readers wait here while the inbox is full.
    inbox_space: WaitList,
    /// Peers whose link failed, or silent for `peer_silence_ms`, since
    /// the shard last looked.
    unreachable: RefCell<Vec<NodeId>>,
    /// Peers reachable again (a link up, or heard after a reported
    /// silence) since the shard last looked.
    reachable: RefCell<Vec<NodeId>>,
    /// When each peer was last heard from (any frame), and whether its
    /// silence was reported since (`watch_peers`).
    heard: RefCell<Vec<(NodeId, std::time::Instant, bool)>>,
    /// Fault injection: traffic to and from these peers is dropped.
    blocked: RefCell<Vec<NodeId>>,
    /// Inbound connections' way back, for nodes without a link (`back`).
    back: back::BackChannels,
    /// The client address each peer gave in its handshake (`Hello`):
    /// clients learn the nodes from any node's cluster map. At most one
    /// per node of the peer book (`PEER_BOOK_ENTRIES_MAX`).
    client_addrs: RefCell<std::collections::BTreeMap<NodeId, SocketAddr>>,
    /// Inbound peer handshakes completed, per node: a link waiting out its
    /// redial backoff to that node dials at once (the node is evidently
    /// up: a restarted node's groups hear from their leaders without
    /// waiting for the backoff to run out).
    accepted: RefCell<Vec<(NodeId, u64)>>,
    accepted_wake: WaitList,
    closing: Cell<bool>,
    /// Handshake refusals already logged at warn level, by (caller's IP,
    /// reason): a peer of another version, cluster or store incarnation
    /// redials with backoff, and one line says it. At most [`REFUSALS_LOGGED_MAX`] kept.
    refusals_logged: RefCell<std::collections::BTreeSet<(std::net::IpAddr, String)>>,
}

/// Distinct handshake refusals a shard remembers having logged; past it,
/// new ones are logged at debug level only.
const REFUSALS_LOGGED_MAX: usize = 1024;

impl Shared {
    /// Inbound handshakes completed from `node` so far.
    fn accepted_from(&self, node: NodeId) -> u64 {
        let a = self.accepted.borrow();
        a.iter().find(|(n, _)| *n == node).map_or(0, |e| e.1)
    }

    /// An inbound handshake from `node` completed.
    fn note_accepted(&self, node: NodeId) {
        let mut a = self.accepted.borrow_mut();
        match a.iter_mut().find(|(n, _)| *n == node) {
            Some(e) => e.1 += 1,
            None => a.push((node, 1)),
        }
        self.accepted_wake.wake_all();
    }

    /// Peer `node` was heard from (a frame of any kind arrived).
    fn note_heard(&self, node: NodeId) {
        let now = std::time::Instant::now();
        let mut h = self.heard.borrow_mut();
        match h.iter_mut().find(|(n, _, _)| *n == node) {
            Some(e) => {
                if e.2 {
                    tracing::info!(
                        shard = self.me.shard,
                        peer = node,
                        "heard from the peer again"
                    );
                    self.reachable.borrow_mut().push(node);
                    self.inbox_ready.wake_all();
                }
                *e = (node, now, false);
            }
            None => h.push((node, now, false)),
        }
    }
}

/// Moves the node ids in `from` to `out`, sorted, each once.
fn drain_sorted(from: &RefCell<Vec<NodeId>>, out: &mut Vec<NodeId>) {
    out.append(&mut from.borrow_mut());
    out.sort_unstable();
    out.dedup();
}

/// Links by peer id: a handful of peers, so a vector beats hashing on the
/// per-message lookup.
#[derive(Default)]
struct PeerMap(Vec<(NodeId, Rc<link::Link>)>);

impl PeerMap {
    fn get(&self, id: &NodeId) -> Option<&Rc<link::Link>> {
        self.0.iter().find(|(n, _)| n == id).map(|(_, l)| l)
    }
    fn insert(&mut self, id: NodeId, l: Rc<link::Link>) -> Option<Rc<link::Link>> {
        let old = self.remove(&id);
        self.0.push((id, l));
        old
    }
    fn remove(&mut self, id: &NodeId) -> Option<Rc<link::Link>> {
        let i = self.0.iter().position(|(n, _)| n == id)?;
        Some(self.0.swap_remove(i).1)
    }
    fn values(&self) -> impl Iterator<Item = &Rc<link::Link>> {
        self.0.iter().map(|(_, l)| l)
    }
}

/// One shard's transport to the same shard index of its peers.
pub struct Transport {
    shared: Rc<Shared>,
    links: RefCell<PeerMap>,
}

impl Transport {
    /// A transport for the shard `me` describes (cluster, node, shard,
    /// shards); must be created on the shard's executor. Call
    /// [`add_peer`](Self::add_peer) for each peer and
    /// [`serve`](Self::serve) with the shard's peer listener.
    ///
    /// Peers' incarnations are kept in memory only; a node uses
    /// [`with_peer_book`](Self::with_peer_book).
    pub fn new(me: Hello, cfg: TransportConfig) -> Rc<Transport> {
        Self::with_peer_book(me, cfg, PeerBook::in_memory(PEER_BOOK_ENTRIES_MAX))
    }

    /// [`new`](Self::new) with the shard's durable peer book.
    pub fn with_peer_book(me: Hello, cfg: TransportConfig, book: PeerBook) -> Rc<Transport> {
        debug_assert!(cfg.validate().is_ok());
        debug_assert!(me.incarnation != 0, "a peer always has a store incarnation");
        Rc::new(Transport {
            shared: Rc::new(Shared {
                me,
                cfg,
                book,
                stats: Counters::default(),
                inbox: RefCell::new(Vec::new()),
                inbox_ready: WaitList::default(),
                inbox_space: WaitList::default(),
                unreachable: RefCell::new(Vec::new()),
                reachable: RefCell::new(Vec::new()),
                heard: RefCell::new(Vec::new()),
                blocked: RefCell::new(Vec::new()),
                back: back::BackChannels::default(),
                client_addrs: RefCell::new(std::collections::BTreeMap::new()),
                accepted: RefCell::new(Vec::new()),
                accepted_wake: WaitList::default(),
                closing: Cell::new(false),
                refusals_logged: RefCell::default(),
            }),
            links: RefCell::new(PeerMap::default()),
        })
    }

    /// Starts sending to `node` at `addr` (the address of this shard's index
    /// on that node): a writer task dials it and keeps redialing.
    pub fn add_peer(&self, node: NodeId, addr: SocketAddr) {
        let l = link::Link::start(node, addr, self.shared.clone());
        if let Some(old) = self.links.borrow_mut().insert(node, l) {
            old.close();
        }
    }

    /// Whether `node` has a link.
    pub fn knows(&self, node: NodeId) -> bool {
        self.links.borrow().get(&node).is_some()
    }

    /// How many nodes this transport has a link to.
    pub fn peer_count(&self) -> usize {
        self.links.borrow().0.len()
    }

    /// The nodes this transport has a link to, in id order.
    pub fn peer_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.links.borrow().0.iter().map(|(id, _)| *id).collect();
        v.sort_unstable();
        v
    }

    /// Stops sending to `node`.
    pub fn remove_peer(&self, node: NodeId) {
        if let Some(old) = self.links.borrow_mut().remove(&node) {
            old.close();
        }
        self.shared.client_addrs.borrow_mut().remove(&node);
    }

    /// Queues `m` (of `group`) for `node`, where its addressee `m.to`
    /// lives. `false` if it was dropped: the link is down, its queue is
    /// over `peer_queue_bytes_max`, or the node is unknown. The batch is
    /// written when the shard's turn yields. A node without a link that is
    /// connected here (a node no group of this shard has as a member any
    /// more) gets it on that connection (`back`).
    pub fn send(&self, node: NodeId, group: u64, m: &Message) -> bool {
        if self.shared.blocked.borrow().contains(&node) {
            self.shared.stats.bump(|s| s.msgs_dropped += 1);
            return false;
        }
        let links = self.links.borrow();
        match links.get(&node) {
            Some(l) => l.queue(group, m),
            None => match self.shared.back.get(node) {
                Some(c) => c.queue(&self.shared, group, m),
                None => {
                    self.shared.stats.bump(|s| s.msgs_unroutable += 1);
                    false
                }
            },
        }
    }

    /// Bytes queued for `node` and not yet handed to the socket (0 for a
    /// node that is not a peer): a sender's flow-control signal.
    pub fn queued_bytes(&self, node: NodeId) -> usize {
        self.links
            .borrow()
            .get(&node)
            .map_or(0, |l| l.queued_bytes())
    }

    /// Waits until fewer than `bytes` are queued for `node` (returns at once
    /// for a node that is not a peer).
    pub async fn wait_queued_below(&self, node: NodeId, bytes: usize) {
        let l = self.links.borrow().get(&node).cloned();
        if let Some(l) = l {
            l.wait_queued_below(bytes).await
        }
    }

    /// Whether the link to `node` is up (connected and handshaken).
    pub fn is_up(&self, node: NodeId) -> bool {
        self.links.borrow().get(&node).is_some_and(|l| l.is_up())
    }

    /// Waits until the link to `node` is up (returns at once for a node
    /// that is not a peer, or once the transport closes).
    pub async fn wait_up(&self, node: NodeId) {
        let l = self.links.borrow().get(&node).cloned();
        if let Some(l) = l {
            l.wait_up().await
        }
    }

    /// Fault injection: drops every message to and from `peers` from now
    /// on (an empty list heals). Counted as dropped.
    pub fn set_blocked(&self, peers: Vec<NodeId>) {
        *self.shared.blocked.borrow_mut() = peers;
    }

    /// Moves the messages received since the last call into `out`:
    /// (group, node it came from, message). Messages name replicas; the
    /// node is the connection's, checked at its handshake.
    pub fn drain_inbox(&self, out: &mut Vec<(u64, NodeId, Message)>) {
        if sync::drain_into(&self.shared.inbox, out) {
            self.shared.inbox_space.wake_all();
        }
    }

    /// Waits until a message is in the inbox.
    pub async fn inbox_ready(&self) {
        let shared = &self.shared;
        shared
            .inbox_ready
            .wait_until(|| !shared.inbox.borrow().is_empty() || shared.closing.get())
            .await
    }

    /// Waits until a peer is to be reported unreachable or reachable again
    /// ([`Transport::take_unreachable`], [`Transport::take_reachable`]),
    /// which a caller then takes (else this resolves at once for ever):
    /// the shard loop is woken for those at once, not at its next tick
    /// (an idle shard's ticker sleeps, `shard::TICKER_SLEEP_MS_MAX`).
    pub async fn peer_reports_ready(&self) {
        let shared = &self.shared;
        shared
            .inbox_ready
            .wait_until(|| {
                !shared.unreachable.borrow().is_empty()
                    || !shared.reachable.borrow().is_empty()
                    || shared.closing.get()
            })
            .await
    }

    /// Peers whose link failed (or could not be made) since the last call:
    /// the shard tells its groups so leaders probe those followers afresh.
    pub fn take_unreachable(&self, out: &mut Vec<NodeId>) {
        drain_sorted(&self.shared.unreachable, out);
    }

    /// Peers reachable again since the last call (a link came up, or a
    /// peer reported silent was heard): the shard wakes leaders that left
    /// them behind (`RawNode::report_reachable`).
    pub fn take_reachable(&self, out: &mut Vec<NodeId>) {
        drain_sorted(&self.shared.reachable, out);
    }

    /// Saves peer incarnations admitted while the disk was full
    /// (`PeerBook::save_unsaved`); a failure other than a full disk is
    /// logged (the book in memory stays authoritative until the next try).
    pub async fn save_peer_book(&self) {
        if let Err(e) = self.shared.book.save_unsaved().await {
            tracing::warn!(shard = self.shared.me.shard, "saving the peer book: {e}");
        }
    }

    pub fn stats(&self) -> TransportStats {
        self.shared.stats.s.get()
    }

    /// The client addresses peers gave in their handshakes, by node.
    pub fn peer_client_addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        let m = self.shared.client_addrs.borrow();
        m.iter().map(|(&n, &a)| (n, a)).collect()
    }

    /// This shard's identity.
    pub fn me(&self) -> Hello {
        self.shared.me
    }

    /// Accepts peer connections on `listener` until [`close`](Self::close).
    pub async fn serve(self: Rc<Self>, listener: TcpListener) {
        glommio::spawn_local(self.clone().watch_peers()).detach();
        let shared = self.shared.clone();
        let mut backoff_ms = 0;
        while !shared.closing.get() {
            match listener.accept().await {
                Ok(stream) => {
                    backoff_ms = 0;
                    glommio::spawn_local(serve_peer_conn(stream, shared.clone())).detach();
                }
                Err(e) => {
                    accept_failed("a peer connection", shared.me.shard, &e, &mut backoff_ms).await
                }
            }
        }
    }

    /// Every `peer_ping_ms` until closed: pings on links that wrote
    /// nothing since the last round, and reports peers silent for
    /// `peer_silence_ms` (once, until heard again). One timer per shard,
    /// whatever the number of peers and groups.
    async fn watch_peers(self: Rc<Self>) {
        let shared = &self.shared;
        let every = Duration::from_millis(shared.cfg.peer_ping_ms);
        let silence = Duration::from_millis(shared.cfg.peer_silence_ms);
        while !shared.closing.get() {
            glommio::timer::sleep(every).await;
            for l in self.links.borrow().values() {
                l.ping_if_idle();
            }
            let now = std::time::Instant::now();
            let mut reported = false;
            for (node, last, told) in shared.heard.borrow_mut().iter_mut() {
                if !*told && now.duration_since(*last) >= silence {
                    *told = true;
                    reported = true;
                    tracing::warn!(
                        shard = shared.me.shard,
                        peer = *node,
                        ms = now.duration_since(*last).as_millis() as u64,
                        "nothing heard from the peer: reporting it unreachable"
                    );
                    shared.stats.bump(|s| s.peers_silent += 1);
                    shared.unreachable.borrow_mut().push(*node);
                }
            }
            if reported {
                shared.inbox_ready.wake_all();
            }
        }
    }

    /// Stops every link and wakes whoever waits on the inbox.
    pub fn close(&self) {
        self.shared.closing.set(true);
        for l in self.links.borrow().values() {
            l.close();
        }
        self.shared.inbox_ready.wake_all();
        self.shared.inbox_space.wake_all();
    }
}

/// Reads and answers the handshake of an inbound connection. The hello if
/// accepted; a refusal is answered, logged and counted. With a peer book
/// (the peer port), the caller's incarnation must be the one the book
/// knows (or is recorded, if new), and the caller must know this node by
/// its own.
async fn accept_hello(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    me: &Hello,
    timeout_ms: u64,
    peer: SocketAddr,
    book: Option<&PeerBook>,
) -> Result<Hello, RecvError> {
    let limit = Duration::from_millis(timeout_ms);
    let first = glommio::timer::timeout(limit, async { Ok(reader.next(stream).await) })
        .await
        .map_err(|_| RecvError::HandshakeTimeout(limit))?;
    let first = match first {
        // A caller of another version is told so, in this node's version
        // (which the caller in turn refuses: both ends see the mismatch).
        Err(RecvError::Frame(e @ FrameError::Version { .. })) => {
            let mut out = Vec::with_capacity(128);
            encode_reply(&mut out, me, Err(&e.to_string()));
            let _ = stream.write_all(&out).await;
            return Err(RecvError::Frame(e));
        }
        other => other?,
    };
    let hello = match first {
        Some((KIND_HELLO, p)) => Hello::decode(&p),
        Some((kind, _)) => {
            return Err(RecvError::Unexpected {
                kind,
                when: "before the handshake",
            })
        }
        None => return Err(RecvError::Truncated { bytes: 0 }),
    };
    let outcome: Result<Hello, RecvError> = match hello.and_then(|h| h.check(me).map(|()| h)) {
        Ok(h) => match book {
            Some(book) if h.node != 0 => admit_caller(book, me, &h).await.map(|()| h),
            _ => Ok(h),
        },
        Err(e) => Err(e.into()),
    };
    let mut out = Vec::with_capacity(128);
    match &outcome {
        Ok(_) => encode_reply(&mut out, me, Ok(())),
        Err(e) => encode_reply(&mut out, me, Err(&e.reason())),
    }
    // Best effort for a refusal: the caller may already be gone.
    let written = stream.write_all(&out).await;
    let hello = outcome?;
    written.map_err(RecvError::Io)?;
    tracing::debug!(%peer, node = hello.node, "handshake accepted");
    Ok(hello)
}

/// The identity checks of a peer's handshake: the caller must know this
/// node by its own incarnation (else this node's data was lost), and the
/// caller's incarnation must be the one the book knows (else the caller's
/// was). The refusal is logged by the caller, once per reason.
async fn admit_caller(book: &PeerBook, me: &Hello, h: &Hello) -> Result<(), RecvError> {
    if h.expected != 0 && h.expected != me.incarnation {
        return Err(RecvError::Identity(IdentityError::StaleSelf {
            caller: h.node,
            me: me.node,
            known: h.expected,
            mine: me.incarnation,
        }));
    }
    Ok(book.admit(h.node, h.incarnation).await?)
}

/// An inbound peer connection: handshake, then Raft messages into the inbox
/// until the peer closes it or sends something malformed.
async fn serve_peer_conn(mut stream: TcpStream, shared: Rc<Shared>) {
    let peer = match stream.peer_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let _ = stream.set_nodelay(true);
    set_socket_buffers(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        shared.cfg.socket_buffer_bytes,
    );
    let mut reader = FrameReader::new(shared.cfg.recv_buffer_bytes, shared.cfg.frame_bytes_max);
    let result = async {
        let hello = accept_hello(
            &mut stream,
            &mut reader,
            &shared.me,
            shared.cfg.handshake_timeout_ms,
            peer,
            Some(&shared.book),
        )
        .await
        .inspect_err(|e| {
            if e.is_refusal() {
                shared.stats.bump(|s| s.handshakes_refused += 1);
            }
        })?;
        if hello.node == 0 {
            return Err(RecvError::Unexpected {
                kind: KIND_HELLO,
                when: "from a client on the peer port",
            });
        }
        let node = hello.node;
        shared.note_accepted(node);
        match hello.client_addr {
            Some(a) => shared.client_addrs.borrow_mut().insert(node, a),
            None => shared.client_addrs.borrow_mut().remove(&node),
        };
        // Messages back to `node` if it has no link from here (`back`).
        let (mut rd, wr) = futures_lite::io::split(stream);
        let back = shared.back.open(node);
        let writer = {
            let (back, shared) = (back.clone(), shared.clone());
            glommio::spawn_local(async move { back.write(wr, &shared).await })
        };
        let r = back::deliver(&mut reader, &mut rd, node, &shared).await;
        shared.back.end(node, &back);
        drop(writer);
        r.map(|()| node)
    }
    .await;
    match result {
        Ok(node) => {
            tracing::info!(%peer, node, shard = shared.me.shard, "peer closed its connection")
        }
        Err(e) => {
            shared.stats.bump(|s| s.conns_rejected += 1);
            // A refused peer redials with backoff: one line says why.
            let first = !e.is_refusal() || {
                let mut seen = shared.refusals_logged.borrow_mut();
                seen.len() < REFUSALS_LOGGED_MAX && seen.insert((peer.ip(), e.to_string()))
            };
            if first {
                tracing::warn!(%peer, shard = shared.me.shard, "closing peer connection: {e}");
            } else {
                tracing::debug!(%peer, shard = shared.me.shard, "closing peer connection: {e}");
            }
        }
    }
}
