//! Client connections of a shard: requests in, responses out, pipelined.
//!
//! Each connection has a reader task (handshake, then requests into the
//! shard's client inbox) and a writer task (responses, batched like peer
//! messages: everything answered during a turn goes out in one write).
//! Responses are never dropped: when a client does not read its responses
//! and they pile up past `client_queue_bytes_max`, the node stops reading
//! that client's requests until they drain. A response for a connection
//! that is gone is counted (`responses_orphaned`), not silently lost.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::sync::WaitList;
use super::{
    accept_failed, accept_hello, FrameReader, RecvError, TransportConfig,
    CLIENT_REFUSALS_INFLIGHT_MAX,
};
use crate::wire::client::{
    decode_request, encode_response, ClientError, Request, Response, KIND_REQUEST,
};
use crate::wire::hello::Hello;

/// Names a client connection of a shard (unique for the shard's lifetime).
pub type ClientConnId = u64;

/// Counters of a shard's client service (monotonic).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    pub conns_accepted: u64,
    pub conns_closed: u64,
    pub requests: u64,
    /// Requests whose frame was sound but whose content failed validation
    /// (answered with `BadRequest`, connection kept).
    pub bad_requests: u64,
    /// Connections closed for lost framing or a failed handshake.
    pub conns_rejected: u64,
    pub responses: u64,
    /// Responses for a connection that had closed.
    pub responses_orphaned: u64,
    /// Connections refused because `client_conns_max` were open.
    pub conns_refused_full: u64,
    /// Connections closed after `client_idle_timeout_ms` without traffic.
    pub conns_closed_idle: u64,
}

/// Request id of the answer to a request whose id could not be read.
pub const UNATTRIBUTED_ID: u64 = u64::MAX;

struct Conn {
    /// The socket, for the idle sweep's `shutdown` (open while the
    /// connection is in `Shared::conns`).
    fd: std::os::fd::RawFd,
    /// Idle sweeps in a row that found it idle (reset by any request or
    /// response: no clock is read on the hot path).
    idle_sweeps: Cell<u32>,
    pending: RefCell<Vec<u8>>,
    /// Bytes the writer is writing (taken from `pending`).
    writing: Cell<usize>,
    /// Requests taken in and not answered yet.
    inflight: Cell<usize>,
    closed: Cell<bool>,
    /// The writer waits here for responses.
    ready: WaitList,
    /// The reader waits here for the responses to drain.
    space: WaitList,
}

struct Shared {
    me: Hello,
    cfg: TransportConfig,
    conns: RefCell<HashMap<ClientConnId, Rc<Conn>>>,
    inbox: RefCell<Vec<(ClientConnId, Request)>>,
    inbox_ready: WaitList,
    inbox_space: WaitList,
    next_conn: Cell<ClientConnId>,
    closing: Cell<bool>,
    stats: Cell<ClientStats>,
    /// Accepted sockets being served (handshake included): at most
    /// `client_conns_max`.
    open: Cell<usize>,
    /// Sockets being refused: at most [`CLIENT_REFUSALS_INFLIGHT_MAX`].
    refusing: Cell<usize>,
    /// The accept loop waits here while refusals are at their bound.
    refusal_done: WaitList,
}

