//! Capped capture of a child's stdout or stderr.
//!
//! The executor reads both streams at the same time (a child blocked on a full
//! stderr pipe would never finish writing stdout). Each stream keeps at most
//! `cap` bytes, cut at a byte boundary (output is bytes, not text); the rest
//! is still read, so the child never blocks, counted, and thrown away. The
//! count lets a user be told by how much their output was cut.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Which of an item's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The item's stdout.
    Stdout,
    /// The item's stderr.
    Stderr,
}

/// Sees every chunk an item writes, as it is read, besides the capture:
/// what live logs are built on. Called on the item's own future, so it must
/// not block; a tap that has nothing to do should return at once.
pub trait OutputTap: Send + Sync {
    /// `bytes` were just read from the item's `stream`.
    fn write(&self, stream: OutputStream, bytes: &[u8]);
}

/// Size of one read from a pipe; the capacity of a Linux pipe is 64 KiB, so
/// a few reads drain it.
const CHUNK: usize = 8 * 1024;

/// The kept bytes of one stream.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    cap: usize,
    kept: Vec<u8>,
    /// Every byte the stream delivered, kept or not.
    total: u64,
}

/// Where a stream's chunks go besides the capture, if anywhere.
pub(crate) type Tap<'a> = Option<(&'a dyn OutputTap, OutputStream)>;

/// What one stream wrote, as the executor reports it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Captured {
    /// The first `cap` bytes, exactly as written.
    pub(crate) bytes: Vec<u8>,
    /// More was written than the cap kept.
    pub(crate) truncated: bool,
    /// Bytes written in all, including those past the cap.
    pub(crate) total: u64,
}

impl Capture {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            kept: Vec::new(),
            total: 0,
        }
    }

    /// Reads `reader` to its end (or first error), keeping up to the cap.
    /// Stopping early on an error is fine: what was read is still reported.
    /// Each chunk read also goes to `tap`, uncapped: the tap bounds itself.
    pub(crate) async fn fill_from<R: AsyncRead + Unpin>(
        &mut self,
        reader: Option<R>,
        tap: Tap<'_>,
    ) {
        let Some(mut reader) = reader else { return };
        let mut chunk = [0u8; CHUNK];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => {
                    if let Some((tap, stream)) = tap {
                        tap.write(stream, &chunk[..n]);
                    }
                    self.push(&chunk[..n])
                }
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
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.total = self.total.saturating_add(bytes.len() as u64);
    }

    /// The kept bytes, unchanged (binary output such as `gzip -c` must come
    /// back exactly), whether bytes were dropped, and how many were written.
    pub(crate) fn finish(self) -> Captured {
        Captured {
            truncated: self.total > self.kept.len() as u64,
            bytes: self.kept,
            total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn capture(cap: usize, input: &[u8]) -> (Vec<u8>, bool, u64) {
        let mut c = Capture::new(cap);
        c.fill_from(Some(input), None).await;
        let Captured {
            bytes,
            truncated,
            total,
        } = c.finish();
        (bytes, truncated, total)
    }

    #[tokio::test]
    async fn output_shorter_than_the_cap_is_kept_whole() {
        assert_eq!(capture(10, b"hello").await, (b"hello".to_vec(), false, 5));
    }

    #[tokio::test]
    async fn output_of_exactly_the_cap_is_not_truncated() {
        assert_eq!(capture(5, b"hello").await, (b"hello".to_vec(), false, 5));
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_cut_flagged_and_counted_whole() {
        assert_eq!(capture(4, b"hello").await, (b"hell".to_vec(), true, 5));
    }

    #[tokio::test]
    async fn output_much_larger_than_a_read_chunk_is_drained_cut_and_counted() {
        let big = vec![b'x'; 10 * CHUNK + 3];
        let (bytes, truncated, total) = capture(CHUNK + 1, &big).await;
        assert_eq!(bytes, vec![b'x'; CHUNK + 1]);
        assert!(truncated);
        assert_eq!(total, (10 * CHUNK + 3) as u64);
    }

    #[tokio::test]
    async fn a_zero_cap_keeps_nothing_and_flags_any_output() {
        assert_eq!(capture(0, b"x").await, (Vec::new(), true, 1));
        assert_eq!(capture(0, b"").await, (Vec::new(), false, 0));
    }

    #[tokio::test]
    async fn the_cap_cuts_at_a_byte_even_inside_a_character() {
        // "é" is two bytes; a cap of 2 keeps its first byte: the caller asked
        // for at most 2 bytes of output, and bytes are what is kept.
        assert_eq!(
            capture(2, "aé".as_bytes()).await,
            (vec![b'a', 0xc3], true, 3)
        );
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_are_kept_exactly() {
        assert_eq!(
            capture(100, b"\xff\xfeok\x00\x1f\x8b").await,
            (b"\xff\xfeok\x00\x1f\x8b".to_vec(), false, 7)
        );
    }

    #[tokio::test]
    async fn a_tap_sees_every_chunk_even_past_the_cap() {
        struct Seen(std::sync::Mutex<Vec<(OutputStream, Vec<u8>)>>);
        impl OutputTap for Seen {
            fn write(&self, stream: OutputStream, bytes: &[u8]) {
                self.0.lock().unwrap().push((stream, bytes.to_vec()));
            }
        }
        let seen = Seen(std::sync::Mutex::new(Vec::new()));
        let mut c = Capture::new(2);
        c.fill_from(Some(&b"hello"[..]), Some((&seen, OutputStream::Stderr)))
            .await;
        assert_eq!(c.finish().bytes, b"he");
        assert_eq!(
            *seen.0.lock().unwrap(),
            [(OutputStream::Stderr, b"hello".to_vec())]
        );
    }

    #[tokio::test]
    async fn a_missing_stream_reads_as_empty() {
        let mut c = Capture::new(10);
        c.fill_from(None::<&[u8]>, None).await;
        assert_eq!(c.finish(), Captured::default());
    }
}
