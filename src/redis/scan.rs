//! Finding where each upstream reply ends without building it: a resumable scan over RESP2 and
//! RESP3 frames (aggregates tracked on a stack), so a large reply arriving in many reads costs
//! one pass. Replies are decoded (redis-protocol) only when they must be inspected.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed reply from the upstream: {0}")]
pub struct ScanError(pub &'static str);

#[derive(Debug, Default)]
pub struct ReplyScanner {
    pos: usize,
    /// Open aggregates: (elements still expected, is an attribute).
    stack: Vec<(i64, bool)>,
    /// Bytes of a bulk payload (with its CRLF) not yet arrived.
    bulk_left: usize,
}

fn number(buf: &[u8]) -> Result<i64, ScanError> {
    std::str::from_utf8(buf)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ScanError("bad length"))
}

impl ReplyScanner {
    /// The length of the first complete frame in `buf`, or `None` until it has arrived. After
    /// `Some(n)` the caller removes `n` bytes from the front of `buf` before calling again.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<usize>, ScanError> {
        if self.bulk_left > 0 {
            let take = self.bulk_left.min(buf.len().saturating_sub(self.pos));
            self.pos += take;
            self.bulk_left -= take;
            if self.bulk_left > 0 {
                return Ok(None);
            }
            if self.element_done() {
                return Ok(Some(self.finish()));
            }
        }
        loop {
            let Some(rel) = buf[self.pos.min(buf.len())..]
                .windows(2)
                .position(|w| w == b"\r\n")
            else {
                return Ok(None);
            };
            let eol = self.pos + rel;
            if rel == 0 {
                // A bare CRLF has no type byte (found by tests/fuzz_redis.rs).
                return Err(ScanError("empty line"));
            }
            let kind = buf[self.pos];
            let head = &buf[self.pos + 1..eol];
            let done = match kind {
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                    self.pos = eol + 2;
                    self.element_done()
                }
                b'$' | b'!' | b'=' => {
                    let len = number(head)?;
                    if len < 0 {
                        self.pos = eol + 2;
                    } else {
                        let end = eol + 2 + len as usize + 2;
                        if buf.len() < end {
                            // Large payload still arriving: skip what is here, count the rest.
                            self.pos = buf.len();
                            self.bulk_left = end - buf.len();
                            return Ok(None);
                        }
                        self.pos = end;
                    }
                    self.element_done()
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let mut n = number(head)?;
                    self.pos = eol + 2;
                    if matches!(kind, b'%' | b'|') {
                        n = n.saturating_mul(2);
                    }
                    if n > 0 {
                        self.stack.push((n, kind == b'|'));
                        false
                    } else if kind == b'|' {
                        false
                    } else {
                        self.element_done()
                    }
                }
                _ => return Err(ScanError("unknown type byte")),
            };
            if done {
                return Ok(Some(self.finish()));
            }
        }
    }

    fn finish(&mut self) -> usize {
        std::mem::take(&mut self.pos)
    }

    /// Bytes at the front of the buffer that belong to the frame being scanned and were
    /// checked already: they may be relayed before the frame ends (streaming a large reply).
    pub fn scanned(&self) -> usize {
        self.pos
    }

    /// The caller removed `n` (at most [`scanned`](Self::scanned)) bytes from the front.
    pub fn consumed(&mut self, n: usize) {
        self.pos -= n.min(self.pos);
    }

    /// One element finished: true when that completes the whole frame.
    fn element_done(&mut self) -> bool {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return true;
            };
            top.0 -= 1;
            if top.0 > 0 {
                return false;
            }
            let (_, attribute) = self.stack.pop().expect("non-empty");
            if attribute {
                return false; // the attributed value follows
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_resp2_and_resp3_fed_in_pieces() {
        let input: &[u8] = b"+OK\r\n$-1\r\n*2\r\n$1\r\na\r\n*-1\r\n%1\r\n+k\r\n*2\r\n:1\r\n_\r\n|1\r\n+a\r\n+b\r\n$2\r\nhi\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n*0\r\n";
        let expected = [5, 5, 16, 19, 20, 31, 4];
        for chunk in [1, 2, 3, 7, 1000] {
            let mut sc = ReplyScanner::default();
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for piece in input.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(n) = sc.next_frame(&buf).unwrap() {
                    got.push(n);
                    buf.drain(..n);
                }
            }
            assert_eq!(got, expected, "chunk {chunk}");
        }
        assert!(ReplyScanner::default().next_frame(b"?x\r\n").is_err());
    }

    #[test]
    fn a_large_bulk_streams_in_pieces_with_crlf_inside() {
        let mut payload = vec![b'x'; 10_000];
        payload[5000] = b'\r';
        payload[5001] = b'\n';
        let mut frame = format!("*2\r\n${}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(b"\r\n:7\r\n");
        let mut sc = ReplyScanner::default();
        let mut buf = Vec::new();
        let mut relayed = 0;
        let mut done = None;
        for piece in frame.chunks(999) {
            buf.extend_from_slice(piece);
            if let Some(n) = sc.next_frame(&buf).unwrap() {
                done = Some(relayed + n);
                break;
            }
            // Relay what was scanned, as the streaming relay does.
            let k = sc.scanned();
            buf.drain(..k);
            sc.consumed(k);
            relayed += k;
        }
        assert_eq!(done, Some(frame.len()));
        assert!(
            relayed > 9_000,
            "most of the frame left before its end: {relayed}"
        );
    }
}
