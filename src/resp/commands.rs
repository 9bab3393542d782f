//! The commands of the RESP port, with Redis's semantics and error
//! strings where they exist (see the module docs of `resp` for the
//! guarantees). Each is carried out through the shard's Rust client.

use bytes::Bytes;

use super::{ConnState, Reply, Service};
use crate::client::{Client, Error};

/// One command answered, as `COMMAND` / `COMMAND INFO` describe it
/// (Redis's fields: arity, negative for "at least"; flags; the first and
/// last key's argument and the step between keys, 0 for none, -1 for the
/// last argument).
struct CommandInfo {
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
}

const fn cmd(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> CommandInfo {
    CommandInfo {
        name,
        arity,
        flags,
        keys,
    }
}

const WRITE: &[&str] = &["write"];
const READ: &[&str] = &["readonly"];
const OTHER: &[&str] = &["fast"];
const NONE: (i64, i64, i64) = (0, 0, 0);
const ONE: (i64, i64, i64) = (1, 1, 1);
const EACH: (i64, i64, i64) = (1, -1, 1);

/// The commands answered, with Redis's arity, flags and key positions
/// (`COMMAND`, `COMMAND INFO`, `COMMAND COUNT`); any other command gets
/// Redis's unknown-command error.
const COMMANDS: &[CommandInfo] = &[
    cmd("PING", -1, OTHER, NONE),
    cmd("ECHO", 2, OTHER, NONE),
    cmd("HELLO", -1, OTHER, NONE),
    cmd("QUIT", -1, OTHER, NONE),
    cmd("SELECT", 2, OTHER, NONE),
    cmd("AUTH", -2, OTHER, NONE),
    cmd("CLIENT", -2, OTHER, NONE),
    cmd("COMMAND", -1, OTHER, NONE),
    cmd("CONFIG", -2, OTHER, NONE),
    cmd("INFO", -1, OTHER, NONE),
    cmd("DBSIZE", 1, READ, NONE),
    cmd("GET", 2, READ, ONE),
    cmd("SET", -3, WRITE, ONE),
    cmd("GETSET", 3, WRITE, ONE),
    cmd("GETDEL", 2, WRITE, ONE),
    cmd("DEL", -2, WRITE, EACH),
    cmd("UNLINK", -2, WRITE, EACH),
    cmd("EXISTS", -2, READ, EACH),
    cmd("MGET", -2, READ, EACH),
    cmd("MSET", -3, WRITE, (1, -1, 2)),
    cmd("SETNX", 3, WRITE, ONE),
    cmd("STRLEN", 2, READ, ONE),
    cmd("SCAN", -2, READ, NONE),
    cmd("KEYS", 2, READ, NONE),
    cmd("TYPE", 2, READ, ONE),
    cmd("INCR", 2, WRITE, ONE),
    cmd("DECR", 2, WRITE, ONE),
    cmd("INCRBY", 3, WRITE, ONE),
    cmd("DECRBY", 3, WRITE, ONE),
    cmd("APPEND", 3, WRITE, ONE),
];

impl CommandInfo {
    /// Redis 7's ten fields: name, arity, flags, first key, last key,
    /// step, ACL categories, tips, key specs, subcommands (the last four
    /// empty here).
    fn reply(&self) -> Reply {
        let flags = self
            .flags
            .iter()
            .map(|&f| Reply::Status(f.into()))
            .collect();
        Reply::Array(vec![
            Reply::bulk(self.name.to_ascii_lowercase()),
            Reply::Int(self.arity),
            Reply::Array(flags),
            Reply::Int(self.keys.0),
            Reply::Int(self.keys.1),
            Reply::Int(self.keys.2),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
        ])
    }
}

/// The answer to `MULTI` (and `WATCH`): no transactions here.
const NO_MULTI: &str = "ERR MULTI is not supported: ringraft has no multi-key transactions (each command is atomic on its own); send the commands without MULTI (redis-py: pipeline(transaction=False))";

/// `CONFIG GET`'s answers: what `redis-benchmark` and client libraries
/// ask for, as they are true here (every write is fsynced before its
/// answer: Redis's `appendfsync always`; there is no RDB `save`).
const CONFIG: &[(&str, &str)] = &[
    ("appendonly", "yes"),
    ("appendfsync", "always"),
    ("save", ""),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("cluster-enabled", "no"),
];

fn arity(name: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn syntax() -> Reply {
    Reply::err("ERR syntax error")
}

fn not_integer() -> Reply {
    Reply::err("ERR value is not an integer or out of range")
}

/// A client error as Redis clients expect one: a code word, then text.
/// A write whose outcome is not known (no answer in time: it may have
/// been applied) says so with its own code word, `TIMEOUT`, so a checker
/// (ringraft-load's `--check`) does not take it for one that did nothing.
fn failed(e: Error) -> Reply {
    let code = if e.outcome_unknown() {
        "TIMEOUT"
    } else {
        "ERR"
    };
    Reply::err(format!("{code} {e}"))
}

/// An integer argument as Redis reads one (`string2ll`: no `+`, no
/// leading zeros, no spaces).
fn int_arg(b: &[u8]) -> Option<i64> {
    crate::kv::redis_integer(b)
}

/// Redis's answer to `AUTH` when no password is configured.
const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// Redis's answer to a wrong password (or a user other than `default`).
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Checks `AUTH [user] pass` (Redis 6's forms; the only user is
/// `default`) against the configured password and marks the connection
/// authenticated if it matches. A failed `AUTH` leaves the connection as
/// it was, as in Redis.
fn authenticate(svc: &Service, st: &mut ConnState, user: Option<&Bytes>, pass: &Bytes) -> Reply {
    let user_ok = user.is_none_or(|u| &u[..] == b"default");
    let Some(want) = &svc.cfg.password else {
        // No password: Redis's `default` user is `nopass` (any password
        // is right for it); `AUTH PASS` alone says none is configured.
        return match (user, user_ok) {
            (None, _) => Reply::err(NO_PASSWORD),
            (Some(_), true) => Reply::ok(),
            (Some(_), false) => Reply::err(WRONGPASS),
        };
    };
    if user_ok && same_secret(want, pass) {
        st.authed = true;
        Reply::ok()
    } else {
        Reply::err(WRONGPASS)
    }
}

/// `a == b` in a time that depends on their lengths only, not on where
/// they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// Runs one command; its answer.
pub(super) async fn run(svc: &Service, st: &mut ConnState, args: Vec<Bytes>) -> Reply {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let a = &args[1..];
    // A password is asked (`--resp-password-file`): nothing but AUTH,
    // HELLO (which may carry AUTH) and QUIT before it is given, as in
    // Redis.
    if !st.authed && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT") {
        return Reply::err("NOAUTH Authentication required.");
    }
    // Transactions: refused whole. A client pipelining MULTI, its
    // commands and EXEC (redis-py's default pipeline) must not see the
    // commands applied one by one while the transaction fails.
    match name.as_str() {
        "MULTI" => {
            st.in_multi = true;
            return Reply::err(NO_MULTI);
        }
        "EXEC" if st.in_multi => {
            st.in_multi = false;
            return Reply::err(format!("EXECABORT Transaction discarded: {NO_MULTI}"));
        }
        "DISCARD" if st.in_multi => {
            st.in_multi = false;
            return Reply::ok();
        }
        "EXEC" | "DISCARD" => return Reply::err(format!("ERR {name} without MULTI")),
        "WATCH" | "UNWATCH" => return Reply::err(NO_MULTI),
        _ if st.in_multi => {
            return Reply::err(format!(
                "ERR {name} not run: it follows a MULTI, and {}",
                &NO_MULTI[4..]
            ))
        }
        _ => {}
    }
    // Commands that need no cluster first.
    match name.as_str() {
        "PING" => {
            return match a {
                [] => Reply::Status("PONG".into()),
                [m] => Reply::Bulk(m.clone()),
                _ => arity(&name),
            }
        }
        "ECHO" => {
            return match a {
                [m] => Reply::Bulk(m.clone()),
                _ => arity(&name),
            }
        }
        "QUIT" => {
            st.quit = true;
            return Reply::ok();
        }
        "SELECT" => {
            return match a {
                [db] if int_arg(db) == Some(0) => Reply::ok(),
                [db] if int_arg(db).is_some() => Reply::err("ERR DB index is out of range"),
                [_] => not_integer(),
                _ => arity(&name),
            }
        }
        "AUTH" => {
            return match a {
                [pass] => authenticate(svc, st, None, pass),
                [user, pass] => authenticate(svc, st, Some(user), pass),
                [] => arity(&name),
                _ => syntax(),
            }
        }
        "HELLO" => return hello(svc, st, a),
        "CLIENT" => return client_cmd(st, a),
        "COMMAND" => return command_cmd(a),
        "CONFIG" => return config_cmd(a),
        _ => {}
    }
    if !COMMANDS.iter().any(|c| c.name == name) {
        // As Redis shows them: at most 128 bytes of each, CR and LF out
        // (`Reply` encodes them as spaces).
        let show = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned();
        let mut shown = String::new();
        for x in a.iter().take(20) {
            shown.push_str(&format!("'{}' ", show(x)));
        }
        return Reply::err(format!(
            "ERR unknown command '{}', with args beginning with: {shown}",
            show(&args[0])
        ));
    }
    let c = match svc.client().await {
        Ok(c) => c,
        Err(why) => return Reply::err(format!("ERR {why}")),
    };
    match name.as_str() {
        "INFO" => info(svc, &c, a).await,
        "DBSIZE" if a.is_empty() => match count_keys(&c).await {
            Ok(n) => Reply::Int(n as i64),
            Err(e) => failed(e),
        },
        "GET" => match a {
            [k] => match c.get(k).await {
                Ok(Some(v)) => Reply::Bulk(v),
                Ok(None) => Reply::Null,
                Err(e) => failed(e),
            },
            _ => arity(&name),
        },
        "SET" if a.len() >= 2 => set(&c, a).await,
        "GETSET" => match a {
            [k, v] => swap(&c, k, Some(v)).await.map_or_else(failed, opt_bulk),
            _ => arity(&name),
        },
        "GETDEL" => match a {
            [k] => swap(&c, k, None).await.map_or_else(failed, opt_bulk),
            _ => arity(&name),
        },
        "DEL" | "UNLINK" if !a.is_empty() => {
            let mut n = 0;
            for k in a {
                match swap(&c, k, None).await {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => {}
                    Err(e) => return failed(e),
                }
            }
            Reply::Int(n)
        }
        "EXISTS" if !a.is_empty() => {
            let mut n = 0;
            for k in a {
                match c.get(k).await {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => {}
                    Err(e) => return failed(e),
                }
            }
            Reply::Int(n)
        }
        "MGET" if !a.is_empty() => {
            let mut out = Vec::with_capacity(a.len());
            for k in a {
                match c.get(k).await {
                    Ok(v) => out.push(opt_bulk(v)),
                    Err(e) => return failed(e),
                }
            }
            Reply::Array(out)
        }
        "MSET" if !a.is_empty() && a.len().is_multiple_of(2) => {
            for kv in a.chunks(2) {
                if let Err(e) = c.put(&kv[0], &kv[1]).await {
                    return failed(e);
                }
            }
            Reply::ok()
        }
        "SETNX" => match a {
            [k, v] => match c.cas(k, None, Some(v)).await {
                Ok((swapped, _)) => Reply::Int(i64::from(swapped)),
                Err(e) => failed(e),
            },
            _ => arity(&name),
        },
        "STRLEN" => match a {
            [k] => match c.get(k).await {
                Ok(v) => Reply::Int(v.map_or(0, |v| v.len() as i64)),
                Err(e) => failed(e),
            },
            _ => arity(&name),
        },
        "TYPE" => match a {
            [k] => match c.get(k).await {
                Ok(Some(_)) => Reply::Status("string".into()),
                Ok(None) => Reply::Status("none".into()),
                Err(e) => failed(e),
            },
            _ => arity(&name),
        },
        "INCR" | "DECR" => match a {
            [k] => incr(&c, k, if name == "INCR" { 1 } else { -1 }).await,
            _ => arity(&name),
        },
        "INCRBY" | "DECRBY" => match a {
            [k, by] => match int_arg(by) {
                Some(by) if name == "INCRBY" => incr(&c, k, by).await,
                Some(by) => match by.checked_neg() {
                    Some(by) => incr(&c, k, by).await,
                    None => Reply::err("ERR decrement would overflow"),
                },
                None => not_integer(),
            },
            _ => arity(&name),
        },
        "APPEND" => match a {
            [k, v] => match c.append(k, v).await {
                Ok(Some(len)) => Reply::Int(len as i64),
                Ok(None) => Reply::err(format!(
                    "ERR string exceeds maximum allowed size (--value-bytes-max {})",
                    svc.cfg.value_bytes_max
                )),
                Err(e) => failed(e),
            },
            _ => arity(&name),
        },
        "SCAN" if !a.is_empty() => scan(svc, &c, a).await,
        "KEYS" => match a {
            [pattern] => keys(&c, pattern).await,
            _ => arity(&name),
        },
        _ => arity(&name),
    }
}

/// `INCRBY key by` in one log entry (`Client::incr`), with Redis's
/// errors.
async fn incr(c: &Client, k: &[u8], by: i64) -> Reply {
    match c.incr(k, by).await {
        Ok(Ok(n)) => Reply::Int(n),
        Ok(Err(Some(v))) if crate::kv::redis_integer(&v).is_some() => {
            Reply::err("ERR increment or decrement would overflow")
        }
        Ok(Err(_)) => not_integer(),
        Err(e) => failed(e),
    }
}

fn opt_bulk(v: Option<Bytes>) -> Reply {
    v.map_or(Reply::Null, Reply::Bulk)
}

/// Sets `k` to `v` (`None`: deletes it) whatever it holds, atomically
/// (a compare-and-swap from the value last seen, asked again while
/// another write gets in between); the value it held.
async fn swap(c: &Client, k: &[u8], v: Option<&Bytes>) -> Result<Option<Bytes>, Error> {
    let mut seen = c.get(k).await?;
    loop {
        if seen.is_none() && v.is_none() {
            return Ok(None);
        }
        match c.cas(k, seen.as_deref(), v.map(|v| &v[..])).await? {
            (true, _) => return Ok(seen),
            (false, now) => seen = now,
        }
    }
}

/// `SET key value [NX | XX] [GET]`; expiry options are refused.
async fn set(c: &Client, a: &[Bytes]) -> Reply {
    let (k, v) = (&a[0], &a[1]);
    let (mut nx, mut xx, mut get) = (false, false, false);
    for o in &a[2..] {
        match o.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GET" => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                return Reply::err(format!(
                    "ERR SET {}: keys do not expire in ringraft (no TTLs yet); set without it",
                    String::from_utf8_lossy(o).to_ascii_uppercase()
                ))
            }
            _ => return syntax(),
        }
    }
    if nx && xx {
        return syntax();
    }
    let ok = |old: Option<Bytes>| if get { opt_bulk(old) } else { Reply::ok() };
    let skipped = |old: Option<Bytes>| if get { opt_bulk(old) } else { Reply::Null };
    if !nx && !xx && !get {
        return match c.put(k, v).await {
            Ok(()) => Reply::ok(),
            Err(e) => failed(e),
        };
    }
    if nx {
        return match c.cas(k, None, Some(v)).await {
            Ok((true, _)) => ok(None),
            Ok((false, old)) => skipped(old),
            Err(e) => failed(e),
        };
    }
    if !xx {
        // GET alone: the old value, whatever it was.
        return swap(c, k, Some(v)).await.map_or_else(failed, ok);
    }
    // XX: only over a value, compared and swapped from the one seen.
    let mut seen = match c.get(k).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    loop {
        let Some(old) = seen else {
            return skipped(None);
        };
        match c.cas(k, Some(&old), Some(v)).await {
            Ok((true, _)) => return ok(Some(old)),
            Ok((false, now)) => seen = now,
            Err(e) => return failed(e),
        }
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` over the whole
/// keyspace in key order, keys only (`Client::scan_keys`). The cursor
/// names the key the next call starts at, kept by the shard (not the
/// connection: a pooled client may go on from another connection to the
/// same port) in a table of [`super::RESP_SCAN_CURSORS_MAX`]. A cursor
/// stays valid when used, so a call may be retried; once its successor is
/// used it goes (a walk holds two at most).
async fn scan(svc: &Service, c: &Client, a: &[Bytes]) -> Reply {
    let Some(cursor) = std::str::from_utf8(&a[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Reply::err("ERR invalid cursor");
    };
    let (mut pattern, mut count, mut only_strings) = (None, super::RESP_SCAN_COUNT_DEFAULT, true);
    let mut opts = a[1..].iter();
    while let Some(o) = opts.next() {
        let Some(val) = opts.next() else {
            return syntax();
        };
        match o.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(val.clone()),
            // A hint, as in Redis: at most RESP_SCAN_COUNT_MAX per call.
            b"COUNT" => match int_arg(val) {
                Some(n) if n >= 1 => count = n.min(i64::from(super::RESP_SCAN_COUNT_MAX)) as u32,
                Some(_) => return syntax(),
                None => return not_integer(),
            },
            b"TYPE" => only_strings = val.eq_ignore_ascii_case(b"string"),
            _ => return syntax(),
        }
    }
    let start = if cursor == 0 {
        Bytes::new()
    } else {
        match svc.cursors.borrow().get(&cursor) {
            Some((k, _)) => k.clone(),
            None => return Reply::err("ERR invalid cursor"),
        }
    };
    let (keys, more) = match c.scan_keys(&start, b"", count).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let next = match (more, keys.last()) {
        (true, Some(last)) => svc.new_cursor(after(last), cursor),
        _ => {
            svc.forget_cursor(cursor);
            0
        }
    };
    let keys = keys
        .into_iter()
        .filter(|k| only_strings && pattern.as_ref().is_none_or(|p| super::glob_matches(p, k)))
        .map(Reply::Bulk)
        .collect();
    Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(keys)])
}

/// The first key after `k` in key order.
fn after(k: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(k.len() + 1);
    next.extend_from_slice(k);
    next.push(0);
    Bytes::from(next)
}

/// Walks every key matching `pattern` in order, keys only, a page of
/// [`super::RESP_WALK_PAGE_KEYS`] at a time, calling `each` on every
/// match until it says to stop (`false`).
async fn walk(
    c: &Client,
    pattern: &[u8],
    mut each: impl FnMut(Bytes) -> bool,
) -> Result<(), Error> {
    let mut at = Bytes::new();
    loop {
        let (keys, more) = c.scan_keys(&at, b"", super::RESP_WALK_PAGE_KEYS).await?;
        if let Some(last) = keys.last() {
            at = after(last);
        }
        for k in keys {
            if super::glob_matches(pattern, &k) && !each(k) {
                return Ok(());
            }
        }
        if !more {
            return Ok(());
        }
    }
}

/// Keys in the cluster (`DBSIZE`, `INFO keyspace`): counted, not kept.
async fn count_keys(c: &Client) -> Result<u64, Error> {
    let mut n = 0u64;
    walk(c, b"*", |_| {
        n += 1;
        true
    })
    .await?;
    Ok(n)
}

/// `KEYS pattern`: at most [`super::RESP_KEYS_MAX`], else an error that
/// names `SCAN`.
async fn keys(c: &Client, pattern: &[u8]) -> Reply {
    let max = super::RESP_KEYS_MAX;
    let mut out = Vec::new();
    let mut over = false;
    let r = walk(c, pattern, |k| {
        if out.len() == max {
            over = true;
            return false;
        }
        out.push(Reply::Bulk(k));
        true
    })
    .await;
    match r {
        Err(e) => failed(e),
        Ok(()) if over => Reply::err(format!(
            "ERR KEYS would answer more than {max} keys (RESP_KEYS_MAX): use SCAN"
        )),
        Ok(()) => Reply::Array(out),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`. Nothing changes
/// unless all of it is accepted (the password included), as in Redis.
fn hello(svc: &Service, st: &mut ConnState, a: &[Bytes]) -> Reply {
    let mut proto = st.proto;
    let mut name = None;
    let mut auth = None;
    if let Some(v) = a.first() {
        match int_arg(v) {
            Some(p @ (2 | 3)) => proto = p as u8,
            _ => return Reply::err("NOPROTO unsupported protocol version"),
        }
        let mut opts = a[1..].iter();
        while let Some(o) = opts.next() {
            match o.to_ascii_uppercase().as_slice() {
                b"AUTH" => match (opts.next(), opts.next()) {
                    (Some(user), Some(pass)) => auth = Some((user, pass)),
                    _ => return syntax(),
                },
                b"SETNAME" => match opts.next() {
                    Some(n) => name = Some(n.clone()),
                    None => return syntax(),
                },
                _ => return syntax(),
            }
        }
    }
    if let Some((user, pass)) = auth {
        let r = authenticate(svc, st, Some(user), pass);
        if r != Reply::ok() {
            return r;
        }
    }
    if !st.authed {
        return Reply::err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if name.is_some() {
        st.name = name;
    }
    st.proto = proto;
    let s = |x: &str| Reply::bulk(x.to_string());
    Reply::Map(vec![
        (s("server"), s("ringraft")),
        (s("version"), s(REDIS_COMPAT_VERSION)),
        (s("proto"), Reply::Int(i64::from(proto))),
        (s("id"), Reply::Int(st.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
        (s("ringraft_version"), s(env!("CARGO_PKG_VERSION"))),
        (s("ringraft_node"), Reply::Int(svc.cfg.node as i64)),
    ])
}

/// The Redis version whose commands this port follows: what clients read
/// (`HELLO`'s `version`, `INFO`'s `redis_version`) to pick features.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// `CLIENT SETNAME | GETNAME | ID | SETINFO | INFO`.
fn client_cmd(st: &mut ConnState, a: &[Bytes]) -> Reply {
    let Some(sub) = a.first() else {
        return arity("client");
    };
    match (sub.to_ascii_uppercase().as_slice(), &a[1..]) {
        (b"SETNAME", [n]) => {
            if n.iter().any(|&b| b == b' ' || b == b'\n') {
                return Reply::err("ERR Client names cannot contain spaces, newlines or special characters.");
            }
            st.name = (!n.is_empty()).then(|| n.clone());
            Reply::ok()
        }
        (b"GETNAME", []) => opt_bulk(st.name.clone()),
        (b"ID", []) => Reply::Int(st.id as i64),
        // Client libraries name themselves at connect (redis-py 5).
        (b"SETINFO", [_, _]) => Reply::ok(),
        (b"INFO", []) => Reply::bulk(format!(
            "id={} name={} resp={}\n",
            st.id,
            st.name.as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
            st.proto
        )),
        (s, _) => Reply::err(format!(
            "ERR unknown subcommand or wrong number of arguments for 'client|{}' (answered: SETNAME, GETNAME, ID, SETINFO, INFO)",
            String::from_utf8_lossy(s).to_ascii_lowercase()
        )),
    }
}

/// `COMMAND`, `COMMAND INFO name...`, `COMMAND COUNT` from [`COMMANDS`]
/// (a name not answered gets a null, as in Redis). `COMMAND DOCS` is
/// refused as Redis 6 refuses it: `redis-cli` then uses its own built-in
/// help, with argument hints (an empty answer left it with no help at
/// all: `help GET` printed nothing).
fn command_cmd(a: &[Bytes]) -> Reply {
    let sub = a.first().map(|s| s.to_ascii_uppercase());
    match sub.as_deref() {
        None => Reply::Array(COMMANDS.iter().map(CommandInfo::reply).collect()),
        Some(b"COUNT") if a.len() == 1 => Reply::Int(COMMANDS.len() as i64),
        Some(b"INFO") => {
            let named: Vec<Reply> = a[1..]
                .iter()
                .map(|n| {
                    let n = n.to_ascii_uppercase();
                    COMMANDS
                        .iter()
                        .find(|c| c.name.as_bytes() == n.as_slice())
                        .map_or(Reply::Null, CommandInfo::reply)
                })
                .collect();
            if a.len() == 1 {
                Reply::Array(COMMANDS.iter().map(CommandInfo::reply).collect())
            } else {
                Reply::Array(named)
            }
        }
        Some(s) => Reply::err(format!(
            "ERR unknown subcommand or wrong number of arguments for 'command|{}' (answered: COUNT, INFO; no DOCS: redis-cli uses its built-in help)",
            String::from_utf8_lossy(s).to_ascii_lowercase()
        )),
    }
}

/// `CONFIG GET pattern...` from [`CONFIG`]; `CONFIG SET` is refused
/// (settings are the node's flags).
fn config_cmd(a: &[Bytes]) -> Reply {
    match a.first().map(|s| s.to_ascii_uppercase()) {
        Some(s) if s == b"GET" && a.len() >= 2 => {
            let mut out = Vec::new();
            for (k, v) in CONFIG {
                if a[1..]
                    .iter()
                    .any(|p| super::glob_matches(&p.to_ascii_lowercase(), k.as_bytes()))
                {
                    out.push((Reply::bulk(k.to_string()), Reply::bulk(v.to_string())));
                }
            }
            Reply::Map(out)
        }
        Some(s) if s == b"SET" || s == b"RESETSTAT" || s == b"REWRITE" => Reply::err(format!(
            "ERR CONFIG {} is not supported: settings are the node's flags (ringraft node --help)",
            String::from_utf8_lossy(&s)
        )),
        _ => arity("config"),
    }
}

/// `INFO [section ...]`: server, clients, replication (this node's
/// replicas: how many it hosts and leads), stats, keyspace (a walk over
/// every key: asked only by name, or by `all` / `everything`).
async fn info(svc: &Service, c: &Client, a: &[Bytes]) -> Reply {
    let want: Vec<String> = a
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let all = want.iter().any(|w| w == "all" || w == "everything");
    let default = want.is_empty() || want.iter().any(|w| w == "default");
    let show = |s: &str| all || default || want.iter().any(|w| w == s);
    let mut out = String::new();
    if show("server") {
        out.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nringraft_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nringraft_node:{}\r\nringraft_shard:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            svc.cfg.listen.port(),
            svc.started.elapsed().as_secs(),
            svc.cfg.node,
            svc.cfg.shard,
        ));
    }
    if show("clients") {
        out.push_str(&format!(
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            svc.conns_open.get()
        ));
    }
    if show("replication") {
        // From the cluster map (the ranges' descriptors and leaders),
        // not a status pass over every replica.
        let _ = c.refresh_map().await;
        let node = svc.cfg.node;
        let ranges = c.ranges();
        let hosted = ranges
            .iter()
            .filter(|d| d.replica_on(node).is_some())
            .count();
        let leaders = c.leaders();
        let led = ranges
            .iter()
            .filter(|d| leaders.get(d.id as usize) == Some(&node))
            .count();
        out.push_str(&format!(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nringraft_ranges:{}\r\nringraft_ranges_hosted:{hosted}\r\nringraft_ranges_led:{led}\r\n\r\n",
            ranges.len()
        ));
    }
    if show("stats") {
        out.push_str(&format!(
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n\r\n",
            svc.conns_total.get(),
            svc.commands_total.get(),
            svc.conns_refused.get()
        ));
    }
    if all || want.iter().any(|w| w == "keyspace") {
        match count_keys(c).await {
            Ok(n) => out.push_str(&format!(
                "# Keyspace\r\ndb0:keys={n},expires=0,avg_ttl=0\r\n"
            )),
            Err(e) => return failed(e),
        }
    }
    Reply::bulk(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<Bytes> {
        w.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    /// `COMMAND` lists every command answered, with Redis's fields;
    /// `COMMAND INFO` gives the named ones (null for others), `COUNT`
    /// their number; `COMMAND DOCS` is an error, so redis-cli falls back
    /// to its built-in help.
    #[test]
    fn command_describes_the_commands_answered_and_refuses_docs() {
        let Reply::Array(all) = command_cmd(&[]) else {
            panic!("COMMAND: not an array")
        };
        assert_eq!(all.len(), COMMANDS.len());
        assert!(
            matches!(command_cmd(&words(&["COUNT"])), Reply::Int(n) if n as usize == all.len())
        );
        let Reply::Array(got) = command_cmd(&words(&["info", "mset", "nosuch"])) else {
            panic!("COMMAND INFO: not an array")
        };
        let Reply::Array(mset) = &got[0] else {
            panic!("{got:?}")
        };
        assert!(matches!(&mset[0], Reply::Bulk(b) if &b[..] == b"mset"));
        assert!(matches!(mset[1], Reply::Int(-3)));
        assert!(
            matches!(&mset[2], Reply::Array(f) if matches!(&f[0], Reply::Status(s) if s == "write"))
        );
        assert!(matches!(
            (&mset[3], &mset[4], &mset[5]),
            (Reply::Int(1), Reply::Int(-1), Reply::Int(2))
        ));
        assert_eq!(mset.len(), 10);
        assert!(matches!(got[1], Reply::Null));
        assert!(
            matches!(command_cmd(&words(&["DOCS"])), Reply::Error(e) if e.contains("built-in help"))
        );
    }
}
