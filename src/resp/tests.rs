use bytes::{Bytes, BytesMut};

use super::{Parsed, Parser, Reply};

fn cmd(words: &[&str]) -> Parsed {
    Parsed::Command(words.iter().map(|w| Bytes::from(w.to_string())).collect())
}

fn parse_all(input: &[u8], max: usize) -> Vec<Parsed> {
    let mut p = Parser::default();
    let mut b = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match p.next(&mut b, max) {
            Parsed::Incomplete => return out,
            x @ Parsed::Invalid(_) => {
                out.push(x);
                return out;
            }
            x => out.push(x),
        }
    }
}

#[test]
fn arrays_of_bulk_strings_parse_one_command_at_a_time() {
    let mut p = Parser::default();
    let mut b =
        BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET"[..]);
    assert_eq!(p.next(&mut b, 1 << 20), cmd(&["GET", "k"]));
    assert_eq!(p.next(&mut b, 1 << 20), cmd(&["PING"]));
    // The third is cut short: it resumes where it stopped.
    assert_eq!(p.next(&mut b, 1 << 20), Parsed::Incomplete);
    b.extend_from_slice(b"\r\n$1\r\nk\r\n$2\r\nv1\r\n");
    assert_eq!(p.next(&mut b, 1 << 20), cmd(&["SET", "k", "v1"]));
    assert!(b.is_empty());
}

#[test]
fn a_frame_fed_one_byte_at_a_time_parses_the_same() {
    let frame = b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$0\r\n\r\n*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n";
    let mut p = Parser::default();
    let mut b = BytesMut::new();
    let mut got = Vec::new();
    for &byte in frame.iter() {
        b.extend_from_slice(&[byte]);
        loop {
            match p.next(&mut b, 1 << 20) {
                Parsed::Incomplete => break,
                x => got.push(x),
            }
        }
    }
    assert_eq!(
        got,
        vec![
            cmd(&["SET", "key:1", ""]),
            Parsed::Empty,
            Parsed::Empty,
            cmd(&["PING"])
        ]
    );
}

#[test]
fn inline_commands_are_words_on_a_line() {
    assert_eq!(
        parse_all(b"PING\r\n\r\nset  k   v\nGET", 1 << 20),
        vec![cmd(&["PING"]), Parsed::Empty, cmd(&["set", "k", "v"])]
    );
}

