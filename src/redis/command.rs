//! Client commands off the wire: RESP arrays of bulk strings (forwarded as received) and inline
//! commands (re-encoded as RESP before forwarding). Sizes are checked before anything is
//! buffered past the limit; a partly received array resumes where it stopped, never re-parsed.

use bytes::{Bytes, BytesMut};

/// One command: its arguments (`args[0]` is the name) and the bytes to forward upstream.
#[derive(Debug, Clone)]
pub struct Command {
    pub args: Vec<Bytes>,
    pub raw: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("Protocol error: {0}")]
    Malformed(&'static str),
    #[error("Protocol error: {what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooBig {
        what: &'static str,
        size: usize,
        limit: usize,
    },
}

/// Redis's own caps: 1M elements per command, 64 KiB per inline command.
const MAX_ELEMENTS: usize = 1024 * 1024;
const MAX_INLINE: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Partial {
    expected: usize,
    /// Where parsing resumes.
    pos: usize,
}

/// Incremental parser over a connection's read buffer.
#[derive(Debug)]
pub struct CommandParser {
    /// Largest single argument (bulk string); the whole command may be this plus 1 MiB.
    limit: usize,
    partial: Option<Partial>,
    /// Byte ranges of the arguments of the partial command parsed so far (kept between
    /// commands: no allocation per command).
    ranges: Vec<(usize, usize)>,
}

/// The position of the first CRLF at or after `from`.
fn line(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let mut at = 0;
    loop {
        let cr = memchr::memchr(b'\r', &rest[at..])? + at;
        if rest.get(cr + 1) == Some(&b'\n') {
            return Some(from + cr);
        }
        at = cr + 1;
    }
}

