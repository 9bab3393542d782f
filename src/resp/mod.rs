//! The RESP port (issue #20): Redis's protocol on `--listen-resp`, so
//! `redis-cli`, `redis-benchmark` and any Redis client library use the
//! cluster unchanged.
//!
//! Each shard listens on the RESP address's port + its index (as the
//! client port does) and serves its connections itself. A connection's
//! commands go through the shard's own Rust client (`client::Client`,
//! connected to this node's client port): it routes each key to its
//! range's leader, wherever that is (one internal hop for a client that
//! cannot route), and answers with the native client's guarantees: a
//! write is acknowledged once committed and applied, a read is
//! linearizable (`--read-mode`). The shard's client is one exactly-once
//! session: a write it retries internally (a leader change, a lost
//! answer) is applied once.
//!
//! A connection's commands run one after the other, in the order they
//! came (a pipeline included), as Redis runs them: a later command sees
//! what an earlier one wrote, and another connection never sees a later
//! write without the earlier ones. The answers to what one read brought
//! in (a pipeline) go out in one write.
//!
//! Frames are RESP2 (`HELLO 3` switches the answers to RESP3), parsed and
//! encoded with the `redis-protocol` crate; inline commands (`PING` typed
//! into a bare socket) are read too. A frame that does not parse gets an
//! error and closes its connection only; one larger than
//! [`frame_bytes_max`] is refused when that many bytes came without it
//! ending, so nothing larger is ever buffered.

mod commands;
mod glob;

pub use glob::matches as glob_matches;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use redis_protocol::resp2::types::{BytesFrame as Frame2, Resp2Frame};
use redis_protocol::resp3::types::BytesFrame as Frame3;

use crate::client::{Client, ClientConfig};

/// Bytes beyond the key and value limits that one command's frame may
/// take (its headers, the command name, options such as `NX`):
/// [`frame_bytes_max`].
pub const RESP_FRAME_OVERHEAD_BYTES: usize = 64 << 10;

/// Keys `KEYS` answers at most; past it, it fails and names `SCAN`
/// (Redis answers them all, blocking its one thread; here it would hold
/// every key of the cluster in one answer).
pub const RESP_KEYS_MAX: usize = 100_000;

/// `SCAN` cursors one connection keeps (each the key its next call starts
/// at); the oldest is forgotten past it, and a call with it is refused
/// (`ERR invalid cursor`) rather than answered from the start.
pub const RESP_SCAN_CURSORS_MAX: usize = 64;

/// `SCAN`'s `COUNT` when not given (Redis's default).
pub const RESP_SCAN_COUNT_DEFAULT: u32 = 10;

/// Keys one page of a whole-keyspace walk (`DBSIZE`, `KEYS`, `INFO
/// keyspace`) reads.
pub const RESP_WALK_PAGE_KEYS: u32 = 1024;

/// How long a command waits for the shard's client to connect to this
/// node's client port before it fails (a node that is still starting).
pub const RESP_BACKEND_CONNECT_WAIT_MS: u64 = 5_000;

/// The largest frame (one command) a connection may send: a key and a
/// value at their limits plus [`RESP_FRAME_OVERHEAD_BYTES`]. Bigger
/// commands (an `MSET` of many pairs) must be split.
pub fn frame_bytes_max(key_bytes_max: usize, value_bytes_max: usize) -> usize {
    key_bytes_max + value_bytes_max + RESP_FRAME_OVERHEAD_BYTES
}

/// What a shard's RESP service needs of the node's settings.
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// This node's id and the serving shard.
    pub node: u64,
    pub shard: u32,
    pub cluster_id: u64,
    /// This node's client address (shard 0): the shard's client connects
    /// there and learns the rest of the cluster from it.
    pub own_client_addr: SocketAddr,
    /// The address this shard's RESP listener is bound to (`INFO`).
    pub listen: SocketAddr,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

/// What every connection of a shard shares: the shard's client and the
/// counters `INFO` shows.
pub(crate) struct Service {
    cfg: RespConfig,
    client: RefCell<Option<Client>>,
    connecting: Cell<bool>,
    started: Instant,
    next_conn_id: Cell<u64>,
    conns_open: Cell<u64>,
    conns_total: Cell<u64>,
    commands_total: Cell<u64>,
}

