//! What `ringraft-load` drives: a ringraft cluster through the native
//! client, or any server that speaks Redis's protocol (`--target resp`:
//! Redis, Valkey, ringraft's own RESP port), so one generator measures
//! every system a user compares, with the same workload, schedule,
//! report and `--check`.
//!
//! A RESP connection pipelines: the workers sharing it (`--depth`) queue
//! their commands, a writer task writes everything queued at once, and a
//! reader task hands the answers back in the order the commands were
//! queued (RESP answers in order).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use redis_protocol::resp2::types::OwnedFrame;
use ringraft::client::{Client, Error};
use ringraft::wire::ClientError;

/// One connection's way to the system under test.
#[derive(Clone)]
pub enum Target {
    Native(Client),
    Resp(RespConn),
}

impl Target {
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        match self {
            Target::Native(c) => c.get(key).await,
            Target::Resp(c) => match c.call(&[b"GET", key]).await? {
                OwnedFrame::BulkString(v) => Ok(Some(Bytes::from(v))),
                OwnedFrame::Null => Ok(None),
                other => Err(unexpected(&other)),
            },
        }
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        match self {
            Target::Native(c) => c.put(key, value).await,
            Target::Resp(c) => match c.call(&[b"SET", key, value]).await? {
                OwnedFrame::SimpleString(s) if s == b"OK" => Ok(()),
                other => Err(unexpected(&other)),
            },
        }
    }
}

fn unexpected(f: &OwnedFrame) -> Error {
    Error::Server(ClientError::Failed {
        reason: format!("unexpected answer {f:?}"),
    })
}

/// A pipelined RESP connection (see the module docs). Cheap to clone:
/// clones share the connection.
#[derive(Clone)]
pub struct RespConn {
    inner: Rc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    /// Commands encoded and not written yet: the writer task writes all
    /// of them at once (one syscall for what the workers queued
    /// meanwhile, as redis-benchmark writes a pipeline).
    out: RefCell<Vec<u8>>,
    /// Wakes the writer task (one token at a time: `wake_sent`).
    wake: LocalSender<()>,
    wake_sent: Cell<bool>,
    /// Where each answer goes, in the order the commands were queued.
    waiting: RefCell<VecDeque<LocalSender<Result<OwnedFrame, String>>>>,
    /// Why the connection ended (its reader or writer stopped); `None`
    /// while up.
    broken: RefCell<Option<String>>,
    op_timeout: Duration,
}

impl Inner {
    /// The connection is over: said to every command still waiting, and
    /// to every later call.
    fn end(&self, why: String) {
        if self.broken.borrow().is_none() {
            *self.broken.borrow_mut() = Some(why.clone());
        }
        for tx in self.waiting.borrow_mut().drain(..) {
            let _ = tx.try_send(Err(why.clone()));
        }
    }
}

impl RespConn {
    /// Connects to `addr`, and gives `password` (`AUTH`) if there is one;
    /// each command may take `op_timeout_ms` (its write included) before
    /// it fails with an unknown outcome. A refused password is
    /// `Error::Server` with the server's words (`WRONGPASS ...`).
    pub async fn connect(
        addr: SocketAddr,
        op_timeout_ms: u64,
        password: Option<&[u8]>,
    ) -> Result<RespConn, Error> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Unreachable(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (r, w) = futures_lite::io::split(stream);
        let (wake, woken) = local_channel::new_unbounded();
        let inner = Rc::new(Inner {
            addr,
            out: RefCell::new(Vec::with_capacity(16 << 10)),
            wake,
            wake_sent: Cell::new(false),
            waiting: RefCell::new(VecDeque::new()),
            broken: RefCell::new(None),
            op_timeout: Duration::from_millis(op_timeout_ms),
        });
        glommio::spawn_local(read_answers(inner.clone(), r)).detach();
        glommio::spawn_local(write_commands(Rc::downgrade(&inner), w, woken)).detach();
        let conn = RespConn { inner };
        if let Some(p) = password {
            conn.call(&[b"AUTH", p]).await?;
        }
        Ok(conn)
    }

    /// Sends one command and waits for its answer. An error answer is
    /// `Error::Server(Failed)` (nothing happened, as Redis answers
    /// errors), except ringraft's `TIMEOUT` (outcome unknown); a
    /// connection that ends or an answer that does not come within the op
    /// timeout leaves a write's outcome unknown (`Error::Timeout`).
    /// Dropping the call at any point leaves the connection sound.
    pub async fn call(&self, args: &[&[u8]]) -> Result<OwnedFrame, Error> {
        let inner = &self.inner;
        let ms = inner.op_timeout.as_millis() as u64;
        if let Some(why) = inner.broken.borrow().clone() {
            return Err(Error::Unreachable(format!("{}: {why}", inner.addr)));
        }
        let (tx, rx) = local_channel::new_bounded(1);
        {
            // Queued and awaited in one step (no await in between): the
            // answers' order is the commands' order.
            use std::io::Write;
            let mut out = inner.out.borrow_mut();
            let _ = write!(out, "*{}\r\n", args.len());
            for a in args {
                let _ = write!(out, "${}\r\n", a.len());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
            inner.waiting.borrow_mut().push_back(tx);
        }
        if !inner.wake_sent.replace(true) {
            let _ = inner.wake.try_send(());
        }
        let answer = glommio::timer::timeout(inner.op_timeout, async { Ok(rx.recv().await) }).await;
        match answer {
            Ok(Some(Ok(OwnedFrame::Error(reason)))) if reason.starts_with("TIMEOUT") => {
                Err(Error::Timeout(ms))
            }
            Ok(Some(Ok(OwnedFrame::Error(reason)))) => {
                Err(Error::Server(ClientError::Failed { reason }))
            }
            Ok(Some(Ok(f))) => Ok(f),
            // Sent or queued, then no answer (the connection ended, or the
            // time ran out): it may have been applied.
            _ => Err(Error::Timeout(ms)),
        }
    }
}

/// The connection's writer: each time it is woken, everything queued goes
/// out in one write. A write that fails ends the connection; the task
/// ends with it, or when the connection is dropped.
async fn write_commands(
    inner: std::rc::Weak<Inner>,
    mut w: WriteHalf<TcpStream>,
    woken: local_channel::LocalReceiver<()>,
) {
    let mut buf = Vec::with_capacity(16 << 10);
    while woken.recv().await.is_some() {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.wake_sent.set(false);
        std::mem::swap(&mut buf, &mut *inner.out.borrow_mut());
        if buf.is_empty() {
            continue;
        }
        if let Err(e) = w.write_all(&buf).await {
            inner.end(format!("writing: {e}"));
            return;
        }
        buf.clear();
    }
}

/// The connection's reader: each answer to the first command waiting.
/// When the connection ends, every command still waiting is told so.
async fn read_answers(inner: Rc<Inner>, mut r: ReadHalf<TcpStream>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    let why = loop {
        loop {
            match redis_protocol::resp2::decode::decode(&buf) {
                Ok(Some((f, n))) => {
                    buf.drain(..n);
                    if let Some(tx) = inner.waiting.borrow_mut().pop_front() {
                        // Its caller may have given up (timed out).
                        let _ = tx.try_send(Ok(f));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    *inner.broken.borrow_mut() = Some(format!("not RESP: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = inner.broken.borrow().clone() {
            break why;
        }
        match r.read(&mut chunk).await {
            Ok(0) => break "closed by the server".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break e.to_string(),
        }
    };
    inner.end(why);
}
