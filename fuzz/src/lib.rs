//! Helpers shared by the fuzz targets: the cluster key they sign with, an in-memory
//! stream for the handshake, and grains registered in this binary's registry whose
//! messages have the shapes of the example grains' (strings, integers, unit, lists).
//! The targets depend on the protocol crates only, not on the silo, so they build fast.

use std::pin::Pin;
use std::task::{Context, Poll};

use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The key the signed-packet and handshake targets use.
pub const KEY: &[u8] = b"granary-fuzz-key";

/// A stream that reads `input` (then EOF) and swallows writes; never pending.
#[derive(Debug)]
pub struct Script<'a> {
    pub input: &'a [u8],
    pub written: Vec<u8>,
}

impl AsyncRead for Script<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.input.len().min(buf.remaining());
        buf.put_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (everything it reads is in memory) to its end.
pub fn run_ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory handshake waited"),
    }
}

/// A grain with one message of each shape the example grains use.
#[derive(Debug)]
pub struct Shapes;

/// Stored state: a number and a set of names (as Counter and Account keep).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShapesState {
    pub n: i64,
    pub names: std::collections::BTreeSet<String>,
}

/// A string (as `Hello`, `Follow`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Text(pub String);
/// A signed number (as `Add`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Number(pub i64);
/// No fields (as `Get`, `Followers`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit;
/// A list and an optional value (as replies of `Following`, and the register).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Mixed(pub Vec<String>, pub Option<u64>);

#[async_trait]
impl Grain for Shapes {
    const TYPE_NAME: &'static str = "fuzz.shapes/v1";
    type State = ShapesState;
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Shapes)
    }
}

#[async_trait]
impl Handler<Text> for Shapes {
    type Reply = String;
    async fn handle(
        &mut self,
        Text(s): Text,
        _: &mut GrainContext<Self>,
    ) -> Result<String, GrainError> {
        Ok(s)
    }
}

#[async_trait]
impl Handler<Number> for Shapes {
    type Reply = i64;
    async fn handle(
        &mut self,
        Number(n): Number,
        _: &mut GrainContext<Self>,
    ) -> Result<i64, GrainError> {
        Ok(n)
    }
}

#[async_trait]
impl Handler<Unit> for Shapes {
    type Reply = u64;
    async fn handle(&mut self, _: Unit, _: &mut GrainContext<Self>) -> Result<u64, GrainError> {
        Ok(0)
    }
}

#[async_trait]
impl Handler<Mixed> for Shapes {
    type Reply = Vec<String>;
    async fn handle(
        &mut self,
        Mixed(v, _): Mixed,
        _: &mut GrainContext<Self>,
    ) -> Result<Vec<String>, GrainError> {
        Ok(v)
    }
}

granary_runtime::register_grain!(Shapes, handles = [Text, Number, Unit, Mixed]);
