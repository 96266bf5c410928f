//! Secret values taken out of exec output before it is stored or sent: a command that prints a
//! secret it was given (an agent echoing its API key) must not put the value in the database or
//! an API response. Each occurrence becomes `[secret:NAME]`. Values shorter than
//! [`MIN_LEN`] bytes are not looked for (they would match ordinary output).
//!
//! Output arrives in chunks and a value can straddle two of them; the chunk before is already
//! stored, so only the part in the later chunk is replaced, and at most the value's first bytes
//! (never all of them) stay in the earlier one. Commands write a value in one `write` in
//! practice, which lands in one chunk.

use stockade_core::{ExecEvent, OutputStream};

/// Shortest value redacted.
pub const MIN_LEN: usize = 4;

/// The secrets of one exec and what the previous chunk of each stream ended with.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Vec<(String, Vec<u8>)>,
    tails: [Vec<u8>; 2],
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

impl Redactor {
    /// A redactor for `(name, value)` pairs; `None` when there is nothing to look for.
    pub fn new(secrets: Vec<(String, String)>) -> Option<Redactor> {
        let secrets: Vec<(String, Vec<u8>)> = secrets
            .into_iter()
            .filter(|(_, v)| v.len() >= MIN_LEN)
            .map(|(n, v)| (n, v.into_bytes()))
            .collect();
        (!secrets.is_empty()).then(|| Redactor {
            secrets,
            tails: Default::default(),
        })
    }

    /// Redacts an output event in place.
    pub fn apply(&mut self, event: &mut ExecEvent) {
        let ExecEvent::Output { stream, data, .. } = event else {
            return;
        };
        let slot = match stream {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        };
        let original = std::mem::take(data);
        *data = self.redact(&original, slot);
        let keep = self.secrets.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        let tail = &mut self.tails[slot];
        tail.extend_from_slice(&original);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }

    fn redact(&self, data: &[u8], slot: usize) -> Vec<u8> {
        let tail = &self.tails[slot];
        // The rest of a value whose first bytes ended the previous chunk.
        let mut start = 0;
        let mut out = Vec::with_capacity(data.len());
        for (name, value) in &self.secrets {
            let straddles =
                (1..value.len()).find(|&i| tail.ends_with(&value[..i]) && data.starts_with(&value[i..]));
            if let Some(i) = straddles {
                out.extend_from_slice(format!("[secret:{name}]").as_bytes());
                start = value.len() - i;
                break;
            }
        }
        // Whole values, earliest first.
        let mut at = start;
        loop {
            let next = self
                .secrets
                .iter()
                .filter_map(|(name, value)| find(data, value, at).map(|p| (p, name, value.len())))
                .min_by_key(|(p, _, len)| (*p, std::cmp::Reverse(*len)));
            match next {
                Some((p, name, len)) => {
                    out.extend_from_slice(&data[at..p]);
                    out.extend_from_slice(format!("[secret:{name}]").as_bytes());
                    at = p + len;
                }
                None => {
                    out.extend_from_slice(&data[at..]);
                    return out;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(stream: OutputStream, data: &[u8]) -> ExecEvent {
        ExecEvent::Output {
            seq: 1,
            stream,
            data: data.to_vec(),
        }
    }

    fn data(e: &ExecEvent) -> String {
        match e {
            ExecEvent::Output { data, .. } => String::from_utf8_lossy(data).into_owned(),
            _ => String::new(),
        }
    }

    #[test]
    fn values_are_replaced_by_their_names() {
        let mut r = Redactor::new(vec![
            ("KEY".into(), "sk-12345".into()),
            ("PIN".into(), "12".into()),
        ])
        .unwrap();
        let mut e = out(OutputStream::Stdout, b"key=sk-12345 again sk-12345 pin=12\n");
        r.apply(&mut e);
        assert_eq!(data(&e), "key=[secret:KEY] again [secret:KEY] pin=12\n");
    }

    #[test]
    fn a_value_split_across_chunks_keeps_only_its_first_bytes_in_the_first() {
        let mut r = Redactor::new(vec![("KEY".into(), "sk-12345".into())]).unwrap();
        let mut a = out(OutputStream::Stderr, b"x sk-12");
        let mut b = out(OutputStream::Stderr, b"345 y");
        let mut other = out(OutputStream::Stdout, b"345");
        r.apply(&mut a);
        r.apply(&mut other);
        r.apply(&mut b);
        assert_eq!(data(&a), "x sk-12");
        assert_eq!(data(&other), "345", "streams keep their own tails");
        assert_eq!(data(&b), "[secret:KEY] y");
    }

    #[test]
    fn nothing_to_redact_means_no_redactor() {
        assert!(Redactor::new(vec![("A".into(), "abc".into())]).is_none());
        assert!(Redactor::new(Vec::new()).is_none());
    }
}
