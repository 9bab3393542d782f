//! The outbound link to one peer: a writer task that dials, handshakes,
//! writes batches, and redials with exponential backoff and jitter.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::back::deliver;
use super::sync::WaitList;
use super::{FrameReader, RecvError, Shared};
use crate::buffers::shrink_after_burst;
use crate::raft::{Message, NodeId};
use crate::rng::Rng;
use crate::wire::encode_raft;
use crate::wire::hello::{decode_reply_full, Hello, HelloError, KIND_HELLO_REPLY};

/// Receive buffer for what comes back on a link (rare, small messages;
/// it grows for a larger frame up to `frame_bytes_max`).
const BACK_RECV_BUFFER_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Recv(#[from] RecvError),
    #[error("address answered as node {got}, expected node {want}")]
    WrongNode { got: NodeId, want: NodeId },
}

struct LinkState {
    /// Frames queued since the writer last took them.
    pending: Vec<u8>,
    /// Heartbeats and their answers queued since (`wire::coalesced`), as
    /// their 56-byte records: framed as `KIND_HEARTBEATS` after `pending`
    /// when the writer takes the batch, one frame for every group's.
    beats: Vec<u8>,
    pending_msgs: u64,
    up: bool,
    closed: bool,
    /// The writer wrote since the last ping round (`ping_if_idle`).
    wrote: bool,
    /// The connection's read side ended (the peer closed it, or it
    /// failed): the writer drops it and redials.
    broken: bool,
}

pub(crate) struct Link {
    node: NodeId,
    addr: SocketAddr,
    shared: Rc<Shared>,
    st: RefCell<LinkState>,
    /// The writer waits here for frames.
    ready: WaitList,
    /// Woken when the link comes up.
    up: WaitList,
    /// Woken when the writer takes the pending batch.
    drained: WaitList,
}

impl Link {
    pub(crate) fn start(node: NodeId, addr: SocketAddr, shared: Rc<Shared>) -> Rc<Link> {
        let l = Rc::new(Link {
            node,
            addr,
            shared,
            st: RefCell::new(LinkState {
                pending: Vec::new(),
                beats: Vec::new(),
                pending_msgs: 0,
                up: false,
                closed: false,
                wrote: false,
                broken: false,
            }),
            ready: WaitList::default(),
            up: WaitList::default(),
            drained: WaitList::default(),
        });
        glommio::spawn_local(run(l.clone())).detach();
        l
    }

    /// Encodes `m` into the pending batch (a heartbeat or its answer:
    /// kept for the batch's coalesced frame); `false` if dropped.
    pub(crate) fn queue(&self, group: u64, m: &Message) -> bool {
        let mut st = self.st.borrow_mut();
        let before = st.queued_bytes();
        if !st.up || st.closed || before >= self.shared.cfg.peer_queue_bytes_max {
            self.shared.stats.bump(|s| s.msgs_dropped += 1);
            return false;
        }
        if crate::wire::coalesced(m) {
            crate::wire::encode_heartbeat_record(&mut st.beats, group, m);
        } else {
            encode_raft(&mut st.pending, group, m);
        }
        st.pending_msgs += 1;
        self.shared.stats.bump(|s| s.msgs_queued += 1);
        if before == 0 {
            self.ready.wake_all();
        }
        true
    }

    /// Queues a ping if the link is up and wrote nothing since the last
    /// call (`TransportConfig::peer_ping_ms`).
    pub(crate) fn ping_if_idle(&self) {
        let mut st = self.st.borrow_mut();
        let idle = st.up && !st.closed && !st.wrote && st.queued_bytes() == 0;
        st.wrote = false;
        if idle {
            crate::wire::encode_ping(&mut st.pending);
            self.shared.stats.bump(|s| s.pings_sent += 1);
            self.ready.wake_all();
        }
    }

    pub(crate) fn close(&self) {
        self.st.borrow_mut().closed = true;
        self.ready.wake_all();
        self.up.wake_all();
        self.drained.wake_all();
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.st.borrow().queued_bytes()
    }

    /// Waits until fewer than `bytes` are queued (or the link closes).
    pub(crate) async fn wait_queued_below(&self, bytes: usize) {
        self.drained
            .wait_until(|| self.queued_bytes() < bytes || self.closed())
            .await
    }

    pub(crate) fn is_up(&self) -> bool {
        self.st.borrow().up
    }

    /// Waits until the link is up (or closed).
    pub(crate) async fn wait_up(&self) {
        self.up.wait_until(|| self.is_up() || self.closed()).await
    }

