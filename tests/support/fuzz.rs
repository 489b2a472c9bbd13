//! Shared pieces of the fuzz targets (`tests/fuzz_*.rs`): the case count knob, a reader that
//! hands bytes over in chunks of a chosen size, and byte mutations of seed inputs.
//!
//! `TOLLGATE_FUZZ_CASES` sets how many inputs each property tries (CI: the default; the long
//! runs in docs/reliability.md: hundreds of thousands, in release mode).

use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use proptest::test_runner::Config;
use tokio::io::{AsyncRead, ReadBuf};

/// Cases per property when `TOLLGATE_FUZZ_CASES` is unset: a short run for the normal suite.
pub const DEFAULT_CASES: u32 = 512;

/// The proptest configuration of every fuzz property: `TOLLGATE_FUZZ_CASES` cases, no
/// persistence files written into the tree (a failure prints its minimal input instead).
pub fn config() -> Config {
    let cases = std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// A reader that returns at most `chunk` bytes per read: decoders must give the same answer
/// however the bytes arrive.
pub struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl Chunked {
    pub fn new(data: &[u8], chunk: usize) -> Chunked {
        Chunked {
            data: data.to_vec(),
            pos: 0,
            chunk: chunk.max(1),
        }
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self
            .chunk
            .min(self.data.len() - self.pos)
            .min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future to completion on a fresh current-thread runtime (decoders over in-memory
/// readers never wait on anything else).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// One edit of a seed input.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip bits of the byte at (position modulo length).
    Flip(usize, u8),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Remove up to `n` bytes at a position.
    Remove(usize, usize),
    /// Overwrite four bytes with a big-endian integer (length fields, counts).
    Int(usize, i32),
    /// Repeat a slice (position, length) in place.
    Repeat(usize, usize),
    /// Cut the input here.
    Truncate(usize),
}

/// Interesting integers for length and count fields.
fn int() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(1),
        Just(3),
        Just(4),
        Just(5),
        Just(8),
        Just(i32::MAX),
        Just(i32::MIN),
        Just(65_536),
        Just(10_000),
        any::<i32>(),
    ]
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Remove(p, n)),
        (any::<usize>(), int()).prop_map(|(p, i)| Mutation::Int(p, i)),
        (any::<usize>(), 1usize..32).prop_map(|(p, n)| Mutation::Repeat(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// `seed` with `edits` applied in order (positions taken modulo the current length).
pub fn mutate(seed: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for m in edits {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match m {
            Mutation::Flip(p, b) if !v.is_empty() => {
                let i = p % v.len();
                v[i] ^= b;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(p, bytes) => {
                let i = at(*p, v.len());
                v.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(p, n) => {
                let i = at(*p, v.len());
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Mutation::Int(p, x) => {
                if v.len() >= 4 {
                    let i = p % (v.len() - 3);
                    v[i..i + 4].copy_from_slice(&x.to_be_bytes());
                }
            }
            Mutation::Repeat(p, n) => {
                let i = at(*p, v.len());
                let end = (i + n).min(v.len());
                let piece: Vec<u8> = v[i..end].to_vec();
                v.splice(end..end, piece);
            }
            Mutation::Truncate(p) => {
                let i = at(*p, v.len());
                v.truncate(i);
            }
        }
    }
    v
}

/// A seed picked from `seeds` with up to `max_edits` mutations applied.
pub fn mutated(seeds: Vec<Vec<u8>>, max_edits: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(), 0..=max_edits),
    )
        .prop_map(|(seed, edits)| mutate(&seed, &edits))
}
