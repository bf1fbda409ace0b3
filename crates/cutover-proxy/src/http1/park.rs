//! The byte stream of a parkable HTTP/1 connection: the socket, bytes read before and not
//! yet used, and the watchdog's observer.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::listen::{Activity, ArrivingBytes};
use crate::observed::IoObserver;

/// A client socket that hyper reads and writes while a request is under way and that
/// outlives hyper's connection while it idles. It reports arriving bytes to the
/// connection's [`Activity`] and whether the last write went through, and it ignores
/// hyper's shutdown while the connection is being parked.
pub(crate) struct ParkIo {
    stream: TcpStream,
    /// Bytes read from the socket by an earlier hyper connection and not used: served
    /// before the socket is read again.
    unread: Bytes,
    observer: ArrivingBytes,
}

impl ParkIo {
    /// `stream`, watched for `activity`.
    pub(crate) fn new(stream: TcpStream, activity: Arc<Activity>) -> ParkIo {
        ParkIo {
            stream,
            unread: Bytes::new(),
            observer: ArrivingBytes::new(activity),
        }
    }

    /// Puts `bytes` (read earlier and not used) before anything still unread.
    pub(crate) fn unread(&mut self, bytes: Bytes) {
        let rest = std::mem::take(&mut self.unread);
        self.unread = super::join(bytes, rest);
    }

    /// Whether bytes read earlier wait to be served.
    pub(crate) fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// The socket, to peek at before anything is read.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket back, for a connection that turned out not to be HTTP/1 (nothing has
    /// been read from it yet).
    pub(crate) fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Whether the socket has something to read (or is closed); registers `cx` to be
    /// woken when it has, if not yet.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream.poll_read_ready(cx)
    }

    fn activity(&self) -> &Activity {
        self.observer.activity()
    }
}

impl AsyncRead for ParkIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            // Arrived (and reported) before: not reported again.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.observer.read(read);
        }
        result
    }
}

impl ParkIo {
    /// Notes whether a write went through, so that a connection still writing is not
    /// parked.
    fn wrote(&self, result: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        self.activity()
            .write_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for ParkIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.activity().parking.load(Ordering::Relaxed) {
            // hyper ends an idle connection being parked: the socket stays open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