    async fn dial(&self) -> Result<TcpStream, DialError> {
        let cfg = &self.shared.cfg;
        let mut stream =
            TcpStream::connect_timeout(self.addr, Duration::from_millis(cfg.connect_timeout_ms))
                .await
                .map_err(|e| DialError::Connect(e.into()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| DialError::Connect(e.into()))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        super::set_socket_buffers(fd, cfg.socket_buffer_bytes);
        super::set_ack_timeout(fd, cfg.peer_ack_timeout_ms).map_err(DialError::Connect)?;
        let mut out = Vec::with_capacity(64);
        Hello {
            expected: self.shared.book.known(self.node),
            ..self.shared.me
        }
        .encode(&mut out);
        stream
            .write_all(&out)
            .await
            .map_err(|e| DialError::Recv(RecvError::Io(e)))?;
        let max = crate::wire::hello::HELLO_FRAME_BYTES_MAX;
        let mut reader = FrameReader::new(max, max);
        let limit = Duration::from_millis(cfg.handshake_timeout_ms);
        let reply = glommio::timer::timeout(limit, async { Ok(reader.next(&mut stream).await) })
            .await
            .map_err(|_| RecvError::HandshakeTimeout(limit))??;
        let answer = match reply {
            Some((KIND_HELLO_REPLY, p)) => decode_reply_full(&p).map_err(|e| {
                if matches!(e, HelloError::Refused { .. }) {
                    self.shared.stats.bump(|s| s.handshakes_refused += 1);
                }
                RecvError::Hello(e)
            })?,
            Some((kind, _)) => {
                return Err(RecvError::Unexpected {
                    kind,
                    when: "as the handshake answer",
                }
                .into())
            }
            None => return Err(RecvError::Truncated { bytes: 0 }.into()),
        };
        if answer.answerer != self.node {
            return Err(DialError::WrongNode {
                got: answer.answerer,
                want: self.node,
            });
        }
        if answer.incarnation == 0 {
            return Err(RecvError::Hello(HelloError::NoIncarnation(self.node)).into());
        }
        // Nothing is sent before the peer's store is known to be the one
        // this shard met before (or is recorded as new, durably).
        self.shared
            .book
            .admit(self.node, answer.incarnation)
            .await
            .map_err(|e| {
                self.shared.stats.bump(|s| s.handshakes_refused += 1);
                RecvError::Identity(e)
            })?;
        Ok(stream)
    }

    fn closed(&self) -> bool {
        self.st.borrow().closed || self.shared.closing.get()
    }

    /// Tells the shard that the peer is reachable (`up`) or not, unless
    /// this link was closed: a link removed (`Transport::remove_peer`) or
    /// replaced (`add_peer` again) observes nothing about its node any
    /// more. Its task may still be in a dial or a write to a paused peer,
    /// and a report it made on waking, after the replacing link had
    /// reported the node reachable, left the node unreachable for the
    /// shard for good: leaders then quiesced without that node's replicas
    /// (a learner being seeded never campaigns), and nothing woke them.
    fn report(&self, up: bool) {
        if self.closed() {
            return;
        }
        let list = if up {
            &self.shared.reachable
        } else {
            &self.shared.unreachable
        };
        list.borrow_mut().push(self.node);
        self.shared.inbox_ready.wake_all();
    }

    /// Marks the link down: what was queued is dropped (and counted), and
    /// the shard hears that the peer is unreachable (`report`).
    fn down(&self, lost_in_write: u64) {
        let mut st = self.st.borrow_mut();
        st.up = false;
        let lost = st.pending_msgs + lost_in_write;
        st.pending.clear();
        st.beats.clear();
        st.pending_msgs = 0;
        drop(st);
        self.shared.stats.bump(|s| {
            s.msgs_dropped += lost;
            s.disconnects += 1;
        });
        self.report(false);
    }
}

impl LinkState {
    /// Bytes queued: frames encoded, and heartbeats as the records they
    /// will be.
    fn queued_bytes(&self) -> usize {
        self.pending.len() + self.beats.len()
    }
}

/// The writer task of a link, until the link or the transport closes.
async fn run(l: Rc<Link>) {
    let cfg = l.shared.cfg.clone();
    let me = l.shared.me;
    let mut rng = Rng(me.node ^ (u64::from(me.shard) << 32) ^ l.node.rotate_left(17));
    let mut backoff_ms = cfg.reconnect_backoff_ms_min;
    let mut writing: Vec<u8> = Vec::new();
    let mut failures = 0u64;
    let mut last_error = String::new();
    while !l.closed() {
        match l.dial().await {
            Ok(stream) => {
                tracing::info!(peer = l.node, addr = %l.addr, shard = me.shard, "connected to peer");
                // What the peer sends back on this connection (`back`):
                // read while the link is up, cancelled (dropped) with it.
                let (mut rd, mut stream) = futures_lite::io::split(stream);
                let _back = {
                    let (shared, node, link) = (l.shared.clone(), l.node, l.clone());
                    glommio::spawn_local(async move {
                        let mut reader =
                            FrameReader::new(BACK_RECV_BUFFER_BYTES, shared.cfg.frame_bytes_max);
                        let shard = shared.me.shard;
                        if let Err(e) = deliver(&mut reader, &mut rd, node, &shared).await {
                            tracing::warn!(
                                peer = node,
                                shard,
                                "ignoring what comes back on the link: {e}"
                            );
                        }
                        // The read side ended: a killed peer's kernel closed
                        // it. Nothing may be written for a long time (idle
                        // groups quiesce), so the writer is told now.
                        link.st.borrow_mut().broken = true;
                        link.ready.wake_all();
                    })
                };
                l.shared.stats.bump(|s| s.connects += 1);
                {
                    let mut st = l.st.borrow_mut();
                    st.up = true;
                    st.broken = false;
                }
                l.report(true);
                l.shared.inbox_ready.wake_all();
                l.up.wake_all();
                backoff_ms = cfg.reconnect_backoff_ms_min;
                failures = 0;
                last_error.clear();
                let (err, lost) = loop {
                    l.ready
                        .wait_until(|| {
                            let st = l.st.borrow();
                            st.queued_bytes() > 0 || st.broken || l.closed()
                        })
                        .await;
                    if l.closed() {
                        break (None, 0);
                    }
                    if l.st.borrow().broken {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "the peer closed the connection",
                        );
                        break (Some(e), 0);
                    }
                    let msgs = {
                        let mut st = l.st.borrow_mut();
                        st.wrote = true;
                        if !st.beats.is_empty() {
                            let LinkState { pending, beats, .. } = &mut *st;
                            crate::wire::encode_heartbeat_frames(pending, beats);
                            let used = beats.len();
                            let n = (used / crate::wire::HEARTBEAT_RECORD_BYTES) as u64;
                            beats.clear();
                            shrink_after_burst(beats, used, super::WRITE_BUFFER_RETAINED_BYTES);
                            l.shared.stats.bump(|s| {
                                s.heartbeats_coalesced += n;
                                s.heartbeat_frames +=
                                    n.div_ceil(crate::wire::HEARTBEATS_PER_FRAME_MAX as u64);
                            });
                        }
                        std::mem::swap(&mut st.pending, &mut writing);
                        std::mem::take(&mut st.pending_msgs)
                    };
                    l.drained.wake_all();
                    if let Err(e) = stream.write_all(&writing).await {
                        writing.clear();
                        break (Some(e), msgs);
                    }
                    let n = writing.len() as u64;
                    l.shared.stats.bump(|s| {
                        s.bytes_written += n;
                        s.writes += 1;
                    });
                    writing.clear();
                    shrink_after_burst(
                        &mut writing,
                        n as usize,
                        super::WRITE_BUFFER_RETAINED_BYTES,
                    );
                };
                l.down(lost);
                match err {
                    Some(e) => {
                        tracing::warn!(peer = l.node, addr = %l.addr, shard = me.shard, "lost connection to peer: {e}")
                    }
                    None => return,
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    l.report(false);
                }
                let msg = e.to_string();
                // One line per distinct failure, not one per attempt.
                if msg != last_error {
                    tracing::warn!(peer = l.node, addr = %l.addr, shard = me.shard, "cannot reach peer: {msg} (retrying with backoff)");
                    last_error = msg;
                }
            }
        }
        // Jittered over the upper half: peers that failed together do not
        // redial in lockstep. The peer connecting here cuts the wait short:
        // it is up again.
        let delay = rng.range(backoff_ms.div_ceil(2), backoff_ms);
        let accepted = l.shared.accepted_from(l.node);
        let dialed_us = l
            .shared
            .accepted_wake
            .wait_until(|| l.shared.accepted_from(l.node) != accepted || l.closed());
        futures_lite::future::or(glommio::timer::sleep(Duration::from_millis(delay)), async {
            dialed_us.await;
        })
        .await;
        backoff_ms = (backoff_ms * 2).min(cfg.reconnect_backoff_ms_max);
    }
}
