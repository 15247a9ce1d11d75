//! Masking secrets in a byte stream whose writes may split them.

/// Replaces secret values in a byte stream with `***`, also when a secret is split across writes:
/// bytes that could be the start of a secret are held back until the next write decides.
#[derive(Debug)]
pub(crate) struct Masker {
    pub(super) secrets: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

pub(crate) const MASK: &[u8] = b"***";

impl Masker {
    pub(crate) fn new(secrets: &[Vec<u8>]) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets.iter().filter(|s| !s.is_empty()).cloned().collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Masker {
            secrets,
            pending: Vec::new(),
        }
    }

    /// Whether there is nothing to mask.
    pub(crate) fn is_noop(&self) -> bool {
        self.secrets.is_empty()
    }

    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.secrets.is_empty() {
            out.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        let buf = &self.pending;
        let mut i = 0;
        let mut plain_start = 0;
        'scan: while i < buf.len() {
            let rest = &buf[i..];
            for s in &self.secrets {
                if rest.starts_with(s) {
                    out.extend_from_slice(&buf[plain_start..i]);
                    out.extend_from_slice(MASK);
                    i += s.len();
                    plain_start = i;
                    continue 'scan;
                }
            }
            if self
                .secrets
                .iter()
                .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                // `rest` may be the beginning of a secret: wait for more bytes.
                break;
            }
            i += 1;
        }
        out.extend_from_slice(&buf[plain_start..i]);
        self.pending.drain(..i);
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
    }
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
}
