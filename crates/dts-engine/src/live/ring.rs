//! The bounded tail of one running item's output.

use dts_executor::OutputStream;
use std::collections::VecDeque;

/// The last `cap` bytes an item wrote, stdout and stderr interleaved in the
/// order they were read, each chunk with its stream. Older bytes are dropped
/// from the front, so memory stays at most `cap` bytes (plus one small
/// header per chunk) however much the item writes.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    chunks: VecDeque<(OutputStream, Vec<u8>)>,
    /// Bytes held in `chunks`.
    held: usize,
    /// Bytes ever written: the offset just past the newest byte.
    written: u64,
}

/// A piece of a ring's content, at its offset in everything the item wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailChunk {
    /// Which stream the bytes came from.
    pub stream: OutputStream,
    /// Where the bytes start in the item's whole output (both streams).
    pub offset: u64,
    /// The bytes, exactly as written.
    pub bytes: Vec<u8>,
}

impl Ring {
    /// An empty ring keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Ring {
        Ring {
            cap,
            chunks: VecDeque::new(),
            held: 0,
            written: 0,
        }
    }

    /// Adds `bytes` of `stream`, dropping the oldest bytes past the cap.
    /// Returns the offset the bytes start at.
    pub fn push(&mut self, stream: OutputStream, bytes: &[u8]) -> u64 {
        let offset = self.written;
        self.written += bytes.len() as u64;
        // Only the last `cap` bytes of a chunk can survive.
        let keep = &bytes[bytes.len().saturating_sub(self.cap)..];
        if keep.is_empty() {
            return offset;
        }
        match self.chunks.back_mut() {
            // Small reads of one stream (a line at a time) share a chunk.
            Some((last, held)) if *last == stream && held.len() < 4096 => {
                held.extend_from_slice(keep)
            }
            _ => self.chunks.push_back((stream, keep.to_vec())),
        }
        self.held += keep.len();
        while self.held > self.cap {
            let excess = self.held - self.cap;
            let Some((_, front)) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= excess {
                self.held -= front.len();
                self.chunks.pop_front();
            } else {
                front.drain(..excess);
                self.held -= excess;
            }
        }
        offset
    }

    /// Bytes ever written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes held now (at most the cap).
    pub fn held(&self) -> usize {
        self.held
    }

    /// The held bytes, oldest first, with their offsets.
    pub fn tail(&self) -> Vec<TailChunk> {
        let mut offset = self.written - self.held as u64;
        self.chunks
            .iter()
            .map(|(stream, bytes)| {
                let chunk = TailChunk {
                    stream: *stream,
                    offset,
                    bytes: bytes.clone(),
                };
                offset += bytes.len() as u64;
                chunk
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutputStream::{Stderr, Stdout};

    fn chunk(stream: OutputStream, offset: u64, bytes: &[u8]) -> TailChunk {
        TailChunk {
            stream,
            offset,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn output_under_the_cap_is_kept_whole_in_order_with_its_streams() {
        let mut ring = Ring::new(100);
        ring.push(Stdout, b"a\n");
        ring.push(Stdout, b"b\n");
        ring.push(Stderr, b"oops\n");
        ring.push(Stdout, b"c\n");
        assert_eq!(
            ring.tail(),
            [
                chunk(Stdout, 0, b"a\nb\n"),
                chunk(Stderr, 4, b"oops\n"),
                chunk(Stdout, 9, b"c\n")
            ]
        );
        assert_eq!((ring.held(), ring.written()), (11, 11));
    }

    #[test]
    fn older_bytes_are_dropped_so_only_the_last_cap_bytes_stay() {
        let mut ring = Ring::new(5);
        ring.push(Stdout, b"abc");
        ring.push(Stderr, b"def");
        ring.push(Stdout, b"g");
        assert_eq!(
            ring.tail(),
            [
                chunk(Stdout, 2, b"c"),
                chunk(Stderr, 3, b"def"),
                chunk(Stdout, 6, b"g")
            ]
        );
        assert_eq!((ring.held(), ring.written()), (5, 7));
    }

    #[test]
    fn a_megabyte_written_keeps_exactly_the_cap_and_counts_everything() {
        let mut ring = Ring::new(64 * 1024);
        for i in 0..128u32 {
            ring.push(Stdout, &[(i % 251) as u8; 8 * 1024]);
        }
        assert_eq!(ring.held(), 64 * 1024);
        assert_eq!(ring.written(), 1024 * 1024);
        let tail = ring.tail();
        assert_eq!(
            tail.first().map(|c| c.offset),
            Some(1024 * 1024 - 64 * 1024)
        );
        assert_eq!(tail.iter().map(|c| c.bytes.len()).sum::<usize>(), 64 * 1024);
        assert_eq!(tail.last().and_then(|c| c.bytes.last()), Some(&127));
    }

    #[test]
    fn one_chunk_larger_than_the_cap_keeps_its_end() {
        let mut ring = Ring::new(3);
        assert_eq!(ring.push(Stderr, b"123456"), 0);
        assert_eq!(ring.tail(), [chunk(Stderr, 3, b"456")]);
    }

    #[test]
    fn a_zero_cap_keeps_nothing_but_counts() {
        let mut ring = Ring::new(0);
        ring.push(Stdout, b"abc");
        assert_eq!(ring.tail(), []);
        assert_eq!(ring.written(), 3);
    }
}
