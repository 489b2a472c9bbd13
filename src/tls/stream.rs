//! A byte stream that is plain TCP or TLS (either side), behind one enum, so the session code is
//! the same for both. The plain path keeps tokio's lock-free `into_split` halves; only TLS
//! streams go through `tokio::io::split` (a TLS connection has one state for both directions).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
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
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of a [`NetStream`].
pub enum NetWrite {
    Plain(OwnedWriteHalf),
    Tls(TlsWrite),
}

/// The writing half of a TLS stream, with a duplicate of its socket's descriptor for a
/// lingering close (`session::linger`): the TLS half gives no access to its socket.
pub struct TlsWrite {
    half: WriteHalf<TlsStream<TcpStream>>,
    socket: Option<std::net::TcpStream>,
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
                // Best effort: without the duplicate a close after an error is not lingering.
                let socket = socket2::SockRef::from(s.get_ref().0)
                    .try_clone()
                    .ok()
                    .map(std::net::TcpStream::from);
                let (r, half) = tokio::io::split(*s);
                (NetRead::Tls(r), NetWrite::Tls(TlsWrite { half, socket }))
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

/// `TlsWrite` writes through its half; the duplicate socket is only for the close.
impl AsyncWrite for TlsWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().half).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().half).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.half.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().half).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().half).poll_shutdown(cx)
    }
}

impl crate::session::ClientSocket for NetWrite {
    fn linger_socket(&mut self) -> Option<crate::session::LingerSocket<'_>> {
        match self {
            NetWrite::Plain(w) => w.linger_socket(),
            NetWrite::Tls(w) => w.socket.take().map(crate::session::LingerSocket::Duplicate),
        }
    }
}

impl crate::session::ClientSocket for OwnedWriteHalf {
    fn linger_socket(&mut self) -> Option<crate::session::LingerSocket<'_>> {
        let socket: &TcpStream = (*self).as_ref();
        Some(crate::session::LingerSocket::Registered(socket))
    }
}
