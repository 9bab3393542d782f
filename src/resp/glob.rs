//! Redis's glob patterns (`SCAN MATCH`, `KEYS`, `CONFIG GET`), as its
//! `stringmatchlen` reads them: `*` any bytes, `?` one byte, `[abc]`,
//! `[^abc]` and `[a-z]` a byte of (or not of) a set, `\x` the byte `x`.
//! Bytes, not characters: keys are raw bytes.

/// Whether `s` matches `pattern`.
pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Where the last `*` was, and where in `s` it was tried up to: on a
    // mismatch the star takes one more byte (linear backtracking, as
    // one star at a time is enough for a greedy match).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, i));
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((hit, next)) = class(pattern, p, s[i]) {
                        if hit {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        // An unclosed `[` is itself.
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                star = Some((sp, si + 1));
                p = sp;
                i = si + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The class starting at `pattern[at]` (`[`): whether `c` is in it, and
/// the index past its `]`; `None` if it is never closed.
fn class(pattern: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut p = at + 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut hit = false;
    loop {
        match *pattern.get(p)? {
            b']' => return Some((hit != negate, p + 1)),
            b'\\' if p + 1 < pattern.len() => {
                hit |= pattern[p + 1] == c;
                p += 2;
            }
            lo if pattern.get(p + 1) == Some(&b'-')
                && p + 2 < pattern.len()
                && pattern[p + 2] != b']' =>
            {
                let hi = pattern[p + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                hit |= (lo..=hi).contains(&c);
                p += 3;
            }
            x => {
                hit |= x == c;
                p += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_as_redis_reads_them() {
        let yes: &[(&str, &str)] = &[
            ("*", ""),
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h*llo", "hllo"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("h[b-a]llo", "hallo"),
            ("key:*:x", "key:12:x"),
            ("a\\*b", "a*b"),
            ("[\\]]", "]"),
            ("*a*b*", "xxaxxbxx"),
            ("user:1*", "user:1"),
        ];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes()), "{p} should match {s}");
        }
        let no: &[(&str, &str)] = &[
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("h[a-b]llo", "hcllo"),
            ("a\\*b", "axb"),
            ("key:*:x", "key:12:y"),
            ("", "a"),
            ("abc", "ab"),
            ("*a*b*", "xxbxxaxx"),
        ];
        for (p, s) in no {
            assert!(
                !matches(p.as_bytes(), s.as_bytes()),
                "{p} should not match {s}"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_match_too() {
        assert!(matches(b"\xff*", b"\xff\x00\x01"));
        assert!(matches(b"[\x00-\x10]?", b"\x05\xfe"));
        assert!(!matches(b"[\x00-\x10]?", b"\x20\xfe"));
    }
}
