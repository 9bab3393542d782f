//! The RESP port (issue #20) of real node processes: Redis's protocol
//! spoken over plain sockets here (pipelining, RESP3, malformed and
//! oversized frames, atomic increments from many connections, `SCAN`
//! across every range), then with Redis's own tools and a maintained
//! client library where they are installed (`.ci/run` installs
//! `redis-tools` and `python3-redis`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame as F;
use ringraft::local_cluster::{LocalCluster, LocalClusterConfig};

/// 3 nodes of 2 shards, 8 ranges (cut at 0x20, 0x40, ... of the first
/// key byte), every node with a RESP port.
fn cluster() -> LocalCluster {
    cluster_with(&[])
}

fn cluster_with(extra: &[&str]) -> LocalCluster {
    let mut cfg = LocalClusterConfig::new(env!("CARGO_BIN_EXE_ringraft"));
    cfg.shards = 2;
    cfg.groups = 8;
    cfg.resp = true;
    cfg.extra_args = ["--placement", "unbound", "--tick-ms", "10"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    LocalCluster::start_ready(cfg, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"))
}

/// Node `i`'s (0-based) RESP address of shard `s`.
fn resp(c: &LocalCluster, i: usize, s: u16) -> SocketAddr {
    let a = c.nodes[i].resp_addr.expect("RESP on");
    SocketAddr::new(a.ip(), a.port() + s)
}

/// A blocking RESP connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(a: SocketAddr) -> Conn {
        let s = TcpStream::connect(a).expect("RESP port answers");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.s.write_all(&out).unwrap();
    }

    /// The next answer; `None` once the node closed the connection.
    fn read(&mut self) -> Option<F> {
        loop {
            if let Some((f, n)) = redis_protocol::resp2::decode::decode(&self.buf).unwrap() {
                self.buf.drain(..n);
                return Some(f);
            }
            let mut chunk = [0u8; 16384];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> F {
        self.send(args);
        self.read().expect("an answer")
    }
}

fn bulk(s: &str) -> F {
    F::BulkString(s.as_bytes().to_vec())
}

fn ok() -> F {
    F::SimpleString(b"OK".to_vec())
}

fn err_text(f: &F) -> String {
    match f {
        F::Error(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn redis_commands_pipeline_in_order_across_every_range_and_node() {
    let c = cluster();
    let mut a = Conn::open(resp(&c, 0, 0));
    assert_eq!(a.call(&[b"PING"]), F::SimpleString(b"PONG".to_vec()));
    // A pipeline: sent at once, carried out and answered in order (the
    // GET sees both SETs, the second one last).
    for args in [
        &[&b"SET"[..], b"p", b"1"][..],
        &[b"SET", b"p", b"2"],
        &[b"GET", b"p"],
        &[b"SET", b"p", b"3", b"NX"],
        &[b"SET", b"q", b"1", b"XX"],
        &[b"SET", b"p", b"4", b"XX", b"GET"],
        &[b"GETDEL", b"p"],
        &[b"EXISTS", b"p", b"q"],
        &[b"APPEND", b"s", b"ab"],
        &[b"APPEND", b"s", b"cd"],
        &[b"STRLEN", b"s"],
        &[b"TYPE", b"s"],
        &[b"INCRBY", b"s", b"1"],
        &[b"SET", b"k", b"v", b"EX", b"10"],
        &[b"NOSUCH", b"x"],
        &[b"SELECT", b"1"],
    ] {
        a.send(args);
    }
    let got: Vec<F> = (0..16).map(|_| a.read().expect("answer")).collect();
    assert_eq!(got[..4], [ok(), ok(), bulk("2"), F::Null]);
    assert_eq!(got[4], F::Null, "XX over nothing");
    assert_eq!(got[5..8], [bulk("2"), bulk("4"), F::Integer(0)]);
    assert_eq!(
        got[8..12],
        [
            F::Integer(2),
            F::Integer(4),
            F::Integer(4),
            F::SimpleString(b"string".to_vec())
        ]
    );
    assert_eq!(
        err_text(&got[12]),
        "ERR value is not an integer or out of range"
    );
    assert!(
        err_text(&got[13]).contains("do not expire"),
        "{:?}",
        got[13]
    );
    assert_eq!(
        err_text(&got[14]),
        "ERR unknown command 'NOSUCH', with args beginning with: 'x' "
    );
    assert_eq!(err_text(&got[15]), "ERR DB index is out of range");

    // Keys of every range, written through every node and shard, then
    // walked with SCAN (small pages) from one connection: each exactly
    // once, in key order.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for r in 0..8u8 {
        for j in 0..5u8 {
            keys.push(vec![r * 32 + 7, b'k', b'0' + j]);
        }
    }
    for (i, k) in keys.iter().enumerate() {
        let mut w = Conn::open(resp(&c, i % 3, (i % 2) as u16));
        assert_eq!(w.call(&[b"SET", k, b"v"]), ok());
    }
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let F::Array(parts) = a.call(&[b"SCAN", &cursor, b"MATCH", b"?k*", b"COUNT", b"3"]) else {
            panic!("SCAN answers an array");
        };
        let [F::BulkString(next), F::Array(page)] = &parts[..] else {
            panic!("{parts:?}");
        };
        for k in page {
            let F::BulkString(k) = k else { panic!("{k:?}") };
            seen.push(k.clone());
        }
        cursor = next.clone();
        if cursor == b"0" {
            break;
        }
    }
    assert_eq!(seen, keys, "SCAN walks every range once, in order");
    let F::Array(all) = a.call(&[b"KEYS", b"*k[0-4]"]) else {
        panic!()
    };
    assert_eq!(all.len(), keys.len());
    assert_eq!(
        a.call(&[b"DBSIZE"]),
        F::Integer(keys.len() as i64 + 1),
        "the keys and s"
    );
    assert_eq!(
        a.call(&[b"SCAN", b"99"]),
        F::Error("ERR invalid cursor".into())
    );
    // A key at the key limit (4096 bytes by default), then a walk in pages
    // of one key through it: the page after it starts one byte past the
    // limit (the key, then 0x00), which a scan may. A cursor is the
    // shard's: asked again, from another connection, it answers the same.
    let big = vec![b'~'; 4096];
    assert_eq!(a.call(&[b"SET", &big, b"v"]), ok());
    let mut other = Conn::open(resp(&c, 0, 0));
    let (mut cursor, mut saw_big, mut pages) = (b"0".to_vec(), false, 0);
    loop {
        let page = a.call(&[b"SCAN", &cursor, b"COUNT", b"1"]);
        if pages == 3 {
            // The same keys (each call names a cursor of its own next).
            let keys_of = |f: F| match f {
                F::Array(mut p) => p.pop(),
                f => panic!("{f:?}"),
            };
            for _ in 0..2 {
                let again = other.call(&[b"SCAN", &cursor, b"COUNT", b"1"]);
                assert_eq!(keys_of(again), keys_of(page.clone()));
            }
        }
        let F::Array(parts) = page else {
            panic!("SCAN from {:?}: {page:?}", String::from_utf8_lossy(&cursor))
        };
        let [F::BulkString(next), F::Array(keys)] = &parts[..] else {
            panic!("{parts:?}");
        };
        saw_big |= keys.contains(&F::BulkString(big.clone()));
        cursor = next.clone();
        pages += 1;
        if cursor == b"0" {
            break;
        }
    }
    assert!(saw_big && pages > keys.len(), "{pages} pages");
    assert_eq!(a.call(&[b"DEL", &big]), F::Integer(1));

    // INCR from many connections on every node at once: atomic, so the
    // count is exact.
    let addrs: Vec<SocketAddr> = (0..6).map(|i| resp(&c, i % 3, (i % 2) as u16)).collect();
    let threads: Vec<_> = addrs
        .into_iter()
        .map(|addr| {
            std::thread::spawn(move || {
                let mut w = Conn::open(addr);
                for _ in 0..50 {
                    let F::Integer(_) = w.call(&[b"INCR", b"counter"]) else {
                        panic!("INCR answers an integer");
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(a.call(&[b"GET", b"counter"]), bulk("300"));

    // A transaction is refused whole: what follows MULTI is not run, and
    // EXEC aborts (not the commands applied one by one while the
    // transaction fails, as a refused MULTI alone would leave them).
    for args in [
        &[&b"MULTI"[..]][..],
        &[b"SET", b"tx", b"1"],
        &[b"EXEC"],
        &[b"GET", b"tx"],
    ] {
        a.send(args);
    }
    let got: Vec<F> = (0..4).map(|_| a.read().expect("answer")).collect();
    assert!(
        err_text(&got[0]).contains("MULTI is not supported"),
        "{got:?}"
    );
    assert!(err_text(&got[1]).contains("SET not run"), "{got:?}");
    assert!(err_text(&got[2]).starts_with("EXECABORT"), "{got:?}");
    assert_eq!(got[3], F::Null, "the SET inside MULTI was not applied");

    // RESP3 on the same connection.
    let F::Array(hello) = a.call(&[b"HELLO", b"2"]) else {
        panic!()
    };
    assert!(hello.contains(&bulk("proto")), "{hello:?}");
    let mut r3 = Conn::open(resp(&c, 1, 1));
    r3.send(&[b"HELLO", b"3"]);
    r3.send(&[b"GET", b"nothing"]);
    // RESP3: HELLO's map, then the null `_`.
    use redis_protocol::resp3::{decode::complete::decode, types::OwnedFrame as F3};
    let mut frames = Vec::new();
    while frames.len() < 2 {
        match decode(&r3.buf).unwrap() {
            Some((f, n)) => {
                r3.buf.drain(..n);
                frames.push(f);
            }
            None => {
                let mut chunk = [0u8; 4096];
                let n = r3.s.read(&mut chunk).unwrap();
                assert!(n > 0, "closed");
                r3.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    let F3::Map { data, .. } = &frames[0] else {
        panic!("HELLO 3 answers a map: {:?}", frames[0]);
    };
    let proto = data
        .iter()
        .find(|(k, _)| matches!(k, F3::BlobString { data, .. } if data == b"proto"))
        .map(|(_, v)| v.clone());
    assert!(
        matches!(proto, Some(F3::Number { data: 3, .. })),
        "{data:?}"
    );
    assert_eq!(frames[1], F3::Null);
}

#[test]
fn a_bad_or_oversized_frame_closes_its_connection_only() {
    let c = cluster();
    let addr = resp(&c, 0, 0);
    let mut good = Conn::open(addr);
    assert_eq!(good.call(&[b"SET", b"x", b"1"]), ok());
    // Not RESP: an error, then the connection is closed.
    let mut bad = Conn::open(addr);
    bad.s.write_all(b"*1\r\n:12x\r\n").unwrap();
    assert!(err_text(&bad.read().unwrap()).starts_with("ERR Protocol error"));
    assert_eq!(bad.read(), None, "closed");
    // A value announced far past the limit (1 MiB by default): refused at
    // its header, before any of its bytes is sent or buffered.
    let mut big = Conn::open(addr);
    big.s
        .write_all(b"*3\r\n$3\r\nSET\r\n$1\r\ny\r\n$104857600\r\n")
        .unwrap();
    let why = err_text(&big.read().expect("an error before the close"));
    assert!(why.contains("longer than"), "{why}");
    assert_eq!(big.read(), None, "closed");
    // Nested arrays: refused at the first, and the node lives (a
    // recursive decoder overflowed its stack on this repeated 50,000
    // times: `resp::tests` has that; here few enough that the node reads
    // them all, so its close is not a reset that could drop the error).
    let mut deep = Conn::open(addr);
    deep.s.write_all(&b"*1\r\n".repeat(1000)).unwrap();
    assert!(err_text(&deep.read().expect("an error")).starts_with("ERR Protocol error"));
    // Inline commands, and QUIT: answered, then closed.
    let mut inline = Conn::open(addr);
    inline.s.write_all(b"PING\r\nQUIT\r\nPING\r\n").unwrap();
    assert_eq!(inline.read(), Some(F::SimpleString(b"PONG".to_vec())));
    assert_eq!(inline.read(), Some(ok()));
    assert_eq!(inline.read(), None, "nothing after QUIT");
    // The others were served all along.
    assert_eq!(good.call(&[b"GET", b"x"]), bulk("1"));
    assert_eq!(good.call(&[b"GET", b"y"]), F::Null);
}

/// `--resp-conns-max` (4 for the node: 2 per shard): a connection past it
/// is answered Redis's error and closed; one freed makes room again.
#[test]
fn resp_conns_max_refuses_one_more_connection_with_redis_words() {
    let c = cluster_with(&["--resp-conns-max", "4"]);
    let addr = resp(&c, 0, 0);
    let mut a = Conn::open(addr);
    let mut b = Conn::open(addr);
    for x in [&mut a, &mut b] {
        assert_eq!(x.call(&[b"PING"]), F::SimpleString(b"PONG".to_vec()));
    }
    let mut third = Conn::open(addr);
    assert_eq!(
        third.read(),
        Some(F::Error("ERR max number of clients reached".into()))
    );
    assert_eq!(third.read(), None, "closed");
    // Shard 1 has its own two.
    let mut other = Conn::open(resp(&c, 0, 1));
    assert_eq!(other.call(&[b"PING"]), F::SimpleString(b"PONG".to_vec()));
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = Conn::open(addr);
        again.send(&[b"PING"]);
        match again.read() {
            Some(F::SimpleString(p)) if p == b"PONG" => break,
            r => assert!(
                std::time::Instant::now() < deadline,
                "no room after a close: {r:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.call(&[b"PING"]), F::SimpleString(b"PONG".to_vec()));
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `redis-cli`, `redis-benchmark` and the `redis` Python library against
/// the port, unchanged. Skipped, saying so, where they are not installed
/// (`.ci/run` installs them).
#[test]
fn redis_cli_redis_benchmark_and_a_python_client_work_unchanged() {
    let missing: Vec<&str> = ["redis-cli", "redis-benchmark"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    // The first Python that has the library: the one on PATH (a pyenv, a
    // venv) or the system's, where Debian's python3-redis goes.
    let python = ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import redis"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python.filter(|_| missing.is_empty()) else {
        eprintln!(
            "skipped: needs redis-cli, redis-benchmark and a python3 with redis (apt-get install redis-tools python3-redis); missing {missing:?}, python with redis: {python:?}"
        );
        return;
    };
    let c = cluster();
    let a = resp(&c, 1, 0);
    let (host, port) = (a.ip().to_string(), a.port().to_string());
    let cli = |args: &[&str]| {
        let o = std::process::Command::new("redis-cli")
            .args(["-h", &host, "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "hello", "world"]), "OK");
    assert_eq!(cli(&["GET", "hello"]), "world");
    assert!(cli(&["INFO", "server"]).contains("redis_version:"));
    let o = std::process::Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port])
        .args([
            "-t", "set,get", "-n", "2000", "-c", "8", "-P", "4", "-d", "16", "-q",
        ])
        .output()
        .expect("redis-benchmark runs");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{o:?}");
    for t in ["SET", "GET"] {
        let line = out
            .split(['\n', '\r'])
            .find(|l| l.starts_with(&format!("{t}: ")) && l.contains("requests per second"))
            .unwrap_or_else(|| panic!("no {t} figure in {out:?}"));
        eprintln!("redis-benchmark: {line}");
    }
    // What redis-benchmark wrote is there (its key, 16 bytes of 'x').
    assert_eq!(cli(&["STRLEN", "key:__rand_int__"]), "16");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/resp_client.py");
    let o = std::process::Command::new(python)
        .arg(script)
        .args([&host, &port, &resp(&c, 2, 1).port().to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
}

/// `--resp-password-file`: Redis's `requirepass` rules and words. Nothing
/// but AUTH, HELLO and QUIT before the password; a wrong one or another
/// user is refused and changes nothing; `AUTH PASS`, `AUTH default PASS`
/// and `HELLO 2 AUTH default PASS` each let the connection in.
#[test]
fn a_resp_password_is_asked_before_any_command() {
    // With none configured, Redis's `default` user takes any password and
    // another user none; `AUTH PASS` says none is configured.
    let open = cluster();
    let mut n = Conn::open(resp(&open, 0, 0));
    assert_eq!(n.call(&[b"AUTH", b"default", b"x"]), ok());
    assert_eq!(
        n.call(&[b"AUTH", b"bob", b"x"]),
        F::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert!(err_text(&n.call(&[b"AUTH", b"x"])).contains("without any password configured"));
    drop(open);
    let dir = std::env::temp_dir().join(format!("ringraft-resp-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, "s3cret pass\n").unwrap();
    let c = cluster_with(&["--resp-password-file", file.to_str().unwrap()]);
    let addr = resp(&c, 0, 0);
    let mut a = Conn::open(addr);
    assert_eq!(
        a.call(&[b"SET", b"k", b"v"]),
        F::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        a.call(&[b"PING"]),
        F::Error("NOAUTH Authentication required.".into())
    );
    assert!(err_text(&a.call(&[b"HELLO", b"2"])).starts_with("NOAUTH HELLO must be called"));
    let wrongpass =
        F::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    assert_eq!(a.call(&[b"AUTH", b"s3cret"]), wrongpass);
    assert_eq!(a.call(&[b"AUTH", b"admin", b"s3cret pass"]), wrongpass);
    assert_eq!(
        a.call(&[b"HELLO", b"2", b"AUTH", b"default", b"nope"]),
        wrongpass
    );
    assert_eq!(
        a.call(&[b"GET", b"k"]),
        F::Error("NOAUTH Authentication required.".into()),
        "still out after wrong passwords"
    );
    assert_eq!(a.call(&[b"AUTH", b"s3cret pass"]), ok());
    assert_eq!(a.call(&[b"SET", b"k", b"v"]), ok());
    let mut b = Conn::open(addr);
    assert_eq!(b.call(&[b"AUTH", b"default", b"s3cret pass"]), ok());
    assert_eq!(b.call(&[b"GET", b"k"]), bulk("v"));
    let mut h = Conn::open(resp(&c, 1, 1));
    assert!(matches!(
        h.call(&[b"HELLO", b"2", b"AUTH", b"default", b"s3cret pass"]),
        F::Array(_)
    ));
    assert_eq!(h.call(&[b"GET", b"k"]), bulk("v"));
    // Before the password, a frame is at most
    // RESP_UNAUTHED_FRAME_BYTES_MAX: a stranger cannot make the node
    // buffer a value-sized one.
    let mut big = Conn::open(addr);
    let value = vec![b'v'; 20 << 10];
    let e = err_text(&big.call(&[b"AUTH", &value]));
    assert!(e.contains("longer than 16384 bytes"), "{e}");
    assert_eq!(big.read(), None, "closed");
    // ... and announces at most RESP_UNAUTHED_ARGS_MAX arguments (Redis's
    // bound and words).
    let mut many = Conn::open(addr);
    let args: Vec<&[u8]> = std::iter::once(&b"AUTH"[..])
        .chain(std::iter::repeat_n(&b"x"[..], 10))
        .collect();
    let e = err_text(&many.call(&args));
    assert_eq!(e, "ERR Protocol error: unauthenticated multibulk length");
    assert_eq!(many.read(), None, "closed");
    assert_eq!(
        b.call(&[b"SET", b"big", &value]),
        ok(),
        "once in, the usual limit"
    );
    let mut q = Conn::open(addr);
    assert_eq!(q.call(&[b"QUIT"]), ok());
    assert_eq!(q.read(), None, "QUIT closes without the password");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
