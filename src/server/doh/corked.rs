//! A socket whose writes can be held ("cork"): the HTTP/2 connection answers every stream that
//! is ready before it lets the bytes out, so that the answers to a batch of requests leave in
//! one `write`, not one each.
//!
//! It sits under TLS: h2 flushes once per stream it accepts, each flush is a TLS record of its
//! own, and with the cork held the records gather here and the flush is a no-op. Once no request
//! is left to answer, the connection releases the cork and polls h2 once more, whose flush then
//! writes them all. One record per answer, not one record for the batch: dnsperf's DoH client
//! (2.10 to 2.14, DNS-OARC/dnsperf#240) loses the second answer of a record that carries two and
//! stalls the connection; a record each, it reads them one at a time.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Past this many bytes held, writes go out even with the cork held (a bound on memory; a
/// batch that large gains nothing more from sharing a `write`).
const HOLD_LIMIT: usize = 64 * 1024;

/// The cork, shared between the connection's loop (which holds and releases it) and its
/// [`Corked`] stream (inside h2). Both live in the same task: `Relaxed` is enough.
#[derive(Debug, Default)]
pub struct Cork {
    held: AtomicBool,
}

impl Cork {
    pub fn hold(&self) {
        self.held.store(true, Ordering::Relaxed);
    }

    /// Releases the cork; true when it was held (there may be bytes to flush).
    pub fn release(&self) -> bool {
        self.held.swap(false, Ordering::Relaxed)
    }

    fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

/// `S` with its writes gathered in a buffer that flushes when the [`Cork`] is not held.
pub struct Corked<S> {
    inner: S,
    cork: Arc<Cork>,
    out: Vec<u8>,
    /// How much of `out` is written to `inner` already.
    written: usize,
}

impl<S: AsyncWrite + Unpin> Corked<S> {
    pub fn new(inner: S, cork: Arc<Cork>) -> Corked<S> {
        Corked {
            inner,
            cork,
            out: Vec::new(),
            written: 0,
        }
    }

    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.len() >= HOLD_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Corked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.out.is_empty() && !self.cork.is_held() {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        ready!(self.poll_room(cx))?;
        self.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.out.is_empty() && !self.cork.is_held() {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        ready!(self.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            self.out.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cork.is_held() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Held: writes and flushes reach nothing; released: one flush writes them all, in order.
    #[tokio::test]
    async fn held_writes_leave_together_at_the_first_released_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let cork = Arc::new(Cork::default());
        let mut w = Corked::new(a, cork.clone());
        cork.hold();
        w.write_all(b"one ").await.unwrap();
        w.flush().await.unwrap();
        w.write_all(b"two").await.unwrap();
        w.flush().await.unwrap();
        let mut got = [0u8; 16];
        // The pipe is empty: the read cannot complete (no wait involved).
        assert!(
            b.read(&mut got).now_or_never().is_none(),
            "nothing written while held"
        );
        assert!(cork.release());
        assert!(!cork.release());
        w.flush().await.unwrap();
        let mut got = [0u8; 7];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
    }

    /// Past the hold limit, writes go out even while held.
    #[tokio::test]
    async fn the_hold_is_bounded() {
        let (a, mut b) = tokio::io::duplex(4 * HOLD_LIMIT);
        let cork = Arc::new(Cork::default());
        let mut w = Corked::new(a, cork.clone());
        cork.hold();
        let chunk = vec![7u8; HOLD_LIMIT];
        w.write_all(&chunk).await.unwrap();
        w.write_all(b"x").await.unwrap();
        let mut got = vec![0u8; HOLD_LIMIT];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, chunk);
    }
}
