use bytes::{Bytes, BytesMut};

use super::{parse, Parsed, Reply};

fn cmd(words: &[&str]) -> Parsed {
    Parsed::Command(words.iter().map(|w| Bytes::from(w.to_string())).collect())
}

#[test]
fn arrays_of_bulk_strings_parse_one_command_at_a_time() {
    let mut b =
        BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET"[..]);
    assert_eq!(parse(&mut b, 1 << 20), cmd(&["GET", "k"]));
    assert_eq!(parse(&mut b, 1 << 20), cmd(&["PING"]));
    // The third is cut short: nothing is taken until it is whole.
    assert_eq!(parse(&mut b, 1 << 20), Parsed::Incomplete);
    b.extend_from_slice(b"\r\n$1\r\nk\r\n$2\r\nv1\r\n");
    assert_eq!(parse(&mut b, 1 << 20), cmd(&["SET", "k", "v1"]));
    assert!(b.is_empty());
}

#[test]
fn inline_commands_are_words_on_a_line() {
    let mut b = BytesMut::from(&b"PING\r\n\r\nset  k   v\nGET"[..]);
    assert_eq!(parse(&mut b, 1 << 20), cmd(&["PING"]));
    assert_eq!(parse(&mut b, 1 << 20), Parsed::Empty);
    assert_eq!(parse(&mut b, 1 << 20), cmd(&["set", "k", "v"]));
    assert_eq!(parse(&mut b, 1 << 20), Parsed::Incomplete);
}

#[test]
fn a_frame_past_the_limit_is_refused_before_it_is_whole() {
    // A 1 MiB value announced; 600 bytes of it came, the limit is 512.
    let mut b = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n"[..]);
    b.extend_from_slice(&[b'x'; 600]);
    match parse(&mut b, 512) {
        Parsed::Invalid(why) => assert!(why.contains("longer than 512 bytes"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Under the limit the same bytes wait for more.
    let mut b = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n"[..]);
    b.extend_from_slice(&[b'x'; 600]);
    assert_eq!(parse(&mut b, 2 << 20), Parsed::Incomplete);
    // An inline line too.
    let mut b = BytesMut::from(&[b'a'; 600][..]);
    assert!(matches!(parse(&mut b, 512), Parsed::Invalid(_)));
}

#[test]
fn what_is_not_a_command_is_invalid() {
    for bad in [
        &b"*1\r\n:12x\r\n"[..],
        b"*1\r\n*1\r\n$1\r\na\r\n",
        b"*x\r\n",
    ] {
        let mut b = BytesMut::from(bad);
        assert!(
            matches!(parse(&mut b, 1 << 20), Parsed::Invalid(_)),
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
