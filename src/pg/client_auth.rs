//! Agent authentication: SCRAM-SHA-256 with the agent's token as the password; on TLS
//! connections SCRAM-SHA-256-PLUS (channel binding `tls-server-end-point`) is offered first.
//!
//! An unknown agent runs the same exchange against a mock verifier and fails with the same
//! message as a wrong token, so the two cannot be told apart.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::backend::{self, PgErrorFields};
use super::frame::{FrameError, FrameReader};
use super::frontend::PASSWORD;
use crate::auth::scram::{
    Binding, ScramError, ScramServer, ScramVerifier, MECHANISM, MECHANISM_PLUS,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("client closed the connection during authentication")]
    Closed,
    #[error("{}", .0.message)]
    Refused(PgErrorFields),
}

/// The answer to a wrong token and an unknown agent alike (the session core counts and
/// records the failure).
pub fn failed(user: &str) -> ClientAuthError {
    ClientAuthError::Refused(PgErrorFields::fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    ))
}

fn protocol_violation(what: &str) -> ClientAuthError {
    ClientAuthError::Refused(PgErrorFields::fatal(
        "08P01",
        format!("invalid SASL authentication message: {what}"),
    ))
}

/// Runs the SCRAM exchange against `verifier` (the session core's: the agent's, or a mock one
/// when `known` is false, which always fails); on success AuthenticationOk has been sent.
/// `end_point` is the connection's `tls-server-end-point` data (TLS connections): with it,
/// SCRAM-SHA-256-PLUS is offered.
pub async fn authenticate<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    verifier: &ScramVerifier,
    known: bool,
    user: &str,
    end_point: Option<&[u8]>,
) -> Result<(), ClientAuthError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let offered: &[&str] = match end_point {
        Some(_) => &[MECHANISM_PLUS, MECHANISM],
        None => &[MECHANISM],
    };
    writer
        .write_all(&backend::auth_sasl(offered))
        .await
        .map_err(FrameError::Io)?;

    let first = reader.next().await?.ok_or(ClientAuthError::Closed)?;
    if first.tag != PASSWORD {
        return Err(protocol_violation("expected SASLInitialResponse"));
    }
    let body = first.body();
    let nul = body
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| protocol_violation("no mechanism"))?;
    let selected = &body[..nul];
    if !offered.iter().any(|m| m.as_bytes() == selected) {
        return Err(protocol_violation(
            "client selected an invalid SASL authentication mechanism",
        ));
    }
    let binding = Binding {
        plus_selected: selected == MECHANISM_PLUS.as_bytes(),
        offered: end_point,
    };
    let rest = &body[nul + 1..];
    if rest.len() < 4 {
        return Err(protocol_violation("truncated"));
    }
    let declared = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    if declared < 0 || declared as usize != data.len() {
        return Err(protocol_violation("length mismatch"));
    }
    let (server, server_first) = match ScramServer::start(verifier.clone(), data, binding) {
        Ok(x) => x,
        Err(ScramError::Downgrade) => {
            return Err(ClientAuthError::Refused(PgErrorFields::fatal(
                "08P01",
                "SCRAM channel binding negotiation error",
            )
            .with_detail("The client supports SCRAM channel binding but thinks the server does not. However, this server does support channel binding.")))
        }
        Err(e) => return Err(protocol_violation(&e.to_string())),
    };
    writer
        .write_all(&backend::auth_sasl_continue(&server_first))
        .await
        .map_err(FrameError::Io)?;

    let fin = reader.next().await?.ok_or(ClientAuthError::Closed)?;
    if fin.tag != PASSWORD {
        return Err(protocol_violation("expected SASLResponse"));
    }
    match server.finish(fin.body()) {
        Ok(server_final) if known => {
            let mut out = backend::auth_sasl_final(&server_final).to_vec();
            out.extend_from_slice(&backend::auth_ok());
            writer.write_all(&out).await.map_err(FrameError::Io)?;
            Ok(())
        }
        _ => Err(failed(user)),
    }
}