/// A length or count, read as Redis reads it (`string2ll`): an optional `-`, then `0` alone or a
/// digit 1-9 and more digits, in at most 19 bytes. No `+`, no leading zeros: what tollgate
/// accepts the server accepts too, so a command forwarded as received is the command judged,
/// and never makes the server drop the connection (shared by other sessions) as a protocol error.
fn number(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits {
        [b'0'] if !neg => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

impl CommandParser {
    pub fn new(limit: usize) -> CommandParser {
        CommandParser {
            limit,
            partial: None,
            ranges: Vec::new(),
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Bytes the caller should expect at most to hold for one command (for read sizing).
    pub fn command_limit(&self) -> usize {
        self.limit.saturating_add(1 << 20)
    }

    /// The next complete command, `None` if more bytes are needed. Consumes what it returns.
    /// An empty inline line yields nothing and is skipped, as in Redis.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            if self.partial.is_none() && buf[0] != b'*' {
                match self.inline(buf)? {
                    Some(Some(c)) => return Ok(Some(c)),
                    Some(None) => continue, // blank line
                    None => return Ok(None),
                }
            }
            match self.multibulk(buf)? {
                Some(Some(c)) => return Ok(Some(c)),
                // An empty array was skipped: what follows may be complete already (found by
                // tests/fuzz_redis.rs: returning here left buffered commands unread).
                Some(None) => continue,
                None => return Ok(None),
            }
        }
    }

    /// `Some(None)`: an empty or null array was consumed (Redis ignores them).
    fn multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Option<Command>>, ProtocolError> {
        if self.partial.is_none() {
            let Some(eol) = line(buf, 1) else {
                if buf.len() > MAX_INLINE {
                    return Err(ProtocolError::Malformed("too big mbulk count string"));
                }
                return Ok(None);
            };
            let n =
                number(&buf[1..eol]).ok_or(ProtocolError::Malformed("invalid multibulk length"))?;
            if n > MAX_ELEMENTS as i64 {
                return Err(ProtocolError::Malformed("invalid multibulk length"));
            }
            if n <= 0 {
                let _ = buf.split_to(eol + 2);
                return Ok(Some(None)); // Redis ignores empty arrays
            }
            self.ranges.clear();
            self.ranges.reserve((n as usize).min(1024));
            self.partial = Some(Partial {
                expected: n as usize,
                pos: eol + 2,
            });
        }
        let limit = self.limit;
        let total_limit = self.command_limit();
        let p = self.partial.as_mut().expect("set above");
        let ranges = &mut self.ranges;
        while ranges.len() < p.expected {
            if buf.len() <= p.pos {
                return Ok(None);
            }
            if buf[p.pos] != b'$' {
                return Err(ProtocolError::Malformed("expected '$'"));
            }
            let Some(eol) = line(buf, p.pos + 1) else {
                if buf.len() - p.pos > 32 {
                    return Err(ProtocolError::Malformed("invalid bulk length"));
                }
                return Ok(None);
            };
            let len = number(&buf[p.pos + 1..eol])
                .ok_or(ProtocolError::Malformed("invalid bulk length"))?;
            if len < 0 {
                return Err(ProtocolError::Malformed("invalid bulk length"));
            }
            let len = len as usize;
            if len > limit {
                return Err(ProtocolError::TooBig {
                    what: "an argument",
                    size: len,
                    limit,
                });
            }
            let start = eol + 2;
            let end = start + len;
            if end > total_limit {
                return Err(ProtocolError::TooBig {
                    what: "a command",
                    size: end,
                    limit: total_limit,
                });
            }
            if buf.len() < end + 2 {
                buf.reserve(end + 2 - buf.len());
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::Malformed(
                    "bulk string not terminated by CRLF",
                ));
            }
            ranges.push((start, end));
            p.pos = end + 2;
        }
        let p = self.partial.take().expect("set above");
        let raw = buf.split_to(p.pos).freeze();
        crate::ratelimit::detach_after(buf, p.pos);
        let args = ranges.iter().map(|&(s, e)| raw.slice(s..e)).collect();
        if ranges.capacity() > 4096 {
            // A huge command does not keep its ranges' memory for the session's lifetime.
            *ranges = Vec::new();
        }
        Ok(Some(Some(Command { args, raw })))
    }

    /// `Some(None)`: a blank line was consumed.
    fn inline(&mut self, buf: &mut BytesMut) -> Result<Option<Option<Command>>, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_INLINE {
                return Err(ProtocolError::Malformed("too big inline request"));
            }
            return Ok(None);
        };
        if nl > MAX_INLINE {
            return Err(ProtocolError::Malformed("too big inline request"));
        }
        let line = buf.split_to(nl + 1);
        let text = line[..nl].strip_suffix(b"\r").unwrap_or(&line[..nl]);
        let args =
            split_args(text).ok_or(ProtocolError::Malformed("unbalanced quotes in request"))?;
        if args.is_empty() {
            return Ok(Some(None));
        }
        let raw = encode_command(&args);
        Ok(Some(Some(Command { args, raw })))
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode_command(args: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

/// Redis's `sdssplitargs`: spaces separate, "double quotes" with \n \r \t \b \a \\ \" \xHH
/// escapes, 'single quotes' with \' only. `None` on unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    let h = std::str::from_utf8(&line[i + 2..i + 4]).ok()?;
                    cur.push(u8::from_str_radix(h, 16).ok()?);
                    i += 3;
                } else if line[i] == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if line[i] == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    inq = false;
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else if insq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if line[i] == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    insq = false;
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else {
                if i >= n || line[i].is_ascii_whitespace() {
                    break;
                }
                match line[i] {
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        let _ = (inq, insq);
        args.push(Bytes::from(cur));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limit: usize) -> Result<Vec<Vec<String>>, ProtocolError> {
        let mut p = CommandParser::new(limit);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Fed one byte at a time: resuming must give the same result.
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(c) = p.next(&mut buf)? {
                out.push(
                    c.args
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    #[test]
    fn resp_inline_and_pipelines() {
        let got = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\n\r\nset k \"a b\\x41\" 'c d'\r\n*1\r\n$4\r\nQUIT\r\n", 1024).unwrap();
        assert_eq!(
            got,
            vec![
                vec!["GET", "a"],
                vec!["PING"],
                vec!["set", "k", "a bA", "c d"],
                vec!["QUIT"]
            ]
        );
    }

    #[test]
    fn carriage_returns_inside_arguments_and_counts_of_every_size() {
        // A CR not followed by LF is data inside a bulk string; an array's argument ranges are
        // not carried into the next command.
        let got = parse_all(
            b"*3\r\n$3\r\nSET\r\n$3\r\na\rb\r\n$4\r\n\r\r\r\n\r\n*1\r\n$4\r\nPING\r\n",
            1024,
        )
        .unwrap();
        assert_eq!(got, vec![vec!["SET", "a\rb", "\r\r\r\n"], vec!["PING"]]);
        let e = parse_all(b"*1\r\r\n", 1024).unwrap_err().to_string();
        assert!(e.contains("invalid multibulk length"), "{e}");
        let mut p = CommandParser::new(1024);
        let mut buf = BytesMut::new();
        let n = 5000;
        buf.extend_from_slice(format!("*{n}\r\n").as_bytes());
        for _ in 0..n {
            buf.extend_from_slice(b"$1\r\nx\r\n");
        }
        buf.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(p.next(&mut buf).unwrap().unwrap().args.len(), n);
        assert!(
            p.ranges.capacity() <= 4096,
            "a huge command's ranges are let go"
        );
        let get = p.next(&mut buf).unwrap().unwrap();
        assert_eq!(get.args, vec![Bytes::from("GET"), Bytes::from("k")]);
    }

    #[test]
    fn numbers_are_parsed_like_redis_string2ll() {
        // Redis's rule, written plainly: `0`, or an optional `-` then 1-9 and digits, in range.
        let redis = |t: &[u8]| {
            let s = std::str::from_utf8(t).ok()?;
            let digits = s.strip_prefix('-').unwrap_or(s);
            let canonical = s == "0"
                || (digits.starts_with(|c: char| ('1'..='9').contains(&c))
                    && digits.bytes().all(|b| b.is_ascii_digit()));
            if !canonical || t.len() > 19 {
                return None;
            }
            s.parse::<i64>().ok()
        };
        for text in [
            &b"0"[..],
            b"7",
            b"-1",
            b"-0",
            b"+1",
            b"",
            b"-",
            b"+",
            b"1x",
            b" 1",
            b"--1",
            b"\xff",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-922337203685477580",
            b"1234567890123456789",
            b"12345678901234567890",
            b"007",
            b"04",
            b"-04",
            b"00",
            b"10",
        ] {
            assert_eq!(number(text), redis(text), "{text:?}");
        }
        assert_eq!(number(b"+1"), None, "Redis refuses a plus sign");
        assert_eq!(number(b"04"), None, "Redis refuses leading zeros");
    }

    #[test]
    fn malformed_and_oversized() {
        for (input, err) in [
            (&b"*x\r\n"[..], "invalid multibulk length"),
            (b"*1\r\n+OK\r\n", "expected '$'"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$3\r\nabcd\r\n", "not terminated"),
            (b"*9999999999\r\n", "invalid multibulk length"),
            (b"GET \"a\r\n", "unbalanced"),
        ] {
            let e = parse_all(input, 1024).unwrap_err().to_string();
            assert!(e.contains(err), "{input:?}: {e}");
        }
        let e = parse_all(b"*1\r\n$2000\r\n", 1024).unwrap_err();
        assert!(matches!(e, ProtocolError::TooBig { size: 2000, .. }));
        // Exactly at the limit is fine.
        let mut v = b"*1\r\n$1024\r\n".to_vec();
        v.extend(std::iter::repeat_n(b'x', 1024));
        v.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&v, 1024).unwrap().len(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.gen_range(0..64);
            let mut v: Vec<u8> = (0..len)
                .map(|_| *b"*$\r\n0123-x\" '\\".get(rng.gen_range(0..14)).unwrap())
                .collect();
            if rng.gen_bool(0.5) {
                v.insert(0, b'*');
            }
            let _ = parse_all(&v, 64);
        }
    }
}
