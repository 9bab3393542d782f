//! Wire format tests: frames (messages and the transport to come).
//!
//! cargo test --release --test wire
//! WIRE_CASES=1000000 cargo test --release --test wire   # the long fuzz run

use proptest::prelude::*;
use ringraft::wire::{decode_frame, encode_frame, FrameError};

fn cases() -> u32 {
    std::env::var("WIRE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder: a typed error, a request
    /// for more bytes, or a frame whose every check passed.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
        if let Ok(Some((f, n))) = decode_frame(&bytes, max) {
            prop_assert!(n <= bytes.len() && f.payload.len() <= max);
            prop_assert_eq!(n % 16, 0);
        }
    }

    /// Any single corrupted byte of a valid frame is refused (or, if it
    /// makes the length larger, waits for bytes that will then fail).
    #[test]
    fn any_single_byte_corruption_is_caught(
        kind in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut buf = Vec::new();
        encode_frame(&mut buf, kind, &payload);
        let i = at.index(buf.len());
        buf[i] ^= flip;
        match decode_frame(&buf, 1 << 20) {
            Ok(Some(_)) => prop_assert!(false, "corruption at byte {} of {} passed", i, buf.len()),
            Ok(None) => prop_assert!((8..12).contains(&i), "only a larger length may wait for more"),
            Err(e) => {
                let too_large = matches!(e, FrameError::TooLarge { .. });
                prop_assert!(!too_large || (8..12).contains(&i), "only the length can be too large");
            }
        }
    }

    /// A stream of frames decodes back to exactly what was sent.
    #[test]
    fn streams_round_trip(frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..20)) {
        let mut buf = Vec::new();
        for (k, p) in &frames {
            encode_frame(&mut buf, *k, p);
        }
        let mut at = 0;
        for (k, p) in &frames {
            let (f, n) = decode_frame(&buf[at..], 1 << 20).unwrap().unwrap();
            prop_assert_eq!((f.kind, f.payload), (*k, &p[..]));
            at += n;
        }
        prop_assert_eq!(at, buf.len());
    }
}
