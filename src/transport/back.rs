//! The back channel: messages to a node this shard has no link to, written
//! on the connection that node dialled here.
//!
//! Links are one-way (see the module above), and a shard links only to the
//! members of its groups. A node removed from every group while it was
//! down is not dialled any more, yet it comes back, dials in and campaigns;
//! it must hear that it was removed (`raft::Body::Removed`), and nobody
//! would dial it to say so. So every inbound peer connection can carry
//! messages back: [`Transport::send`](super::Transport::send) uses it for a
//! node without a link, and the dialling side reads what comes back on its
//! link ([`deliver`] on both ends). Rare by design: a node with a link is
//! always sent to on the link, so the hot path never touches this.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::sync::WaitList;
use super::{FrameReader, RecvError, Shared};
use crate::raft::{Message, NodeId};
use crate::wire::{
    decode_heartbeats, decode_raft, encode_raft, KIND_HEARTBEATS, KIND_PING, KIND_RAFT,
};

/// Messages waiting to go back on one inbound connection.
#[derive(Default)]
pub(super) struct BackChannel {
    pending: RefCell<Vec<u8>>,
    ready: WaitList,
    closed: Cell<bool>,
}

impl BackChannel {
    /// Encodes `m` for the writer; `false` (dropped, counted) past
    /// `peer_queue_bytes_max` bytes or once the connection ended.
    pub(super) fn queue(&self, shared: &Shared, group: u64, m: &Message) -> bool {
        let mut p = self.pending.borrow_mut();
        if self.closed.get() || p.len() >= shared.cfg.peer_queue_bytes_max {
            shared.stats.bump(|s| s.msgs_dropped += 1);
            return false;
        }
        let was_empty = p.is_empty();
        encode_raft(&mut p, group, m);
        shared.stats.bump(|s| s.msgs_queued += 1);
        if was_empty {
            self.ready.wake_all();
        }
        true
    }

    pub(super) fn close(&self) {
        self.closed.set(true);
        self.ready.wake_all();
    }

    /// Writes what is queued until the connection ends or the channel
    /// closes.
    pub(super) async fn write<W: AsyncWrite + Unpin>(&self, mut w: W, shared: &Shared) {
        let mut writing = Vec::new();
        loop {
            self.ready
                .wait_until(|| !self.pending.borrow().is_empty() || self.closed.get())
                .await;
            if self.closed.get() {
                return;
            }
            std::mem::swap(&mut *self.pending.borrow_mut(), &mut writing);
            if w.write_all(&writing).await.is_err() {
                self.close();
                return;
            }
            let n = writing.len() as u64;
            shared.stats.bump(|s| {
                s.bytes_written += n;
                s.writes += 1;
            });
            writing.clear();
            crate::buffers::shrink_after_burst(
                &mut writing,
                n as usize,
                super::WRITE_BUFFER_RETAINED_BYTES,
            );
        }
    }
}

/// Reads Raft messages from `node` into the shard's inbox until the
/// connection ends (`Ok`) or carries something malformed: what an inbound
/// connection does after its handshake, and what a link does with what
/// comes back on it. Pushes back on the sender while the inbox is full.
pub(super) async fn deliver<R: AsyncRead + Unpin>(
    reader: &mut FrameReader,
    stream: &mut R,
    node: NodeId,
    shared: &Shared,
) -> Result<(), RecvError> {
    loop {
        let inbox_max = shared.cfg.inbox_msgs_max;
        shared
            .inbox_space
            .wait_until(|| shared.inbox.borrow().len() < inbox_max || shared.closing.get())
            .await;
        if shared.closing.get() {
            return Ok(());
        }
        let mut got = 0u64;
        let mut frames = 0u64;
        let blocked = shared.blocked.borrow().contains(&node);
        while let Some((kind, payload)) = reader.next_buffered()? {
            if kind == KIND_PING {
                frames += 1;
                continue;
            }
            if kind == KIND_HEARTBEATS {
                let mut inbox = shared.inbox.borrow_mut();
                let n = decode_heartbeats(&payload, |group, m| {
                    if !blocked {
                        inbox.push((group, node, m));
                    }
                })?;
                got += n as u64;
                if !blocked {
                    frames += 1;
                }
                continue;
            }
            got += 1;
            if kind != KIND_RAFT {
                return Err(RecvError::Unexpected {
                    kind,
                    when: "on a peer connection",
                });
            }
            let (group, m) = decode_raft(&payload)?;
            if blocked {
                continue; // fault injection: as if lost
            }
            frames += 1;
            shared.inbox.borrow_mut().push((group, node, m));
        }
        // Heard from: a frame that is not dropped by fault injection (an
        // isolated peer falls silent, as behind a real partition).
        if frames > 0 && !blocked {
            shared.note_heard(node);
        }
        if got > 0 {
            shared.stats.bump(|s| s.msgs_received += got);
            shared.inbox_ready.wake_all();
            // Let the shard take them: a peer that always has bytes ready
            // must not starve the loop (reads rarely block then).
            futures_lite::future::yield_now().await;
        }
        if !reader.fill(stream).await? {
            return Ok(());
        }
    }
}

/// The back channels of a shard's inbound connections, by node (the newest
/// connection of a node wins). At most one per connected node: bounded by
/// the peers that may connect.
#[derive(Default)]
pub(super) struct BackChannels(RefCell<Vec<(NodeId, Rc<BackChannel>)>>);

impl BackChannels {
    pub(super) fn open(&self, node: NodeId) -> Rc<BackChannel> {
        let c = Rc::new(BackChannel::default());
        let mut v = self.0.borrow_mut();
        if let Some(i) = v.iter().position(|(n, _)| *n == node) {
            v[i].1.close();
            v[i].1 = c.clone();
        } else {
            v.push((node, c.clone()));
        }
        c
    }

    /// Drops `c` (its connection ended) unless a newer one replaced it.
    pub(super) fn end(&self, node: NodeId, c: &Rc<BackChannel>) {
        c.close();
        self.0
            .borrow_mut()
            .retain(|(n, x)| !(*n == node && Rc::ptr_eq(x, c)));
    }

    pub(super) fn get(&self, node: NodeId) -> Option<Rc<BackChannel>> {
        self.0
            .borrow()
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, c)| c.clone())
    }
}
