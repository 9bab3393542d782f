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
//! Answers are RESP2 (`HELLO 3` switches them to RESP3), encoded with the
//! `redis-protocol` crate. Requests are read by [`Parser`], our own: they
//! are only arrays of bulk strings or inline lines (`PING` typed into a
//! bare socket), and the crate's decoder recurses into nested arrays
//! without a bound, so a few hundred KB of `*1\r\n` from any client would
//! overflow the shard's stack and abort the node. A frame that does not
//! parse gets an error and closes its connection only; one larger than
//! [`frame_bytes_max`] is refused as soon as a header announces it (or
//! that many bytes came without it ending), so nothing larger is ever
//! buffered.

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
use redis_protocol::resp2::types::BytesFrame as Frame2;
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

/// `SCAN` cursors a shard keeps (each the key its next call starts at);
/// the oldest is forgotten past it, and a call with it is refused (`ERR
/// invalid cursor`) rather than answered from the start.
pub const RESP_SCAN_CURSORS_MAX: usize = 4096;

/// Keys one `SCAN` call reads at most, whatever its `COUNT` (a hint, as
/// in Redis).
pub const RESP_SCAN_COUNT_MAX: u32 = 10_000;

/// Answers to a pipeline are written together up to this many bytes;
/// past it they are written at once (a pipeline of large `GET`s is never
/// held whole).
pub const RESP_REPLY_FLUSH_BYTES: usize = 1 << 20;

/// Bytes of the RESP password (`--resp-password-file`) at most. Redis
/// sets none; this keeps a file that is not a password (a key file
/// given by mistake) from being taken for one.
pub const RESP_PASSWORD_BYTES_MAX: usize = 512;

/// The largest frame a connection that has not given the password yet may
/// send (Redis 6.2.6 bounds such clients too): `AUTH` and `HELLO` fit, a
/// stranger cannot make the node buffer a value-sized frame.
pub const RESP_UNAUTHED_FRAME_BYTES_MAX: usize = 16 << 10;

/// The most arguments a command of a connection that has not given the
/// password yet may announce (Redis's bound, 10: `HELLO 3 AUTH default
/// PASS SETNAME NAME` is 7); more gets Redis's "unauthenticated multibulk
/// length" error and the connection is closed.
pub const RESP_UNAUTHED_ARGS_MAX: usize = 10;

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
    /// Connections this shard keeps open (`--resp-conns-max` over the
    /// shards); one more is answered `ERR max number of clients reached`
    /// (Redis's words) and closed.
    pub conns_max: usize,
    /// The password a connection gives before any other command
    /// (`--resp-password-file`); `None`: none asked.
    pub password: Option<Bytes>,
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
    conns_refused: Cell<u64>,
    commands_total: Cell<u64>,
    /// `SCAN` cursor → (the key its next call starts at, the cursor it
    /// came from); bounded by [`RESP_SCAN_CURSORS_MAX`], oldest out.
    cursors: RefCell<BTreeMap<u64, (Bytes, u64)>>,
    /// The next cursor id: from a random start per shard and start, so a
    /// cursor of another node, shard or run is refused, not taken for
    /// another walk's.
    next_cursor: Cell<u64>,
}

impl Service {
    /// A new `SCAN` cursor for a walk that goes on at `at`, following
    /// `from` (0: the walk's start), whose own predecessor goes.
    fn new_cursor(&self, at: Bytes, from: u64) -> u64 {
        let id = self.next_cursor.get();
        self.next_cursor.set(id.wrapping_add(1).max(1));
        let mut t = self.cursors.borrow_mut();
        if let Some(&(_, parent)) = t.get(&from) {
            t.remove(&parent);
        }
        t.insert(id, (at, from));
        while t.len() > RESP_SCAN_CURSORS_MAX {
            t.pop_first();
        }
        id
    }

