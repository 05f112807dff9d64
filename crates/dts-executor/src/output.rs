//! Capped capture of a child's stdout or stderr.
//!
//! The executor reads both streams at the same time (a child blocked on a full
//! stderr pipe would never finish writing stdout). Each stream keeps at most
//! `cap` bytes; the rest is still read, so the child never blocks, and thrown
//! away.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of one read from a pipe; the capacity of a Linux pipe is 64 KiB, so
/// a few reads drain it.
const CHUNK: usize = 8 * 1024;

/// The kept bytes of one stream.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    cap: usize,
    kept: Vec<u8>,
    truncated: bool,
}

impl Capture {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            kept: Vec::new(),
            truncated: false,
        }
    }

    /// Reads `reader` to its end (or first error), keeping up to the cap.
    /// Stopping early on an error is fine: what was read is still reported.
    pub(crate) async fn fill_from<R: AsyncRead + Unpin>(&mut self, reader: Option<R>) {
        let Some(mut reader) = reader else { return };
        let mut chunk = [0u8; CHUNK];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => self.push(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "reading child output failed; keeping what was read");
                    return;
                }
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The kept text (invalid UTF-8 replaced, so binary output is safe) and
    /// whether bytes were dropped. A character cut in half by the cap is
    /// dropped whole rather than shown as a replacement character.
    pub(crate) fn finish(mut self) -> (String, bool) {
        if self.truncated {
            if let Err(e) = std::str::from_utf8(&self.kept) {
                // `error_len() == None`: the bytes end inside a character.
                if e.error_len().is_none() {
                    self.kept.truncate(e.valid_up_to());
                }
            }
        }
        let text = match String::from_utf8(self.kept) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        (text, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn capture(cap: usize, input: &[u8]) -> (String, bool) {
        let mut c = Capture::new(cap);
        c.fill_from(Some(input)).await;
        c.finish()
    }

    #[tokio::test]
    async fn output_shorter_than_the_cap_is_kept_whole() {
        assert_eq!(capture(10, b"hello").await, ("hello".to_owned(), false));
    }

    #[tokio::test]
    async fn output_of_exactly_the_cap_is_not_truncated() {
        assert_eq!(capture(5, b"hello").await, ("hello".to_owned(), false));
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_cut_and_flagged() {
        assert_eq!(capture(4, b"hello").await, ("hell".to_owned(), true));
    }

    #[tokio::test]
    async fn output_much_larger_than_a_read_chunk_is_drained_and_cut() {
        let big = vec![b'x'; 10 * CHUNK + 3];
        let (text, truncated) = capture(CHUNK + 1, &big).await;
        assert_eq!(text, "x".repeat(CHUNK + 1));
        assert!(truncated);
    }

    #[tokio::test]
    async fn a_zero_cap_keeps_nothing_and_flags_any_output() {
        assert_eq!(capture(0, b"x").await, (String::new(), true));
        assert_eq!(capture(0, b"").await, (String::new(), false));
    }

    #[tokio::test]
    async fn the_cap_does_not_leave_half_a_character() {
        // "é" is two bytes; a cap of 2 cuts it after its first byte.
        assert_eq!(capture(2, "aé".as_bytes()).await, ("a".to_owned(), true));
    }

    #[tokio::test]
    async fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(
            capture(100, b"\xff\xfeok").await,
            ("\u{fffd}\u{fffd}ok".to_owned(), false)
        );
    }

    #[tokio::test]
    async fn a_missing_stream_reads_as_empty() {
        let mut c = Capture::new(10);
        c.fill_from(None::<&[u8]>).await;
        assert_eq!(c.finish(), (String::new(), false));
    }
}
