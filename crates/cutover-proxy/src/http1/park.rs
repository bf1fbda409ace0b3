//! The byte stream of a parkable HTTP/1 connection: the socket (plain, or TLS), bytes read
//! before and not yet used, and the watchdog's observer.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::listen::{Activity, ArrivingBytes};
use crate::observed::IoObserver;

/// The most one read of [`ParkIo::poll_read_socket`] takes: as much as hyper's smallest
/// read buffer, so that a head hyper would take whole fits.
pub(crate) const READ_ROOM: usize = 8192;

/// A client stream a parked connection can wait on: readable when bytes wait to be read,
/// in the socket or already inside the stream.
pub(crate) trait ParkStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether bytes can arrive that give nothing to read yet (over TLS, a record not yet
    /// whole): such bytes may be the start of a head, to be timed as one.
    const PARTIAL_RECORDS: bool;

    /// Whether the stream has something to read (or is closed); registers `cx` to be
    /// woken when it has, if not yet.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl ParkStream for TcpStream {
    const PARTIAL_RECORDS: bool = false;

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

/// Boxed: a TLS session is large, and the stream moves in and out of hyper's connection.
impl ParkStream for Box<TlsStream<TcpStream>> {
    const PARTIAL_RECORDS: bool = true;

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let (socket, session) = self.get_ref();
        if !session.wants_read() {
            // Decrypted bytes (or the peer's close) wait inside the session already.
            return Poll::Ready(Ok(()));
        }
        socket.poll_read_ready(cx)
    }
}

/// A client stream that hyper reads and writes while a request is under way and that
/// outlives hyper's connection while it idles. It reports arriving bytes to the
/// connection's [`Activity`] and whether the last write or flush went through, and it
/// ignores hyper's shutdown while the connection is being parked.
pub(crate) struct ParkIo<T = TcpStream> {
    stream: T,
    /// Bytes read from the socket by an earlier hyper connection and not used: served
    /// before the socket is read again.
    unread: Bytes,
    observer: ArrivingBytes,
}

impl<T: ParkStream> ParkIo<T> {
    /// `stream`, watched for `activity`.
    pub(crate) fn new(stream: T, activity: Arc<Activity>) -> ParkIo<T> {
        ParkIo {
            stream,
            unread: Bytes::new(),
            observer: ArrivingBytes::settled(activity),
        }
    }

    /// Puts `bytes` (read earlier and not used) before anything still unread.
    pub(crate) fn unread(&mut self, bytes: Bytes) {
        let rest = std::mem::take(&mut self.unread);
        self.unread = super::join(bytes, rest);
    }

    /// Puts `bytes` (read just now, while a request is under way) after anything still
    /// unread.
    pub(crate) fn append_unread(&mut self, bytes: Bytes) {
        let front = std::mem::take(&mut self.unread);
        self.unread = super::join(front, bytes);
    }

    /// The bytes read earlier and not yet served, taken out.
    pub(crate) fn take_unread(&mut self) -> Bytes {
        std::mem::take(&mut self.unread)
    }

    /// Reads the socket (not the unread bytes) once, up to [`READ_ROOM`] bytes: empty when
    /// the client closed. The bytes are copied out of a buffer on the stack, so a
    /// connection holds no read buffer of its own. Unlike [`AsyncRead`], this does not
    /// mark a head as arriving (which reads the clock): a request read whole needs no
    /// head timeout, and the caller marks one that is not.
    pub(crate) fn poll_read_socket(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<Bytes>> {
        let mut room = [std::mem::MaybeUninit::<u8>::uninit(); READ_ROOM];
        let mut buf = ReadBuf::uninit(&mut room);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Bytes::copy_from_slice(buf.filled()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether bytes read earlier wait to be served.
    pub(crate) fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// The stream.
    pub(crate) fn stream(&self) -> &T {
        &self.stream
    }

    /// The stream back, for a connection that turned out not to be HTTP/1 (nothing has
    /// been read from it yet).
    pub(crate) fn into_stream(self) -> T {
        self.stream
    }

    /// Whether the stream has something to read (or is closed); registers `cx` to be
    /// woken when it has, if not yet.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream.poll_readable(cx)
    }

    fn activity(&self) -> &Activity {
        self.observer.activity()
    }
}

impl<T: ParkStream> AsyncRead for ParkIo<T> {
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

impl<T: ParkStream> ParkIo<T> {
    /// Notes whether a write or flush went through, so that a connection still writing
    /// is not parked.
    fn wrote<R>(&self, result: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        self.activity()
            .write_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl<T: ParkStream> AsyncWrite for ParkIo<T> {
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
        // A TLS stream may hold written bytes until flushed.
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.wrote(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.activity().parking.load(Ordering::Relaxed) {
            // hyper ends an idle connection being parked: the socket stays open.
            return Poll::Ready(Ok(()));
        }
        // hyper closes the connection of its own accord: it must not be parked half
        // closed (a TLS close may wait on a full socket).
        self.activity().closing.store(true, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
