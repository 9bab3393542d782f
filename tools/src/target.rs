//! What `ringraft-load` drives: a ringraft cluster through the native
//! client, any server that speaks Redis's protocol (`--target resp`:
//! Redis, Valkey, ringraft's own RESP port), or etcd (`--target etcd`,
//! [`crate::etcd`]), so one generator measures
//! every system a user compares, with the same workload, schedule,
//! report and `--check`.
//!
//! A RESP connection pipelines: the workers sharing it (`--depth`) queue
//! their commands, a writer task writes everything queued at once, and a
//! reader task hands the answers back in the order the commands were
//! queued (RESP answers in order). Per command there is one allocation
//! (its answer slot) and no timer: one watchdog per connection fails the
//! commands that waited past the op timeout (see [`RespConn::call`]), and
//! answers are decoded in place from the read buffer (`BytesFrame`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use redis_protocol::resp2::types::BytesFrame;
use ringraft::client::{Client, Error};
use ringraft::wire::ClientError;

use crate::etcd::EtcdConn;
use crate::workload::push_decimal;

/// One connection's way to the system under test.
#[derive(Clone)]
pub enum Target {
    Native(Client),
    Resp(RespConn),
    Etcd(EtcdConn),
}

impl Target {
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        match self {
            Target::Native(c) => c.get(key).await,
            Target::Etcd(c) => c.get(key).await,
            Target::Resp(c) => match c.call(&[b"GET", key]).await? {
                BytesFrame::BulkString(v) => Ok(Some(v)),
                BytesFrame::Null => Ok(None),
                other => Err(unexpected(&other)),
            },
        }
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        match self {
            Target::Native(c) => c.put(key, value).await,
            Target::Etcd(c) => c.put(key, value).await,
            Target::Resp(c) => match c.call(&[b"SET", key, value]).await? {
                BytesFrame::SimpleString(s) if s == "OK" => Ok(()),
                other => Err(unexpected(&other)),
            },
        }
    }
}

fn unexpected(f: &BytesFrame) -> Error {
    Error::Server(ClientError::Failed {
        reason: format!("unexpected answer {f:?}"),
    })
}

/// What a command's answer slot ends with: the server's frame, or `None`
/// when none will come (the connection ended, or the op timeout passed).
type Answer = Option<BytesFrame>;

/// Where one command's answer lands. The reader (or the watchdog) fills
/// it once; the caller's future takes it.
#[derive(Default)]
struct Slot {
    answer: Cell<Option<Answer>>,
    waker: Cell<Option<Waker>>,
    /// Filled already (a late command's real answer is then dropped).
    done: Cell<bool>,
}