impl Shared {
    fn bump(&self, f: impl FnOnce(&mut ClientStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}

/// The client side of one shard.
pub struct ClientService {
    shared: Rc<Shared>,
}

impl ClientService {
    /// `me.node` answers handshakes; clients must name `me.cluster` and
    /// `me.shard`.
    pub fn new(me: Hello, cfg: TransportConfig) -> Rc<ClientService> {
        Rc::new(ClientService {
            shared: Rc::new(Shared {
                me,
                cfg,
                conns: RefCell::new(HashMap::new()),
                inbox: RefCell::new(Vec::new()),
                inbox_ready: WaitList::default(),
                inbox_space: WaitList::default(),
                next_conn: Cell::new(1),
                closing: Cell::new(false),
                stats: Cell::new(ClientStats::default()),
                open: Cell::new(0),
                refusing: Cell::new(0),
                refusal_done: WaitList::default(),
            }),
        })
    }

    /// Accepts clients on `listener` until [`close`](Self::close): at most
    /// `client_conns_max` served at once; the next ones are refused with a
    /// reason (at most [`CLIENT_REFUSALS_INFLIGHT_MAX`] at a time, the
    /// kernel's backlog holding the rest); idle ones are closed after
    /// `client_idle_timeout_ms`.
    pub async fn serve(self: Rc<Self>, listener: TcpListener) {
        let shared = self.shared.clone();
        if shared.cfg.client_idle_timeout_ms > 0 {
            glommio::spawn_local(sweep_idle(shared.clone())).detach();
        }
        let mut backoff_ms = 0;
        while !shared.closing.get() {
            shared
                .refusal_done
                .wait_until(|| {
                    shared.refusing.get() < CLIENT_REFUSALS_INFLIGHT_MAX || shared.closing.get()
                })
                .await;
            match listener.accept().await {
                Ok(stream) => {
                    backoff_ms = 0;
                    if shared.closing.get() {
                        return;
                    }
                    let shared = shared.clone();
                    if shared.open.get() >= shared.cfg.client_conns_max {
                        shared.refusing.set(shared.refusing.get() + 1);
                        shared.bump(|s| s.conns_refused_full += 1);
                        glommio::spawn_local(async move {
                            refuse_full(stream, &shared).await;
                            shared.refusing.set(shared.refusing.get() - 1);
                            shared.refusal_done.wake_all();
                        })
                        .detach();
                    } else {
                        shared.open.set(shared.open.get() + 1);
                        glommio::spawn_local(async move {
                            serve_client(stream, shared.clone()).await;
                            shared.open.set(shared.open.get() - 1);
                        })
                        .detach();
                    }
                }
                Err(e) => {
                    accept_failed("a client", shared.me.shard, &e, &mut backoff_ms).await;
                }
            }
        }
    }

    /// Moves the requests received since the last call into `out`.
    pub fn drain(&self, out: &mut Vec<(ClientConnId, Request)>) {
        if super::sync::drain_into(&self.shared.inbox, out) {
            self.shared.inbox_space.wake_all();
        }
    }

    /// Waits until a request is waiting (or the service closes).
    pub async fn ready(&self) {
        let s = &self.shared;
        s.inbox_ready
            .wait_until(|| !s.inbox.borrow().is_empty() || s.closing.get())
            .await
    }

    /// Queues `r` for connection `conn`; written when the turn yields.
    /// `false` if the connection is gone (counted as orphaned).
    pub fn respond(&self, conn: ClientConnId, r: &Response) -> bool {
        let conns = self.shared.conns.borrow();
        let Some(c) = conns.get(&conn).filter(|c| !c.closed.get()) else {
            self.shared.bump(|s| s.responses_orphaned += 1);
            return false;
        };
        respond_on(c, r);
        c.idle_sweeps.set(0);
        c.inflight.set(c.inflight.get().saturating_sub(1));
        self.shared.bump(|s| s.responses += 1);
        true
    }

    pub fn stats(&self) -> ClientStats {
        self.shared.stats.get()
    }

    /// Open connections.
    pub fn conns(&self) -> usize {
        self.shared.conns.borrow().len()
    }

    /// Stops accepting and reading; pending responses are still written.
    pub fn close(&self) {
        self.shared.closing.set(true);
        self.shared.inbox_ready.wake_all();
        self.shared.inbox_space.wake_all();
        for c in self.shared.conns.borrow().values() {
            c.space.wake_all();
        }
    }
}

impl Conn {
    /// Whether the connection may take another request: responses queued
    /// (and being written) under `client_queue_bytes_max`, requests in
    /// flight under `client_inflight_max`.
    fn has_room(&self, cfg: &TransportConfig) -> bool {
        self.pending.borrow().len() + self.writing.get() < cfg.client_queue_bytes_max
            && self.inflight.get() < cfg.client_inflight_max
    }
}

fn respond_on(c: &Conn, r: &Response) {
    let mut p = c.pending.borrow_mut();
    let was_empty = p.is_empty();
    encode_response(&mut p, r);
    if was_empty {
        c.ready.wake_all();
    }
}

/// Answers a connection over `client_conns_max`: its hello is read (so the
/// refusal is not lost to a reset), the refusal names the setting, and the
/// socket is closed.
async fn refuse_full(mut stream: TcpStream, shared: &Shared) {
    let cfg = &shared.cfg;
    let max = crate::wire::hello::HELLO_FRAME_BYTES_MAX;
    let mut reader = FrameReader::new(max, max);
    let limit = Duration::from_millis(cfg.handshake_timeout_ms);
    let _ = glommio::timer::timeout(limit, async { Ok(reader.next(&mut stream).await) }).await;
    let reason = format!(
        "too many client connections: shard {} of this node keeps at most {} open \
         (client-conns-max, divided over the node's shards); retry later, or raise client-conns-max",
        shared.me.shard, cfg.client_conns_max
    );
    let mut out = Vec::with_capacity(256);
    super::encode_reply(&mut out, &shared.me, Err(&reason));
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}

/// Sweeps per idle timeout: a connection is closed once this many sweeps
/// in a row found it idle, so it lives idle between (n-1)/n and 1 timeout.
const IDLE_SWEEPS: u32 = 4;

/// Closes client connections idle for `client_idle_timeout_ms` (nothing in
/// flight, nothing queued, no request or response), or whose pending write
/// made no progress for as long (a client that stopped reading would hold
/// its slot of `client_conns_max` forever): a `shutdown` of the socket ends
/// its reader and writer as a close by the client would.
async fn sweep_idle(shared: Rc<Shared>) {
    let timeout = Duration::from_millis(shared.cfg.client_idle_timeout_ms);
    let every = (timeout / IDLE_SWEEPS).max(Duration::from_millis(1));
    while !shared.closing.get() {
        glommio::timer::sleep(every).await;
        for c in shared.conns.borrow().values() {
            let quiet = c.inflight.get() == 0
                && c.pending.borrow().is_empty()
                && c.writing.get() == 0
                && !c.closed.get();
            // A write that makes no progress (a client that stopped
            // reading) counts as idle too: completed writes reset the count.
            let stuck = c.writing.get() > 0 && !c.closed.get();
            c.idle_sweeps.set(if quiet || stuck {
                c.idle_sweeps.get() + 1
            } else {
                0
            });
            if c.idle_sweeps.get() >= IDLE_SWEEPS {
                c.closed.set(true);
                shared.bump(|s| s.conns_closed_idle += 1);
                // SAFETY: the socket stays open while `c` is in `conns`.
                unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            }
        }
    }
}

async fn serve_client(mut stream: TcpStream, shared: Rc<Shared>) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let cfg = &shared.cfg;
    let mut reader = FrameReader::new(cfg.recv_buffer_bytes, cfg.frame_bytes_max);
    match accept_hello(
        &mut stream,
        &mut reader,
        &shared.me,
        cfg.handshake_timeout_ms,
        peer,
        None,
    )
    .await
    {
        Ok(h) if h.node == 0 => {}
        Ok(h) => {
            tracing::warn!(%peer, node = h.node, "closing client connection: a peer node dialed the client port");
            shared.bump(|s| s.conns_rejected += 1);
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, shard = shared.me.shard, "closing client connection: {e}");
            shared.bump(|s| s.conns_rejected += 1);
            return;
        }
    }
    let id = shared.next_conn.get();
    shared.next_conn.set(id + 1);
    let conn = Rc::new(Conn {
        fd: std::os::fd::AsRawFd::as_raw_fd(&stream),
        idle_sweeps: Cell::new(0),
        pending: RefCell::new(Vec::new()),
        writing: Cell::new(0),
        inflight: Cell::new(0),
        closed: Cell::new(false),
        ready: WaitList::default(),
        space: WaitList::default(),
    });
    shared.conns.borrow_mut().insert(id, conn.clone());
    shared.bump(|s| s.conns_accepted += 1);
    let (mut rd, wr) = futures_lite::io::split(stream);
    let writer = glommio::spawn_local(write_responses(wr, conn.clone()));
    let result = read_requests(&mut rd, &mut reader, id, &conn, &shared).await;
    match result {
        Ok(()) => tracing::debug!(%peer, "client closed its connection"),
        Err(e) => {
            shared.bump(|s| s.conns_rejected += 1);
            tracing::warn!(%peer, shard = shared.me.shard, "closing client connection: {e}");
        }
    }
    // The writer finishes what is queued, then ends.
    conn.closed.set(true);
    conn.ready.wake_all();
    writer.await;
    shared.conns.borrow_mut().remove(&id);
    shared.bump(|s| s.conns_closed += 1);
}

