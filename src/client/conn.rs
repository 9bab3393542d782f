//! One client connection to one shard of one node: requests are written in
//! batches (everything issued while the writer was busy goes out in one
//! write), responses are matched to requests by id, in any order.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

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

#[derive(Default)]
struct Slot {
    result: RefCell<Option<Outcome>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn fill(&self, r: Outcome) {
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
            next_id: Cell::new(1),
            closed: Cell::new(false),
            why: RefCell::new(String::new()),
            ended: Cell::new(0),
            done: WaitList::default(),
        });
        let (rd, wr) = futures_lite::io::split(s);
        glommio::spawn_local(read_loop(rd, reader, c.clone())).detach();
        glommio::spawn_local(write_loop(wr, c.clone())).detach();
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
            s.fill(Err(ConnLost(why.clone())));
        }
        self.writer.wake_all();
    }

    /// Sends `req` (its id is assigned here) and waits for its response.
    pub(crate) async fn call(&self, mut req: Request) -> Outcome {
        if self.closed.get() {
            return Err(ConnLost(self.why.borrow().clone()));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        req.id = id;
        let slot = Rc::new(Slot::default());
        self.waiters.borrow_mut().insert(id, slot.clone());
        let was_empty = {
            let mut out = self.out.borrow_mut();
            let e = out.is_empty();
            encode_request(&mut out, &req);
            e
        };
        if was_empty {
            self.writer.wake_all();
        }
        futures_lite::future::poll_fn(|cx| {
            if let Some(r) = slot.result.borrow_mut().take() {
                return Poll::Ready(r);
            }
            *slot.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
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
                        slot.fill(Ok(r.result));
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
