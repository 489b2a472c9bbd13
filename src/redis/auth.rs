//! The commands agents log in with on Redis: `AUTH agent token` and `HELLO 2|3 AUTH agent token
//! [SETNAME name]` (the token is checked by the session core), and the HELLO tollgate forwards
//! upstream without it.

use bytes::Bytes;

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, parsed.
#[derive(Debug, Default, Clone)]
pub struct Hello {
    pub proto: Option<u8>,
    pub auth: Option<(Bytes, Bytes)>,
    pub setname: Option<Bytes>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HelloError {
    NoProto,
    Syntax(String),
}

pub fn parse_hello(args: &[Bytes]) -> Result<Hello, HelloError> {
    let mut h = Hello::default();
    let Some(p) = args.get(1) else {
        return Ok(h);
    };
    h.proto = match &p[..] {
        b"2" => Some(2),
        b"3" => Some(3),
        _ => return Err(HelloError::NoProto),
    };
    let mut i = 2;
    while i < args.len() {
        let opt = &args[i];
        if opt.eq_ignore_ascii_case(b"auth") && i + 2 < args.len() {
            h.auth = Some((args[i + 1].clone(), args[i + 2].clone()));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && i + 1 < args.len() {
            h.setname = Some(args[i + 1].clone());
            i += 2;
        } else {
            return Err(HelloError::Syntax(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
                    .chars()
                    .take(64)
                    .collect::<String>()
            )));
        }
    }
    Ok(h)
}

/// The HELLO tollgate forwards upstream: same protocol and name, never the agent's token.
pub fn upstream_hello(h: &Hello) -> Vec<Bytes> {
    let mut args = vec![Bytes::from_static(b"HELLO")];
    if let Some(p) = h.proto {
        args.push(Bytes::from(p.to_string()));
    }
    if let Some(n) = &h.setname {
        args.push(Bytes::from_static(b"SETNAME"));
        args.push(n.clone());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn hello_forms() {
        let h = parse_hello(&args("HELLO 3 AUTH analyst tok SETNAME x")).unwrap();
        assert_eq!(h.proto, Some(3));
        assert_eq!(h.auth.as_ref().unwrap().0, "analyst");
        assert_eq!(
            upstream_hello(&h),
            args("HELLO 3 SETNAME x"),
            "the token is never forwarded"
        );
        assert_eq!(
            parse_hello(&args("HELLO 4")).unwrap_err(),
            HelloError::NoProto
        );
        assert!(matches!(
            parse_hello(&args("HELLO 3 AUTH a")),
            Err(HelloError::Syntax(_))
        ));
        assert!(parse_hello(&args("HELLO")).unwrap().proto.is_none());
    }
}