impl Service {
    /// The shard's client, connected on first use (and again if the node
    /// was not serving yet); an error names what to check.
    async fn client(&self) -> Result<Client, String> {
        let deadline = Instant::now() + Duration::from_millis(RESP_BACKEND_CONNECT_WAIT_MS);
        loop {
            if let Some(c) = self.client.borrow().as_ref() {
                return Ok(c.clone());
            }
            if !self.connecting.get() {
                self.connecting.set(true);
                let mut cfg = ClientConfig::new(vec![self.cfg.own_client_addr]);
                cfg.cluster_id = self.cfg.cluster_id;
                let r = Client::connect(cfg).await;
                self.connecting.set(false);
                match r {
                    Ok(c) => {
                        *self.client.borrow_mut() = Some(c.clone());
                        return Ok(c);
                    }
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!(
                            "this node's client port {} does not serve yet: {e}",
                            self.cfg.own_client_addr
                        ))
                    }
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no connection to this node's client port {} within {RESP_BACKEND_CONNECT_WAIT_MS} ms",
                    self.cfg.own_client_addr
                ));
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Serves RESP connections accepted on `listener` until `stop` is set.
pub async fn serve(listener: glommio::net::TcpListener, cfg: RespConfig, stop: Rc<Cell<bool>>) {
    let svc = Rc::new(Service {
        cfg,
        client: RefCell::new(None),
        connecting: Cell::new(false),
        started: Instant::now(),
        next_conn_id: Cell::new(1),
        conns_open: Cell::new(0),
        conns_total: Cell::new(0),
        commands_total: Cell::new(0),
    });
    let mut failures = 0u32;
    while !stop.get() {
        let accepted = glommio::timer::timeout(Duration::from_millis(200), async {
            Ok(listener.accept().await)
        })
        .await;
        let stream = match accepted {
            Err(_) => continue, // a look at `stop`
            Ok(Ok(s)) => {
                failures = 0;
                s
            }
            Ok(Err(e)) => {
                // Out of descriptors, say: back off, go on (the clients
                // connected keep being served).
                failures = failures.saturating_add(1);
                if failures.is_power_of_two() {
                    tracing::warn!(
                        shard = svc.cfg.shard,
                        "RESP port: accepting a connection: {e}"
                    );
                }
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        let stop = stop.clone();
        glommio::spawn_local(async move {
            svc.conns_open.set(svc.conns_open.get() + 1);
            svc.conns_total.set(svc.conns_total.get() + 1);
            if let Err(e) = connection(&svc, stream, &stop).await {
                tracing::debug!(shard = svc.cfg.shard, "RESP connection closed: {e}");
            }
            svc.conns_open.set(svc.conns_open.get() - 1);
        })
        .detach();
    }
}

/// One connection's own state.
pub(crate) struct ConnState {
    pub id: u64,
    /// 2 or 3 (`HELLO`).
    pub proto: u8,
    pub name: Option<Bytes>,
    /// `SCAN` cursor → the key its next call starts at.
    pub cursors: BTreeMap<u64, Bytes>,
    pub next_cursor: u64,
    /// `QUIT` was asked: close once its answer is out.
    pub quit: bool,
}

/// An answer, whatever the protocol version: encoded as RESP2 or RESP3
/// by the connection's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Null,
    Array(Vec<Reply>),
    /// A map in RESP3; a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }

    pub fn err(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    fn to_resp2(&self) -> Frame2 {
        match self {
            Reply::Status(s) => Frame2::SimpleString(Bytes::from(s.clone())),
            Reply::Error(e) => Frame2::Error(e.clone().into()),
            Reply::Int(i) => Frame2::Integer(*i),
            Reply::Bulk(b) => Frame2::BulkString(b.clone()),
            Reply::Null => Frame2::Null,
            Reply::Array(v) => Frame2::Array(v.iter().map(Reply::to_resp2).collect()),
            Reply::Map(kv) => Frame2::Array(
                kv.iter()
                    .flat_map(|(k, v)| [k.to_resp2(), v.to_resp2()])
                    .collect(),
            ),
        }
    }

    fn to_resp3(&self) -> Frame3 {
        match self {
            Reply::Status(s) => Frame3::SimpleString {
                data: Bytes::from(s.clone()),
                attributes: None,
            },
            Reply::Error(e) => Frame3::SimpleError {
                data: e.clone().into(),
                attributes: None,
            },
            Reply::Int(i) => Frame3::Number {
                data: *i,
                attributes: None,
            },
            Reply::Bulk(b) => Frame3::BlobString {
                data: b.clone(),
                attributes: None,
            },
            Reply::Null => Frame3::Null,
            Reply::Array(v) => Frame3::Array {
                data: v.iter().map(Reply::to_resp3).collect(),
                attributes: None,
            },
            Reply::Map(kv) => Frame3::Map {
                data: kv
                    .iter()
                    .map(|(k, v)| (k.to_resp3(), v.to_resp3()))
                    .collect(),
                attributes: None,
            },
        }
    }

    /// Appends this answer to `out`, in protocol version `proto`.
    pub fn encode(&self, proto: u8, out: &mut BytesMut) {
        let r = if proto == 3 {
            redis_protocol::resp3::encode::complete::extend_encode(out, &self.to_resp3(), false)
        } else {
            redis_protocol::resp2::encode::extend_encode(out, &self.to_resp2(), false)
        };
        // Encoding a frame built here cannot fail (no size limit applies
        // to an extended buffer); were it to, the client gets an error.
        if let Err(e) = r {
            let msg = Reply::Error(format!("ERR encoding the answer: {e}"));
            let _ = redis_protocol::resp2::encode::extend_encode(out, &msg.to_resp2(), false);
        }
    }
}

/// What one look at the read buffer found.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    /// A command: its name and arguments.
    Command(Vec<Bytes>),
    /// An empty inline line (ignored, as Redis does).
    Empty,
    /// More bytes are needed.
    Incomplete,
    /// Not RESP: the connection gets this error and is closed.
    Invalid(String),
}

/// Takes the next command off `buf`: a RESP array of bulk strings, or an
/// inline command (a line of words). A frame not ended within
/// `frame_max` bytes is refused.
pub(crate) fn parse(buf: &mut BytesMut, frame_max: usize) -> Parsed {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf[0] != b'*' {
        // Inline: up to the end of the line.
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > frame_max {
                return Parsed::Invalid(format!(
                    "ERR Protocol error: an inline command longer than {frame_max} bytes"
                ));
            }
            return Parsed::Incomplete;
        };
        let line = buf.split_to(nl + 1).freeze();
        let text = line.slice(..nl);
        let words: Vec<Bytes> = text
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| text.slice_ref(w))
            .collect();
        return if words.is_empty() {
            Parsed::Empty
        } else {
            Parsed::Command(words)
        };
    }
    match redis_protocol::resp2::decode::decode_bytes_mut(buf) {
        Ok(Some((frame, _, _))) => match frame {
            Frame2::Array(items) if !items.is_empty() => {
                let mut args = Vec::with_capacity(items.len());
                for it in items {
                    match it {
                        Frame2::BulkString(b) | Frame2::SimpleString(b) => args.push(b),
                        Frame2::Integer(i) => args.push(Bytes::from(i.to_string())),
                        other => {
                            return Parsed::Invalid(format!(
                                "ERR Protocol error: a command's arguments are bulk strings, not {:?}",
                                other.kind()
                            ))
                        }
                    }
                }
                Parsed::Command(args)
            }
            Frame2::Array(_) => Parsed::Empty,
            other => Parsed::Invalid(format!(
                "ERR Protocol error: expected an array of bulk strings, got {:?}",
                other.kind()
            )),
        },
        Ok(None) if buf.len() > frame_max => Parsed::Invalid(format!(
            "ERR Protocol error: a command longer than {frame_max} bytes (the key and value limits plus {RESP_FRAME_OVERHEAD_BYTES}): split it"
        )),
        Ok(None) => Parsed::Incomplete,
        Err(e) => Parsed::Invalid(format!("ERR Protocol error: {e}")),
    }
}

