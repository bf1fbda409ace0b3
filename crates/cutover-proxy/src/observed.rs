//! A byte stream that reports what moves through it: the client connection's watchdog
//! (`listen::Watched`) and the upgraded tunnel's idle clock (`forward/tunnel.rs`) both
//! wrap their streams in [`Observed`], each with its own [`IoObserver`].

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an [`Observed`] stream tells about its traffic. Both methods default to nothing.
pub(crate) trait IoObserver {
    /// A read brought `bytes` (never empty).
    fn read(&mut self, bytes: &[u8]) {
        let _ = bytes;
    }

    /// A write took `count` bytes (never zero).
    fn wrote(&mut self, count: usize) {
        let _ = count;
    }
}

/// `io`, with every read and write reported to `observer`. Generic, so it costs a call
/// per read or write and nothing else.
pub(crate) struct Observed<T, O> {
    pub(crate) io: T,
    pub(crate) observer: O,
}

impl<T: AsyncRead + Unpin, O: IoObserver + Unpin> AsyncRead for Observed<T, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.observer.read(read);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin, O: IoObserver + Unpin> Observed<T, O> {
    /// Reports a write's count when it took any bytes.
    fn written(&mut self, result: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if let Poll::Ready(Ok(count)) = result
            && count > 0
        {
            self.observer.wrote(count);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin, O: IoObserver + Unpin> AsyncWrite for Observed<T, O> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
