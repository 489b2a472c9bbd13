//! A byte stream that is plain TCP or TLS (either side), behind one enum, so the session code is
//! the same for both. The plain path keeps tokio's lock-free `into_split` halves; a TLS
//! connection has one state for both directions, so its halves share it behind a lock, as
//! `tokio::io::split` does, but the write half can still reach the socket (a lingering close
//! reads from it: `session::linger`), which `tokio::io::split`'s halves hide.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// A whole connection, before it is split into its two directions.
pub enum NetStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half of a [`NetStream`].
pub enum NetRead {
    Plain(OwnedReadHalf),
    Tls(TlsHalf),
}

/// The writing half of a [`NetStream`].
pub enum NetWrite {
    Plain(OwnedWriteHalf),
    Tls(TlsHalf),
}

/// A TLS stream as shared by its two halves. The lock is held only inside one poll call, never
/// across an await: uncontended but for the moment both directions poll at once.
pub type SharedTls = Mutex<TlsStream<TcpStream>>;

/// One half of a split TLS stream (either direction: each is used only for its own).
pub struct TlsHalf(Arc<SharedTls>);

impl TlsHalf {
    fn lock(&self) -> MutexGuard<'_, TlsStream<TcpStream>> {
        // A poll that panicked leaves the TLS state as it was at the panic; the session using
        // it fails on its own.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AsyncRead for TlsHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.lock().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}

impl NetStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, NetStream::Tls(_))
    }

    pub fn into_split(self) -> (NetRead, NetWrite) {
        match self {
            NetStream::Plain(s) => {
                let (r, w) = s.into_split();
                (NetRead::Plain(r), NetWrite::Plain(w))
            }
            NetStream::Tls(s) => {
                let shared = Arc::new(Mutex::new(*s));
                (
                    NetRead::Tls(TlsHalf(shared.clone())),
                    NetWrite::Tls(TlsHalf(shared)),
                )
            }
        }
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for NetStream {
    fn from(s: tokio_rustls::server::TlsStream<TcpStream>) -> NetStream {
        NetStream::Tls(Box::new(TlsStream::Server(s)))
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for NetStream {
    fn from(s: tokio_rustls::client::TlsStream<TcpStream>) -> NetStream {
        NetStream::Tls(Box::new(TlsStream::Client(s)))
    }
}

/// Forwards a poll call to whichever variant `$self` is.
macro_rules! dispatch {
    ($self:ident, $t:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            $t::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            $t::Tls($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

macro_rules! impl_read {
    ($t:ident) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                dispatch!(self, $t, s => s.poll_read(cx, buf))
            }
        }
    };
}

macro_rules! impl_write {
    ($t:ident) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                dispatch!(self, $t, s => s.poll_write(cx, buf))
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                dispatch!(self, $t, s => s.poll_write_vectored(cx, bufs))
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $t::Plain(s) => s.is_write_vectored(),
                    $t::Tls(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                dispatch!(self, $t, s => s.poll_flush(cx))
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                dispatch!(self, $t, s => s.poll_shutdown(cx))
            }
        }
    };
}

impl_read!(NetStream);
impl_write!(NetStream);
impl_read!(NetRead);
impl_write!(NetWrite);

impl crate::session::ClientSocket for NetWrite {
    fn linger_socket(&mut self) -> Option<crate::session::LingerSocket<'_>> {
        match self {
            NetWrite::Plain(w) => w.linger_socket(),
            NetWrite::Tls(w) => Some(crate::session::LingerSocket::Tls(&w.0)),
        }
    }
}

impl crate::session::ClientSocket for OwnedWriteHalf {
    fn linger_socket(&mut self) -> Option<crate::session::LingerSocket<'_>> {
        let socket: &TcpStream = (*self).as_ref();
        Some(crate::session::LingerSocket::Registered(socket))
    }
}