impl Slot {
    fn fill(&self, a: Answer) {
        if self.done.replace(true) {
            return;
        }
        self.answer.set(Some(a));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The caller's side of a [`Slot`].
struct Awaited(Rc<Slot>);

impl Future for Awaited {
    type Output = Answer;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match self.0.answer.take() {
            Some(a) => Poll::Ready(a),
            None => {
                self.0.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
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
    /// Each unanswered command's slot, in the order queued. The first is
    /// command number `answered`.
    waiting: RefCell<VecDeque<Rc<Slot>>>,
    /// Commands queued since the connection opened.
    queued: Cell<u64>,
    /// Commands answered since the connection opened (the number of the
    /// first one in `waiting`).
    answered: Cell<u64>,
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
        for slot in self.waiting.borrow_mut().drain(..) {
            slot.fill(None);
        }
    }
}

impl RespConn {
    /// Connects to `addr`, and gives `password` (`AUTH`) if there is one;
    /// each command may take `op_timeout_ms` (its write included, plus up
    /// to a tenth of it: the watchdog's tick) before it fails with an
    /// unknown outcome. A refused password is `Error::Server` with the
    /// server's words (`WRONGPASS ...`).
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
            queued: Cell::new(0),
            answered: Cell::new(0),
            broken: RefCell::new(None),
            op_timeout: Duration::from_millis(op_timeout_ms.max(1)),
        });
        glommio::spawn_local(read_answers(inner.clone(), r)).detach();
        glommio::spawn_local(write_commands(Rc::downgrade(&inner), w, woken)).detach();
        glommio::spawn_local(watch_late(Rc::downgrade(&inner))).detach();
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
    pub async fn call(&self, args: &[&[u8]]) -> Result<BytesFrame, Error> {
        let inner = &self.inner;
        let ms = inner.op_timeout.as_millis() as u64;
        if let Some(why) = inner.broken.borrow().clone() {
            return Err(Error::Unreachable(format!("{}: {why}", inner.addr)));
        }
        let slot = Rc::new(Slot::default());
        {
            // Queued in one step (no await in between): the answers'
            // order is the commands' order.
            let mut out = inner.out.borrow_mut();
            encode_command(args, &mut out);
            inner.waiting.borrow_mut().push_back(slot.clone());
            inner.queued.set(inner.queued.get() + 1);
        }
        if !inner.wake_sent.replace(true) {
            let _ = inner.wake.try_send(());
        }
        match Awaited(slot).await {
            Some(BytesFrame::Error(reason)) if reason.starts_with("TIMEOUT") => {
                Err(Error::Timeout(ms))
            }
            Some(BytesFrame::Error(reason)) => Err(Error::Server(ClientError::Failed {
                reason: reason.to_string(),
            })),
            Some(f) => Ok(f),
            // Sent or queued, then no answer (the connection ended, or the
            // time ran out): it may have been applied.
            None => Err(Error::Timeout(ms)),
        }
    }
}

/// One command as a RESP array of bulk strings.
fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    push_decimal(out, args.len() as u64, 0);
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_decimal(out, a.len() as u64, 0);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The connection's writer: each time it is woken, everything queued goes
/// out in one write. A write that fails ends the connection; the task
/// ends with it, or when the connection is dropped.
async fn write_commands(
    inner: Weak<Inner>,
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
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    let why = loop {
        loop {
            match redis_protocol::resp2::decode::decode_bytes_mut(&mut buf) {
                Ok(Some((f, _, _))) => {
                    // A frame no command waits for (a server breaking the
                    // protocol) is dropped and not counted, so `answered`
                    // stays the number of the first slot waiting.
                    if let Some(slot) = inner.waiting.borrow_mut().pop_front() {
                        inner.answered.set(inner.answered.get() + 1);
                        // Its caller may have given up (late, or dropped).
                        slot.fill(Some(f));
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

/// The connection's watchdog: every tenth of the op timeout it notes how
/// many commands were queued by then; a command queued before the note of
/// one op timeout ago has waited at least that long and fails as late.
/// Its answer, if it comes, is dropped, and the connection goes on (RESP
/// answers in order, so later commands are matched as before). One timer
/// per connection instead of one per command.
async fn watch_late(inner: Weak<Inner>) {
    let tick = {
        let Some(i) = inner.upgrade() else { return };
        (i.op_timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(100))
    };
    // (when, commands queued by then), oldest first.
    let mut marks: VecDeque<(Instant, u64)> = VecDeque::new();
    // Commands below this number were failed as late already.
    let mut failed_below = 0u64;
    loop {
        glommio::timer::sleep(tick).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.broken.borrow().is_some() {
            return;
        }
        let now = Instant::now();
        marks.push_back((now, inner.queued.get()));
        // Keep the newest note at least an op timeout old at the front.
        while marks.len() >= 2 && now.duration_since(marks[1].0) >= inner.op_timeout {
            marks.pop_front();
        }
        let old = marks[0];
        if now.duration_since(old.0) >= inner.op_timeout {
            let q = old.1;
            let first = inner.answered.get();
            let waiting = inner.waiting.borrow();
            for n in failed_below.max(first)..q {
                if let Some(slot) = waiting.get((n - first) as usize) {
                    slot.fill(None);
                }
            }
            failed_below = failed_below.max(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// Reads one RESP command (an array of bulk strings) off `r`: its
    /// arguments.
    fn read_command(r: &mut impl BufRead) -> Vec<Vec<u8>> {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let n: usize = line.trim_start_matches('*').trim().parse().unwrap();
        (0..n)
            .map(|_| {
                line.clear();
                r.read_line(&mut line).unwrap();
                let len: usize = line.trim_start_matches('$').trim().parse().unwrap();
                let mut a = vec![0; len + 2];
                std::io::Read::read_exact(r, &mut a).unwrap();
                a.truncate(len);
                a
            })
            .collect()
    }

    /// A command unanswered within the op timeout fails as an unknown
    /// outcome (never before the timeout), and the connection goes on: its
    /// late answer is dropped, the next command gets its own.
    #[test]
    fn a_late_answer_times_its_command_out_and_the_next_gets_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            assert_eq!(read_command(&mut r), vec![b"GET".to_vec(), b"a".to_vec()]);
            // Answered only once the client gave up on it.
            go_rx.recv().unwrap();
            w.write_all(b"$4\r\nlate\r\n").unwrap();
            assert_eq!(read_command(&mut r), vec![b"GET".to_vec(), b"b".to_vec()]);
            w.write_all(b"$2\r\nok\r\n").unwrap();
        });
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                // A watchdog that never fails the command would hang here.
                let hung = std::time::Duration::from_secs(30);
                glommio::timer::timeout(hung, async move {
                    let c = RespConn::connect(addr, 200, None).await.unwrap();
                    let t = Target::Resp(c);
                    let t0 = Instant::now();
                    let r = t.get(b"a").await;
                    assert!(matches!(r, Err(Error::Timeout(200))), "{r:?}");
                    assert!(
                        t0.elapsed() >= Duration::from_millis(200),
                        "{:?}",
                        t0.elapsed()
                    );
                    go_tx.send(()).unwrap();
                    let r = t.get(b"b").await.unwrap();
                    assert_eq!(r.as_deref(), Some(&b"ok"[..]));
                    Ok(())
                })
                .await
                .expect("the calls ended within 30 s");
            })
            .unwrap()
            .join()
            .unwrap();
        server.join().unwrap();
    }
}
