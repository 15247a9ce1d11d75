//! Masking secrets in a byte stream whose writes may split them.

/// Replaces secret values in a byte stream with `***`, also when a secret is split across writes:
/// bytes that could be the start of a secret are held back until the next write decides.
///
/// The bulk of each write is searched with one Aho-Corasick automaton over all the secrets
/// (leftmost-longest, so a secret that contains another is masked whole), which skips ahead with
/// a vectorised scan for the secrets' bytes; only the last `longest - 1` bytes, where a secret may
/// be cut off, are looked at position by position.
#[derive(Debug)]
pub(crate) struct Masker {
    pub(super) secrets: Vec<Vec<u8>>,
    finder: Option<aho_corasick::AhoCorasick>,
    longest: usize,
    pending: Vec<u8>,
}

pub(crate) const MASK: &[u8] = b"***";

impl Masker {
    pub(crate) fn new(secrets: &[Vec<u8>]) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets.iter().filter(|s| !s.is_empty()).cloned().collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let finder = (!secrets.is_empty()).then(|| {
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&secrets)
                .expect("a few secrets of bounded size always build an automaton")
        });
        Masker {
            longest: secrets.first().map_or(0, Vec::len),
            secrets,
            finder,
            pending: Vec::new(),
        }
    }

    /// Whether there is nothing to mask.
    pub(crate) fn is_noop(&self) -> bool {
        self.secrets.is_empty()
    }

    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(finder) = &self.finder else {
            out.extend_from_slice(data);
            return;
        };
        self.pending.extend_from_slice(data);
        let buf = &self.pending;
        // A match that starts before `safe` has every longer secret's bytes in `buf`, so the
        // automaton's choice is final; from `safe` on a secret may still be cut off.
        let safe = buf.len().saturating_sub(self.longest - 1);
        let mut plain_start = mask_matches(finder, buf, safe, out);
        let mut i = plain_start.max(safe);
        'scan: while i < buf.len() {
            let rest = &buf[i..];
            if self
                .secrets
                .iter()
                .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                // `rest` may be the beginning of a (longer) secret: wait for more bytes.
                break;
            }
            for s in &self.secrets {
                if rest.starts_with(s) {
                    out.extend_from_slice(&buf[plain_start..i]);
                    out.extend_from_slice(MASK);
                    i += s.len();
                    plain_start = i;
                    continue 'scan;
                }
            }
            i += 1;
        }
        out.extend_from_slice(&buf[plain_start..i]);
        self.pending.drain(..i);
    }

    /// The end of the stream: what was held back is masked with nothing more to wait for (a
    /// secret inside bytes that could have begun a longer one is masked too).
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        let Some(finder) = &self.finder else {
            out.append(&mut self.pending);
            return;
        };
        let plain_start = mask_matches(finder, &self.pending, self.pending.len(), out);
        out.extend_from_slice(&self.pending[plain_start..]);
        self.pending.clear();
    }
}

/// Copies `buf` to `out` with every match that starts before `until` masked, up to the end of
/// the last one; where the unmasked rest begins.
fn mask_matches(
    finder: &aho_corasick::AhoCorasick,
    buf: &[u8],
    until: usize,
    out: &mut Vec<u8>,
) -> usize {
    let mut plain_start = 0;
    for m in finder.find_iter(buf) {
        if m.start() >= until {
            break;
        }
        out.extend_from_slice(&buf[plain_start..m.start()]);
        out.extend_from_slice(MASK);
        plain_start = m.end();
    }
    plain_start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(secrets: &[&str], writes: &[&str]) -> String {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        let mut m = Masker::new(&secrets);
        let mut out = Vec::new();
        for w in writes {
            m.push(w.as_bytes(), &mut out);
        }
        m.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_and_split_secrets() {
        assert_eq!(mask(&["hunter2"], &["pw=hunter2!"]), "pw=***!");
        assert_eq!(mask(&["hunter2"], &["pw=hun", "ter2!"]), "pw=***!");
        assert_eq!(
            mask(&["hunter2"], &["h", "u", "n", "t", "e", "r", "2", "\n"]),
            "***\n"
        );
        assert_eq!(mask(&["hunter2"], &["hunt", "ing"]), "hunting");
        assert_eq!(mask(&["hunter2"], &["hunte"]), "hunte");
        assert_eq!(mask(&["abc", "abcdef"], &["xabcdefy abc"]), "x***y ***");
        assert_eq!(mask(&["aab"], &["aaab"]), "a***");
        assert_eq!(mask(&[""], &["nothing"]), "nothing");
    }

    /// The masker before the automaton: every position tried, longest secret first.
    fn reference(secrets: &[&[u8]], stream: &[u8]) -> Vec<u8> {
        let mut secrets: Vec<&[u8]> = secrets.to_vec();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let (mut out, mut i) = (Vec::new(), 0);
        'scan: while i < stream.len() {
            for s in &secrets {
                if stream[i..].starts_with(s) {
                    out.extend_from_slice(MASK);
                    i += s.len();
                    continue 'scan;
                }
            }
            out.push(stream[i]);
            i += 1;
        }
        out
    }

    #[test]
    fn any_split_of_any_stream_masks_as_the_reference() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // Overlapping, contained, and one the prefix of others.
        let secrets: [&[u8]; 4] = [b"abab", b"ba", b"abcab", b"ab"];
        for _ in 0..2000 {
            let len = next(60) as usize;
            let stream: Vec<u8> = (0..len).map(|_| b"abc"[next(3) as usize]).collect();
            let owned: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
            let mut m = Masker::new(&owned);
            let mut out = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let n = (1 + next(8) as usize).min(stream.len() - at);
                m.push(&stream[at..at + n], &mut out);
                at += n;
            }
            m.finish(&mut out);
            assert_eq!(
                out,
                reference(&secrets, &stream),
                "{:?}",
                String::from_utf8_lossy(&stream)
            );
        }
    }
}