/// Quotes and escapes in an inline command, as `redis-cli` users type
/// them and as Redis's `sdssplitargs` reads them.
#[test]
fn inline_commands_take_quotes_and_escapes_as_redis_does() {
    let words = |s: &str| super::split_inline(&Bytes::from(s.to_string()));
    let w = |v: &[&[u8]]| {
        Some(
            v.iter()
                .map(|x| Bytes::copy_from_slice(x))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        words(r#"SET "a key" 'a value'"#),
        w(&[b"SET", b"a key", b"a value"])
    );
    assert_eq!(
        words(r#"SET k "\x41\x7a\n\t\"\\""#),
        w(&[b"SET", b"k", b"Az\n\t\"\\"])
    );
    assert_eq!(words(r#"SET k "\xZZ\q""#), w(&[b"SET", b"k", b"xZZq"]));
    assert_eq!(
        words(r#"SET k 'it\'s' '\n'"#),
        w(&[b"SET", b"k", b"it's", b"\\n"])
    );
    assert_eq!(
        words(r#"SET ab"cd" "" x"#),
        w(&[b"SET", b"abcd", b"", b"x"])
    );
    assert_eq!(words("  GET\tk  "), w(&[b"GET", b"k"]));
    assert_eq!(words(""), w(&[]));
    // C's isspace between words and after a quote; inside a bare word
    // only space, tab, CR and LF end it; a NUL ends the line.
    assert_eq!(words("a\x0bb \x0cc"), w(&[b"a\x0bb", b"c"]));
    assert_eq!(words("\"a\"\x0bb"), w(&[b"a", b"b"]));
    assert_eq!(words("GET k\0 ignored"), w(&[b"GET", b"k"]));
    for bad in [
        r#"SET "a"b"#,
        r#"SET 'a"#,
        r#"SET "a\"#,
        r#"GET "k"x"#,
        r#"SET 'a'b"#,
    ] {
        assert_eq!(words(bad), None, "{bad}");
    }
    // Through the parser: the words, or the error that closes the
    // connection.
    assert_eq!(
        parse_all(b"SET \"a b\" c\r\n", 1 << 20),
        vec![cmd(&["SET", "a b", "c"])]
    );
    match parse_all(b"SET \"a b\r\nPING\r\n", 1 << 20).last() {
        Some(Parsed::Invalid(why)) => {
            assert_eq!(why, "ERR Protocol error: unbalanced quotes in request")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_frame_past_the_limit_is_refused_before_it_is_buffered() {
    // A 1 MiB value announced against a limit of 512: refused at its
    // header, before any of its bytes.
    let got = parse_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n", 512);
    match got.last() {
        Some(Parsed::Invalid(why)) => assert!(why.contains("longer than 512 bytes"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Under the limit the same header waits for its bytes.
    let got = parse_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\nxxx", 2 << 20);
    assert!(got.is_empty(), "{got:?}");
    // More arguments than the limit's bytes can hold, and an inline line
    // that does not end within the limit.
    assert!(matches!(
        parse_all(b"*1000\r\n", 512).last(),
        Some(Parsed::Invalid(_))
    ));
    assert!(matches!(
        parse_all(&[b'a'; 600], 512).last(),
        Some(Parsed::Invalid(_))
    ));
}

/// A nested array is refused at once, however deep: the crate's decoder
/// recursed into `*1\r\n` repeated until the stack overflowed (a review
/// of the first version).
#[test]
fn nested_arrays_and_other_frames_are_invalid_without_recursion() {
    let deep = b"*1\r\n".repeat(200_000);
    assert!(matches!(
        parse_all(&deep, 16 << 20).last(),
        Some(Parsed::Invalid(_))
    ));
    for bad in [
        &b"*1\r\n:12\r\n"[..],
        b"*1\r\n*1\r\n$1\r\na\r\n",
        b"*x\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$1\r\nab\r\n",
        b"*1\r\n$99999999999999999999999999\r\n",
    ] {
        assert!(
            matches!(parse_all(bad, 1 << 20).last(), Some(Parsed::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn answers_encode_as_resp2_and_resp3() {
    let r = Reply::Array(vec![
        Reply::ok(),
        Reply::Int(-3),
        Reply::bulk("v"),
        Reply::Null,
        Reply::err("ERR no"),
    ]);
    let mut out = BytesMut::new();
    r.encode(2, &mut out);
    assert_eq!(
        &out[..],
        b"*5\r\n+OK\r\n:-3\r\n$1\r\nv\r\n$-1\r\n-ERR no\r\n"
    );
    let mut out = BytesMut::new();
    r.encode(3, &mut out);
    assert_eq!(&out[..], b"*5\r\n+OK\r\n:-3\r\n$1\r\nv\r\n_\r\n-ERR no\r\n");
    // A map is a flat array in RESP2, a map in RESP3.
    let m = Reply::Map(vec![(Reply::bulk("proto"), Reply::Int(3))]);
    let mut out = BytesMut::new();
    m.encode(2, &mut out);
    assert_eq!(&out[..], b"*2\r\n$5\r\nproto\r\n:3\r\n");
    let mut out = BytesMut::new();
    m.encode(3, &mut out);
    assert_eq!(&out[..], b"%1\r\n$5\r\nproto\r\n:3\r\n");
}

/// A status or an error never carries CR or LF: an argument echoed in an
/// error (an unknown command's) cannot forge answers in the stream.
#[test]
fn an_error_cannot_inject_answers() {
    let mut out = BytesMut::new();
    Reply::err("ERR unknown command 'x\r\n+OK\r\n'").encode(2, &mut out);
    assert_eq!(&out[..], b"-ERR unknown command 'x  +OK  '\r\n");
}

/// RESP_UNAUTHED_ARGS_MAX: before the password an array announcing more
/// arguments is refused at its header, in Redis's words; at the bound it
/// parses, and without the bound the same array parses.
#[test]
fn before_the_password_an_array_has_at_most_resp_unauthed_args_max_arguments() {
    use super::RESP_UNAUTHED_ARGS_MAX;
    let array = |n: usize| {
        let mut v = format!("*{n}\r\n").into_bytes();
        for _ in 0..n {
            v.extend_from_slice(b"$1\r\nx\r\n");
        }
        v
    };
    let mut p = Parser::default();
    p.limit_args(Some(RESP_UNAUTHED_ARGS_MAX));
    let mut b = BytesMut::from(&array(RESP_UNAUTHED_ARGS_MAX)[..]);
    assert!(
        matches!(p.next(&mut b, 1 << 20), Parsed::Command(a) if a.len() == RESP_UNAUTHED_ARGS_MAX)
    );
    let mut b = BytesMut::from(&array(RESP_UNAUTHED_ARGS_MAX + 1)[..]);
    assert_eq!(
        p.next(&mut b, 1 << 20),
        Parsed::Invalid("ERR Protocol error: unauthenticated multibulk length".into())
    );
    let mut p = Parser::default();
    p.limit_args(None);
    let mut b = BytesMut::from(&array(RESP_UNAUTHED_ARGS_MAX + 1)[..]);
    assert!(
        matches!(p.next(&mut b, 1 << 20), Parsed::Command(a) if a.len() == RESP_UNAUTHED_ARGS_MAX + 1)
    );
}
