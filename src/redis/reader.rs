//! The two byte streams of a Redis session, each with its buffer and its parser: commands from
//! the client (limits checked before buffering), reply frames from the upstream (cut without
//! decoding, resumable, and streamable while a large one still arrives).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::command::{Command, CommandParser, ProtocolError};
use super::scan::{ReplyScanner, ScanError};
use crate::ratelimit::{Held, HeldExhausted};

/// Commands from the client.
pub struct ClientReader<R> {
    stream: R,
    buf: BytesMut,
    parser: CommandParser,
    /// The buffer's share of `limits.max_held_client_bytes`.
    held: Held,
}

impl<R: AsyncRead + Unpin> ClientReader<R> {
    /// `limit`: the largest command accepted (a smaller one before login).
    pub fn new(stream: R, limit: usize) -> Self {
        ClientReader {
            stream,
            buf: BytesMut::with_capacity(4096),
            parser: CommandParser::new(limit),
            held: Held::default(),
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.parser.set_limit(limit);
    }

    /// Counts this reader's buffer against the gateway-wide budget from now on.
    pub fn set_held(&mut self, held: Held) {
        self.held = held;
    }

    /// The next complete command among the bytes already read (`None`: read more).
    pub fn next_command(&mut self) -> Result<Option<Command>, ProtocolError> {
        self.parser.next(&mut self.buf)
    }

    /// Reads more from the client; `false` when it closed the connection. Fails when a command
    /// being received would take the gateway-wide budget past `limits.max_held_client_bytes`.
    pub async fn fill(&mut self) -> Result<bool, ReadError> {
        // What was consumed since the last read is given back before waiting for the next.
        self.held.track(self.buf.len())?;
        let n = self.stream.read_buf(&mut self.buf).await?;
        self.held.track(self.buf.len())?;
        Ok(n > 0)
    }

    /// The next command, reading as needed; `None` when the client closed the connection.
    pub async fn next(&mut self) -> Result<Option<Command>, ReadError> {
        loop {
            if let Some(c) = self.next_command()? {
                return Ok(Some(c));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Held(#[from] HeldExhausted),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reply frames from the upstream.
pub struct UpstreamReader<R> {
    stream: R,
    buf: BytesMut,
    scanner: ReplyScanner,
}

impl<R: AsyncRead + Unpin> UpstreamReader<R> {
    pub fn new(stream: R) -> Self {
        UpstreamReader {
            stream,
            buf: BytesMut::with_capacity(4096),
            scanner: ReplyScanner::default(),
        }
    }

    /// The next complete frame among the bytes already read (`None`: read more).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, ScanError> {
        Ok(self
            .scanner
            .next_frame(&self.buf)?
            .map(|n| self.buf.split_to(n).freeze()))
    }

    /// Reads more from the upstream; `false` when it closed the connection.
    pub async fn fill(&mut self) -> std::io::Result<bool> {
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    /// One whole frame, reading as needed (only while nothing else is in flight: login).
    pub async fn read_frame(&mut self) -> std::io::Result<Bytes> {
        loop {
            if let Some(f) = self
                .next_frame()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
            {
                return Ok(f);
            }
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Bytes read that are not yet a complete frame.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The part of an incomplete frame the scanner has passed: relayed while a large reply
    /// still arrives, the scanner keeps counting the rest.
    pub fn take_scanned(&mut self) -> Bytes {
        let k = self.scanner.scanned();
        self.scanner.consumed(k);
        self.buf.split_to(k).freeze()
    }
}
