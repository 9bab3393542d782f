//! One client connection to one shard of one node: requests are written in
//! batches (everything issued while the writer was busy goes out in one
//! write), responses are matched to requests by id, in any order.
//!
//! Deadlines ([`Conn::call_until`]) are kept by one watchdog task per
//! connection rather than a timer per request: calls queue their
//! (deadline, id) in order, and the watchdog sleeps until the oldest
//! deadline, drops the entries answered since, and fails the ones still
//! waiting. A timer per request cost the load generator about a seventh
//! of its CPU at 64 x 64 (glommio's timer tree, insert and remove per
//! call, and the request's future moved into the timeout's).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::ConnLost;
use crate::transport::sync::WaitList;
use crate::transport::FrameReader;
use crate::wire::hello::{decode_reply, KIND_HELLO_REPLY};
use crate::wire::{
    decode_response, encode_request, ClientError, Hello, Reply, Request, KIND_RESPONSE,
};

type Outcome = Result<Result<Reply, ClientError>, ConnLost>;

/// A call given a deadline had no answer by then ([`Conn::call_until`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Late;

#[derive(Default)]
struct Slot {
    result: RefCell<Option<Result<Outcome, Late>>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn fill(&self, r: Result<Outcome, Late>) {
        *self.result.borrow_mut() = Some(r);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

pub(crate) struct Conn {
    /// The node that answered the handshake.
    pub node: u64,
    out: RefCell<Vec<u8>>,
    writer: WaitList,
    waiters: RefCell<HashMap<u64, Rc<Slot>>>,
    /// (deadline, id) of the calls given one, in the order made (so in
    /// deadline order: see `call_until`); the watchdog's queue.
    deadlines: RefCell<VecDeque<(Instant, u64)>>,
    /// Wakes the watchdog when a deadline is queued behind none.
    watchdog: WaitList,
    next_id: Cell<u64>,
    closed: Cell<bool>,
    why: RefCell<String>,
    /// How many of the connection's two tasks (reader, writer) ended;
    /// `done` is woken each time.
    ended: Cell<u8>,
    done: WaitList,
}

/// Largest response accepted (a scan of many large values stays below).
const RESPONSE_BYTES_MAX: usize = 256 << 20;
const RECV_BUFFER_BYTES: usize = 256 << 10;

impl Conn {
    pub(crate) async fn open(
        addr: SocketAddr,
        cluster: u64,
        shard: u32,
        connect_timeout_ms: u64,
    ) -> Result<Rc<Conn>, ConnLost> {
        let lost = |e: &dyn std::fmt::Display| ConnLost(format!("{addr}: {e}"));
        let limit = Duration::from_millis(connect_timeout_ms.max(1));
        let mut s = TcpStream::connect_timeout(addr, limit)
            .await
            .map_err(|e| lost(&e))?;
        s.set_nodelay(true).map_err(|e| lost(&e))?;
        let mut out = Vec::with_capacity(64);
        Hello::client(cluster, shard).encode(&mut out);
        s.write_all(&out).await.map_err(|e| lost(&e))?;
        let mut reader = FrameReader::new(RECV_BUFFER_BYTES, RESPONSE_BYTES_MAX);
        let reply = glommio::timer::timeout(limit, async { Ok(reader.next(&mut s).await) })
            .await
            .map_err(|_| lost(&"no handshake answer in time"))?
            .map_err(|e| lost(&e))?;
        let node = match reply {
            Some((KIND_HELLO_REPLY, p)) => decode_reply(&p).map_err(|e| lost(&e))?,
            _ => return Err(lost(&"bad handshake answer")),
        };
        let c = Rc::new(Conn {
            node,
            out: RefCell::new(Vec::new()),
            writer: WaitList::default(),
            waiters: RefCell::new(HashMap::new()),
            deadlines: RefCell::new(VecDeque::new()),
            watchdog: WaitList::default(),
            next_id: Cell::new(1),
            closed: Cell::new(false),
            why: RefCell::new(String::new()),
            ended: Cell::new(0),
            done: WaitList::default(),
        });
        let (rd, wr) = futures_lite::io::split(s);
        glommio::spawn_local(read_loop(rd, reader, c.clone())).detach();
        glommio::spawn_local(write_loop(wr, c.clone())).detach();
        glommio::spawn_local(watch_deadlines(c.clone())).detach();
        Ok(c)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Waits until both tasks of a closed connection ended (its socket is
    /// then closed).
    pub(crate) async fn ended(&self) {
        self.done.wait_until(|| self.ended.get() == 2).await
    }

    fn task_ended(&self) {
        self.ended.set(self.ended.get() + 1);
        self.done.wake_all();
    }

    pub(crate) fn close(&self, why: String) {
        if self.closed.replace(true) {
            return;
        }
        *self.why.borrow_mut() = why.clone();
        for (_, s) in self.waiters.borrow_mut().drain() {
            s.fill(Ok(Err(ConnLost(why.clone()))));
        }
        self.deadlines.borrow_mut().clear();
        self.writer.wake_all();
        self.watchdog.wake_all();
    }

    /// Sends `req` (its id is assigned here) and waits for its response.
    pub(crate) async fn call(&self, mut req: Request) -> Outcome {
        match self.send(&mut req, None).await {
            Ok(o) => o,
            Err(Late) => unreachable!("a call without a deadline is never late"),
        }
    }

    /// [`Conn::call`], answered `Err(Late)` if no response came by
    /// `deadline` (the response, if it comes later, is dropped). The
    /// watchdog checks deadlines in the order the calls were made: a call
    /// whose deadline is earlier than one made before it on this
    /// connection is failed no earlier than that one, so callers give
    /// deadlines that do not decrease (now + a fixed attempt timeout).
    /// `req` is encoded at once (its id set here) and not kept: the caller
    /// keeps it for another attempt.
    pub(crate) async fn call_until(
        &self,
        req: &mut Request,
        deadline: Instant,
    ) -> Result<Outcome, Late> {
        self.send(req, Some(deadline)).await
    }

    async fn send(&self, req: &mut Request, deadline: Option<Instant>) -> Result<Outcome, Late> {
        if self.closed.get() {
            return Ok(Err(ConnLost(self.why.borrow().clone())));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        req.id = id;
        let slot = Rc::new(Slot::default());
        self.waiters.borrow_mut().insert(id, slot.clone());
        if let Some(d) = deadline {
            let mut q = self.deadlines.borrow_mut();
            // The watchdog checks the queue's front only (`call_until`).
            debug_assert!(
                q.back().is_none_or(|&(last, _)| last <= d),
                "deadlines queued out of order"
            );
            if q.is_empty() {
                self.watchdog.wake_all();
            }
            q.push_back((d, id));
        }
        let was_empty = {
            let mut out = self.out.borrow_mut();
            let e = out.is_empty();
            encode_request(&mut out, req);
            e
        };
        if was_empty {
            self.writer.wake_all();
        }
        // Dropped unanswered (a caller's own timer fired): forgotten, so a
        // hung node's connection does not keep every call sent to it.
        let forget = Forget { conn: self, id };
        let r = futures_lite::future::poll_fn(|cx| {
            if let Some(r) = slot.result.borrow_mut().take() {
                return Poll::Ready(r);
            }
            *slot.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        // Answered: whoever filled the slot removed it already.
        std::mem::forget(forget);
        r
    }
}

/// Removes call `id` from its connection's waiters if the call's future
/// is dropped before its answer.
struct Forget<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.conn.waiters.borrow_mut().remove(&self.id);
    }
}

async fn read_loop(mut rd: ReadHalf<TcpStream>, mut reader: FrameReader, c: Rc<Conn>) {
    let why = loop {
        // Closed by the client: stop reading at once (the socket closes
        // when both halves are dropped), not when the node answers the FIN.
        let next = futures_lite::future::or(async { Some(reader.next(&mut rd).await) }, async {
            c.writer.wait_until(|| c.closed.get()).await;
            None
        })
        .await;
        let Some(next) = next else {
            break c.why.borrow().clone();
        };
        match next {
            Ok(Some((KIND_RESPONSE, p))) => match decode_response(&p) {
                Ok(r) => {
                    if let Some(slot) = c.waiters.borrow_mut().remove(&r.id) {
                        slot.fill(Ok(Ok(r.result)));
                    }
                }
                Err(e) => break format!("bad response: {e}"),
            },
            Ok(Some((kind, _))) => break format!("unexpected frame kind {kind}"),
            Ok(None) => break "the node closed the connection".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    c.close(why);
    drop(rd);
    c.task_ended();
}

/// Fails the calls of `c` still unanswered at their deadline (see the
/// module's doc). It ends when the connection closes (`close` wakes it),
/// as the reader and the writer do.
async fn watch_deadlines(c: Rc<Conn>) {
    loop {
        c.watchdog
            .wait_until(|| c.closed.get() || !c.deadlines.borrow().is_empty())
            .await;
        if c.closed.get() {
            return;
        }
        let next = c.deadlines.borrow()[0].0;
        let now = Instant::now();
        if next > now {
            let closed = c.watchdog.wait_until(|| c.closed.get());
            futures_lite::future::or(glommio::timer::sleep(next - now), closed).await;
            if c.closed.get() {
                return;
            }
        }
        let now = Instant::now();
        let mut q = c.deadlines.borrow_mut();
        let mut waiters = c.waiters.borrow_mut();
        while let Some(&(deadline, id)) = q.front() {
            if waiters.contains_key(&id) && deadline > now {
                break;
            }
            q.pop_front();
            // Answered since (gone from the waiters), or late.
            if let Some(slot) = waiters.remove(&id) {
                slot.fill(Err(Late));
            }
        }
    }
}

async fn write_loop(mut wr: WriteHalf<TcpStream>, c: Rc<Conn>) {
    let mut writing = Vec::new();
    loop {
        c.writer
            .wait_until(|| !c.out.borrow().is_empty() || c.closed.get())
            .await;
        if c.closed.get() {
            // Our FIN: the node closes its end.
            let _ = wr.close().await;
            break;
        }
        std::mem::swap(&mut *c.out.borrow_mut(), &mut writing);
        if let Err(e) = wr.write_all(&writing).await {
            c.close(format!("write: {e}"));
            break;
        }
        writing.clear();
    }
    drop(wr);
    c.task_ended();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ClientService, TransportConfig};
    use crate::wire::{Op, Response, PROTOCOL_VERSION};
    use bytes::Bytes;
    use glommio::LocalExecutorBuilder;

    const CLUSTER: u64 = 77;

    /// A node's client port that answers the puts of key `answered` at
    /// once and leaves every other request unanswered (a hung replica).
    async fn half_hung_node() -> SocketAddr {
        let l = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let me = Hello {
            cluster: CLUSTER,
            node: 1,
            shard: 0,
            shards: 1,
            version: PROTOCOL_VERSION as u32,
            incarnation: 1,
            expected: 0,
            cuts: 0,
            client_addr: None,
        };
        let svc = ClientService::new(me, TransportConfig::default());
        glommio::spawn_local(svc.clone().serve(l)).detach();
        glommio::spawn_local(async move {
            let mut reqs = Vec::new();
            loop {
                svc.ready().await;
                svc.drain(&mut reqs);
                for (conn, r) in reqs.drain(..) {
                    if matches!(&r.op, Op::Put { key, .. } if &key[..] == b"answered") {
                        let result = Ok(Reply::Done);
                        svc.respond(conn, &Response { id: r.id, result });
                    }
                }
            }
        })
        .detach();
        addr
    }

    fn put(key: &'static [u8]) -> Request {
        Request {
            id: 0,
            group: 0,
            client: 1,
            seq: 0,
            ack: 0,
            op: Op::Put {
                key: Bytes::from_static(key),
                value: Bytes::from_static(b"v"),
            },
        }
    }

    /// The connection's watchdog fails a call unanswered by its deadline,
    /// not before, and forgets it; calls answered in time are untouched
    /// and leave nothing behind once their deadline passes.
    #[test]
    fn a_call_unanswered_by_its_deadline_is_late_and_forgotten() {
        LocalExecutorBuilder::default()
            .spawn(|| async move {
                let addr = half_hung_node().await;
                let c = Conn::open(addr, CLUSTER, 0, 2000).await.unwrap();
                let t0 = Instant::now();
                let limit = Duration::from_millis(150);
                // Unanswered, with many answered calls made after it.
                let hung = glommio::spawn_local({
                    let c = c.clone();
                    async move { c.call_until(&mut put(b"hung"), t0 + limit).await }
                });
                for _ in 0..100 {
                    let r = c
                        .call_until(&mut put(b"answered"), Instant::now() + limit)
                        .await;
                    assert!(matches!(r, Ok(Ok(Ok(Reply::Done)))), "{:?}", r.err());
                }
                assert!(
                    t0.elapsed() < limit,
                    "the answered calls took {:?}",
                    t0.elapsed()
                );
                // Another unanswered one, due 50 ms after the first: not
                // failed when the watchdog wakes for the first.
                let later = t0 + limit + Duration::from_millis(50);
                let hung_later = glommio::spawn_local({
                    let c = c.clone();
                    async move { c.call_until(&mut put(b"hung"), later).await }
                });
                let r = hung.await;
                let waited = t0.elapsed();
                assert_eq!(r.err(), Some(Late));
                assert!(waited >= limit, "failed early, after {waited:?}");
                assert!(waited < limit * 4, "failed late, after {waited:?}");
                assert_eq!(hung_later.await.err(), Some(Late));
                let now = Instant::now();
                assert!(now >= later, "failed {:?} early", later - now);
                // Once the last deadline passed, nothing is kept.
                glommio::timer::sleep(limit * 2).await;
                assert!(c.waiters.borrow().is_empty());
                assert!(c.deadlines.borrow().is_empty());
                // Still usable; a call with no deadline is never late.
                let r = c.call(put(b"answered")).await;
                assert!(matches!(r, Ok(Ok(Reply::Done))));
                // Closing fails what waits, and the watchdog with it.
                let hung = glommio::spawn_local({
                    let c = c.clone();
                    async move {
                        c.call_until(&mut put(b"hung"), Instant::now() + limit * 10)
                            .await
                    }
                });
                glommio::timer::sleep(Duration::from_millis(20)).await;
                c.close("closed by the test".into());
                assert!(matches!(hung.await, Ok(Err(ConnLost(_)))));
                assert!(c.deadlines.borrow().is_empty());
                glommio::timer::sleep(Duration::from_millis(20)).await;
                assert_eq!(
                    Rc::strong_count(&c),
                    1,
                    "the reader, writer and watchdog ended"
                );
                // A call dropped unanswered (its caller's own timer) is
                // forgotten.
                let c = Conn::open(addr, CLUSTER, 0, 2000).await.unwrap();
                let r =
                    glommio::timer::timeout(limit, async { Ok(c.call(put(b"hung")).await) }).await;
                assert!(r.is_err(), "answered?");
                assert!(c.waiters.borrow().is_empty());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
