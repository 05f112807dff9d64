//! What a run's standard input gets: the item, or a stream of chunks.
//!
//! An item's input is written to stdin whole, with a newline: it is at most
//! 128 KiB anyway (it is also an argument). The `reduce` step of a task is
//! different: one run that reads every item's result, as JSON lines, on its
//! stdin — up to a million results, far too many to hold in memory at once —
//! so they come from a producer a chunk at a time ([`StdinSource`]).
//!
//! Either way a child that exits or closes its stdin without reading
//! everything is fine: a broken pipe ends the feed, not the run.

use std::io;
use std::os::fd::AsRawFd;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc};

/// The standard input of a streamed run ([`crate::Executor::run_streamed`]):
/// chunks of bytes from a producer, written to the child's stdin in order;
/// stdin is closed once every sender is gone.
///
/// It exists for a task's `reduce` step, one script that reads all the
/// task's results as JSON lines on its stdin. There may be a million of
/// them, so they are never gathered in memory: a producer sends them through
/// a bounded channel, and the bound is the back-pressure — while the child
/// reads slowly, the producer's `send` waits.
///
/// The producer stops when its `send` fails: the run drops this source as
/// soon as it stops feeding — the stream was written out, the child closed
/// its stdin or exited, or it was killed on timeout or cancellation — and
/// also when the run never started the child.
#[derive(Debug)]
pub struct StdinSource {
    chunks: mpsc::Receiver<Vec<u8>>,
}

impl StdinSource {
    /// A source fed by the senders of `chunks`.
    pub fn new(chunks: mpsc::Receiver<Vec<u8>>) -> Self {
        Self { chunks }
    }

    /// A bounded channel whose receiving end is the source: the producer
    /// keeps the sender and may be at most `capacity` chunks ahead of the
    /// child. Panics when `capacity` is 0, as [`mpsc::channel`] does.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Vec<u8>>, Self) {
        let (sender, chunks) = mpsc::channel(capacity);
        (sender, Self { chunks })
    }
}

impl From<mpsc::Receiver<Vec<u8>>> for StdinSource {
    fn from(chunks: mpsc::Receiver<Vec<u8>>) -> Self {
        Self::new(chunks)
    }
}

/// Feeds a fresh process's stdin: the stream when there is one, the item
/// otherwise.
pub(crate) async fn fresh(stdin: Option<pipe::Sender>, input: &[u8], source: Option<StdinSource>) {
    match source {
        Some(source) => stream(stdin, source).await,
        None => item(stdin, input).await,
    }
}

/// Feeds a warm item's stdin pipe (see the `warm` module): the stream when
/// there is one, the item otherwise. `opened` is notified when the subshell
/// has opened its end of the pipe.
///
/// The executor's end of that named pipe is open for reading too (so that
/// opening it did not wait for the subshell), and a pipe with a reader left
/// never reports a broken pipe. That does not matter for an item, written
/// at once; a stream would leave its producer waiting for a child that
/// closed its stdin until the child ends. So once the subshell has opened
/// the pipe, a stream is written through a write-only descriptor of the
/// same pipe, and the read-write one is closed.
pub(crate) async fn warm(
    stdin: Option<pipe::Sender>,
    input: &[u8],
    source: Option<StdinSource>,
    opened: &Notify,
) {
    let Some(source) = source else {
        return item(stdin, input).await;
    };
    let Some(shared) = stdin else { return };
    opened.notified().await;
    let writer = match write_only(&shared) {
        Ok(writer) => {
            drop(shared);
            writer
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not reopen a warm item's stdin write-only; streaming through the shared end");
            shared
        }
    };
    stream(Some(writer), source).await;
}

/// A write-only descriptor of the pipe `shared` is an end of. Opened
/// through this process's own descriptor, not by the pipe's path: the item's
/// user owns the directory the path is in.
fn write_only(shared: &pipe::Sender) -> io::Result<pipe::Sender> {
    let path = format!("/proc/self/fd/{}", shared.as_raw_fd());
    pipe::OpenOptions::new().open_sender(path)
}

/// Writes the item and a newline to the child's stdin, then closes it.
async fn item<W: AsyncWrite + Unpin>(stdin: Option<W>, input: &[u8]) {
    let Some(mut stdin) = stdin else { return };
    let written = match stdin.write_all(input).await {
        Ok(()) => stdin.write_all(b"\n").await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::BrokenPipe {
            tracing::debug!(error = %e, "could not write the item to the child's stdin");
        }
    }
}

/// Writes the source's chunks to the child's stdin until the source ends,
/// then closes it. Returning (or being dropped, when the run ends first)
/// drops the source, so the producer's next `send` fails.
async fn stream<W: AsyncWrite + Unpin>(stdin: Option<W>, mut source: StdinSource) {
    let Some(mut stdin) = stdin else { return };
    while let Some(chunk) = source.chunks.recv().await {
        if let Err(e) = stdin.write_all(&chunk).await {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::debug!(error = %e, "could not write to the child's stdin");
            }
            return;
        }
    }
}