    /// A walk ended at `cursor`: it and its predecessor go.
    fn forget_cursor(&self, cursor: u64) {
        let mut t = self.cursors.borrow_mut();
        if let Some((_, parent)) = t.remove(&cursor) {
            t.remove(&parent);
        }
    }

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
        conns_refused: Cell::new(0),
        commands_total: Cell::new(0),
        cursors: RefCell::new(BTreeMap::new()),
        // A random first id per shard and start (the client ids' generator;
        // below 2^62, so ids stay plain positive integers that never wrap
        // in practice).
        next_cursor: Cell::new((crate::client::fresh_client_id() >> 2).max(1)),
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
        if svc.conns_open.get() as usize >= svc.cfg.conns_max {
            // Said, then closed: what Redis does past its maxclients.
            let svc = svc.clone();
            glommio::spawn_local(async move {
                let mut stream = stream;
                let mut out = BytesMut::new();
                Reply::err("ERR max number of clients reached").encode(2, &mut out);
                let _ = glommio::timer::timeout(Duration::from_secs(1), async {
                    Ok(stream.write_all(&out).await)
                })
                .await;
                svc.conns_refused.set(svc.conns_refused.get() + 1);
            })
            .detach();
            continue;
        }
        // Counted before its task runs: a burst of accepts cannot pass
        // the cap.
        svc.conns_open.set(svc.conns_open.get() + 1);
        svc.conns_total.set(svc.conns_total.get() + 1);
        let svc = svc.clone();
        let stop = stop.clone();
        glommio::spawn_local(async move {
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
    /// `QUIT` was asked: close once its answer is out.
    pub quit: bool,
    /// A `MULTI` was refused and no `EXEC` or `DISCARD` came yet: the
    /// commands meant for the transaction are refused too, not run.
    pub in_multi: bool,
    /// The password was given (`AUTH`), or none is asked.
    pub authed: bool,
}

/// An answer, whatever the protocol version: encoded as RESP2 or RESP3
/// by the connection's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// A status line: mostly a constant (`OK`, `PONG`), answered without
    /// an allocation.
    Status(std::borrow::Cow<'static, str>),
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
            Reply::Status(s) => Frame2::SimpleString(status_bytes(s)),
            Reply::Error(e) => Frame2::Error(one_line(e).into()),
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
                data: status_bytes(s),
                attributes: None,
            },
            Reply::Error(e) => Frame3::SimpleError {
                data: one_line(e).into(),
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

/// `s` with CR and LF as spaces: a status or an error is one line, and
/// one that echoes a client's bytes must not end early and forge answers
/// (Redis does the same to its error strings).
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// A status's bytes: a constant one shared, not copied (hence the `Cow`:
/// a `&str` would not say the text is `'static`).
#[allow(clippy::ptr_arg)]
fn status_bytes(s: &std::borrow::Cow<'static, str>) -> Bytes {
    match s {
        std::borrow::Cow::Borrowed(c) if !c.contains(['\r', '\n']) => {
            Bytes::from_static(c.as_bytes())
        }
        s => Bytes::from(one_line(s)),
    }
}

/// What one look at the read buffer found.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    /// A command: its name and arguments.
    Command(Vec<Bytes>),
    /// An empty inline line or an empty array (ignored, as Redis does).
    Empty,
    /// More bytes are needed.
    Incomplete,
    /// Not RESP: the connection gets this error and is closed.
    Invalid(String),
}

/// Longest line a request may hold without ending: an array's or a bulk
/// string's header (`*N`, `$LEN`), or an inline command (Redis's
/// `PROTO_INLINE_MAX_SIZE`).
pub const RESP_INLINE_BYTES_MAX: usize = 64 << 10;

/// Longest header line (`*N\r\n`, `$LEN\r\n`): a sign, 20 digits, CRLF.
const HEADER_BYTES_MAX: usize = 24;

/// A request parser that resumes where the last bytes ended: each byte is
/// looked at once however the frame is cut (no pass over the whole buffer
/// per read), and requests are only arrays of bulk strings (or inline
/// lines), read without recursion (a nested array is refused: a crate's
/// recursive decoder overflows the stack on `*1\r\n` repeated).
#[derive(Debug, Default)]
pub(crate) struct Parser {
    /// Arguments the array being read announced (`None`: between frames).
    want: Option<usize>,
    args: Vec<Bytes>,
    /// The bulk string whose header was read, waiting for its bytes.
    bulk: Option<usize>,
    /// Bytes of the frame so far (headers included).
    frame_bytes: usize,
    /// Most arguments an array may announce (`None`: no bound but the
    /// frame's bytes): [`RESP_UNAUTHED_ARGS_MAX`] before the password.
    args_max: Option<usize>,
}

/// The integer of a header line (`*N`/`$LEN` after its first byte).
fn header_int(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

impl Parser {
    /// Bounds the arguments of the arrays read from now on (`None`: no
    /// bound but the frame's bytes).
    pub fn limit_args(&mut self, max: Option<usize>) {
        self.args_max = max;
    }

    /// Takes the next command off `buf` (consuming what it read), or
    /// says more bytes are needed or that they are not RESP. A frame
    /// that would pass `frame_max` bytes is refused as soon as a header
    /// says so, or once that many bytes came without it ending.
    pub fn next(&mut self, buf: &mut BytesMut, frame_max: usize) -> Parsed {
        let Some(want) = self.want else {
            return self.start(buf, frame_max);
        };
        while self.args.len() < want {
            let len = match self.bulk {
                Some(len) => len,
                None => {
                    let line = match take_line(buf, HEADER_BYTES_MAX) {
                        Ok(Some(l)) => l,
                        Ok(None) => return Parsed::Incomplete,
                        Err(()) => return invalid("a bulk string header that does not end"),
                    };
                    if line.first() != Some(&b'$') {
                        return invalid(
                            "a command's arguments are bulk strings ($LEN), nothing else",
                        );
                    }
                    let Some(len) = header_int(&line[1..]).and_then(|n| usize::try_from(n).ok())
                    else {
                        return invalid("a bulk string length that is not a number >= 0");
                    };
                    self.frame_bytes += line.len() + 2;
                    if self.frame_bytes.saturating_add(len) > frame_max {
                        return too_long(frame_max);
                    }
                    self.bulk = Some(len);
                    len
                }
            };
            if buf.len() < len + 2 {
                return Parsed::Incomplete;
            }
            if &buf[len..len + 2] != b"\r\n" {
                return invalid("a bulk string not followed by CRLF");
            }
            let arg = buf.split_to(len).freeze();
            let _ = buf.split_to(2);
            self.frame_bytes += len + 2;
            self.bulk = None;
            self.args.push(arg);
        }
        self.want = None;
        self.frame_bytes = 0;
        Parsed::Command(std::mem::take(&mut self.args))
    }

    /// A new frame: an array's header, or an inline line.
    fn start(&mut self, buf: &mut BytesMut, frame_max: usize) -> Parsed {
        if buf.is_empty() {
            return Parsed::Incomplete;
        }
        if buf[0] != b'*' {
            let limit = RESP_INLINE_BYTES_MAX.min(frame_max);
            let line = match take_line(buf, limit) {
                Ok(Some(l)) => l,
                Ok(None) => return Parsed::Incomplete,
                Err(()) => {
                    return Parsed::Invalid(format!(
                        "ERR Protocol error: an inline command longer than {limit} bytes"
                    ))
                }
            };
            let Some(words) = split_inline(&line) else {
                return invalid("unbalanced quotes in request");
            };
            return if words.is_empty() {
                Parsed::Empty
            } else {
                Parsed::Command(words)
            };
        }
        let line = match take_line(buf, HEADER_BYTES_MAX) {
            Ok(Some(l)) => l,
            Ok(None) => return Parsed::Incomplete,
            Err(()) => return invalid("an array header that does not end"),
        };
        let Some(n) = header_int(&line[1..]) else {
            return invalid("an array length that is not a number");
        };
        if n <= 0 {
            // `*0` and `*-1`: nothing to do (Redis skips them).
            return Parsed::Empty;
        }
        if self.args_max.is_some_and(|max| n as u64 > max as u64) {
            // Redis's words and rule (`processMultibulkBuffer`): a client
            // that has not authenticated announces at most 10.
            return Parsed::Invalid("ERR Protocol error: unauthenticated multibulk length".into());
        }
        // Each argument takes at least `$0\r\n\r\n` on the wire and a
        // `Bytes` here: a count whose arguments the frame limit cannot
        // hold (memory counted, not only wire bytes) is refused before
        // anything is kept for it.
        let n = n as u64;
        let per_arg = (6 + std::mem::size_of::<Bytes>()) as u64;
        if n.saturating_mul(per_arg) > frame_max as u64 {
            return too_long(frame_max);
        }
        self.want = Some(n as usize);
        self.args = Vec::with_capacity((n as usize).min(1024));
        self.frame_bytes = line.len() + 2;
        self.next(buf, frame_max)
    }
}

/// The words of an inline command, by Redis's rules (`sdssplitargs`):
/// separated by whitespace; `"..."` with the escapes `\n \r \t \b \a`,
/// `\xHH` and `\` before any other byte (that byte); `'...'` with `\'`
/// only; a closing quote must be followed by whitespace or the end.
/// `None` if a quote is not closed so (the connection gets Redis's
/// "unbalanced quotes" error). A word without quotes or escapes is a
/// slice of `line`, not a copy.
pub(crate) fn split_inline(line: &Bytes) -> Option<Vec<Bytes>> {
    // A NUL ends the line (Redis reads it as a C string; it did not
    // answer such a line at all when tried).
    let b = match line.iter().position(|&c| c == 0) {
        Some(nul) => &line[..nul],
        None => &line[..],
    };
    // C's `isspace`: what is skipped between words and may follow a
    // closing quote; a word without quotes ends at fewer bytes.
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let ends_word = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    // The byte of `\xHH` at `i`, if that is what is there.
    let hex_pair = |i: usize| match (b.get(i + 1), b.get(i + 2), b.get(i + 3)) {
        (Some(b'x'), Some(&h), Some(&l)) => Some(hex(h)? << 4 | hex(l)?),
        _ => None,
    };
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && space(b[i]) {
            i += 1;
        }
        if i == b.len() {
            return Some(words);
        }
        let start = i;
        let mut word: Option<Vec<u8>> = None; // set once the word differs from its bytes
        let mut end = i;
        'word: while i < b.len() && !ends_word(b[i]) {
            let q = b[i];
            if q != b'"' && q != b'\'' {
                if let Some(w) = word.as_mut() {
                    w.push(q);
                }
                i += 1;
                end = i;
                continue;
            }
            let w = word.get_or_insert_with(|| b[start..end].to_vec());
            i += 1;
            loop {
                let c = *b.get(i)?;
                match (q, c) {
                    (b'"', b'\\') if hex_pair(i).is_some() => {
                        w.extend(hex_pair(i));
                        i += 4;
                    }
                    (b'"', b'\\') if i + 1 < b.len() => {
                        w.push(match b[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                    }
                    (b'\'', b'\\') if b.get(i + 1) == Some(&b'\'') => {
                        w.push(b'\'');
                        i += 2;
                    }
                    _ if c == q => {
                        i += 1;
                        if i < b.len() && !space(b[i]) {
                            return None;
                        }
                        // A closing quote ends the word (Redis: `done`).
                        break 'word;
                    }
                    _ => {
                        w.push(c);
                        i += 1;
                    }
                }
            }
        }
        words.push(match word {
            Some(w) => Bytes::from(w),
            None => line.slice(start..end),
        });
    }
}

/// The line at the start of `buf` (without its CRLF, or a lone LF for an
/// inline command), taken off `buf`; `Ok(None)` if it has not ended yet,
/// `Err` if it has not ended within `max` bytes.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ()> {
    let look = buf.len().min(max + 2);
    let Some(nl) = buf[..look].iter().position(|&b| b == b'\n') else {
        return if buf.len() > max + 1 {
            Err(())
        } else {
            Ok(None)
        };
    };
    let line = buf.split_to(nl + 1).freeze();
    let end = if nl > 0 && line[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Ok(Some(line.slice(..end)))
}

fn invalid(what: &str) -> Parsed {
    Parsed::Invalid(format!("ERR Protocol error: {what}"))
}

fn too_long(frame_max: usize) -> Parsed {
    Parsed::Invalid(format!(
        "ERR Protocol error: a command longer than {frame_max} bytes (the key and value limits plus {RESP_FRAME_OVERHEAD_BYTES}): split it"
    ))
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
        quit: false,
        in_multi: false,
        authed: svc.cfg.password.is_none(),
    };
    let mut parser = Parser::default();
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
            let limit = if st.authed {
                frame_max
            } else {
                RESP_UNAUTHED_FRAME_BYTES_MAX.min(frame_max)
            };
            parser.limit_args((!st.authed).then_some(RESP_UNAUTHED_ARGS_MAX));
            match parser.next(&mut inbuf, limit) {
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
                    if out.len() >= RESP_REPLY_FLUSH_BYTES {
                        // A pipeline of large answers goes out as it
                        // comes, not all held at once.
                        stream.write_all(&out).await?;
                        out.clear();
                    }
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