/// Serves one connection until it closes, sends what is not RESP, quits
/// or the shard stops.
async fn connection(
    svc: &Rc<Service>,
    mut stream: glommio::net::TcpStream,
    stop: &Cell<bool>,
) -> std::io::Result<()> {
    let frame_max = frame_bytes_max(svc.cfg.key_bytes_max, svc.cfg.value_bytes_max);
    let id = svc.next_conn_id.get();
    svc.next_conn_id.set(id + 1);
    let mut st = ConnState {
        id,
        proto: 2,
        name: None,
        cursors: BTreeMap::new(),
        next_cursor: 1,
        quit: false,
    };
    let mut inbuf = BytesMut::with_capacity(16 << 10);
    let mut out = BytesMut::with_capacity(16 << 10);
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        inbuf.extend_from_slice(&chunk[..n]);
        let mut close = false;
        loop {
            match parse(&mut inbuf, frame_max) {
                Parsed::Incomplete => break,
                Parsed::Empty => continue,
                Parsed::Invalid(why) => {
                    Reply::Error(why).encode(st.proto, &mut out);
                    close = true;
                    break;
                }
                Parsed::Command(args) => {
                    svc.commands_total.set(svc.commands_total.get() + 1);
                    let reply = commands::run(svc, &mut st, args).await;
                    reply.encode(st.proto, &mut out);
                    if st.quit {
                        close = true;
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close || stop.get() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