async fn read_requests(
    rd: &mut ReadHalf<TcpStream>,
    reader: &mut FrameReader,
    id: ClientConnId,
    conn: &Conn,
    shared: &Shared,
) -> Result<(), RecvError> {
    let cfg = &shared.cfg;
    loop {
        // Backpressure: a client that does not read its responses, or a
        // shard that is behind, stops being read.
        conn.space
            .wait_until(|| conn.has_room(cfg) || conn.closed.get() || shared.closing.get())
            .await;
        if conn.closed.get() {
            return Ok(()); // the writer failed, or the idle sweep closed it
        }
        shared
            .inbox_space
            .wait_until(|| shared.inbox.borrow().len() < cfg.inbox_msgs_max || shared.closing.get())
            .await;
        if shared.closing.get() {
            return Ok(());
        }
        let mut got = 0u64;
        // Checked per request: a burst already in the buffer stops too.
        while conn.has_room(cfg) {
            let Some((kind, payload)) = reader.next_buffered()? else {
                break;
            };
            if kind != KIND_REQUEST {
                return Err(RecvError::Unexpected {
                    kind,
                    when: "on a client connection",
                });
            }
            match decode_request(&payload) {
                Ok(r) => {
                    got += 1;
                    conn.inflight.set(conn.inflight.get() + 1);
                    shared.inbox.borrow_mut().push((id, r));
                }
                Err(e) => {
                    // The frame was sound: answer, keep the connection.
                    shared.bump(|s| s.bad_requests += 1);
                    respond_on(
                        conn,
                        &Response {
                            id: UNATTRIBUTED_ID,
                            result: Err(ClientError::BadRequest {
                                reason: e.to_string(),
                            }),
                        },
                    );
                }
            }
        }
        if got > 0 {
            shared.bump(|s| s.requests += got);
            shared.inbox_ready.wake_all();
            // A client that always has bytes ready must not starve the shard.
            futures_lite::future::yield_now().await;
        }
        if !conn.has_room(cfg) {
            continue; // wait for the responses to drain first
        }
        if !reader.fill(rd).await? {
            return Ok(());
        }
        conn.idle_sweeps.set(0);
    }
}

async fn write_responses(mut wr: WriteHalf<TcpStream>, conn: Rc<Conn>) {
    let mut writing = Vec::new();
    loop {
        conn.ready
            .wait_until(|| !conn.pending.borrow().is_empty() || conn.closed.get())
            .await;
        if conn.pending.borrow().is_empty() {
            return; // closed and drained
        }
        std::mem::swap(&mut *conn.pending.borrow_mut(), &mut writing);
        conn.writing.set(writing.len());
        conn.space.wake_all();
        let written = wr.write_all(&writing).await;
        conn.writing.set(0);
        conn.idle_sweeps.set(0);
        if written.is_err() {
            // The reader may wait for room that will never come.
            conn.closed.set(true);
            conn.space.wake_all();
            return;
        }
        conn.space.wake_all();
        writing.clear();
    }
}

pub use crate::route::shard_addr;
