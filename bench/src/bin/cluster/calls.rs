//! The calls being measured: grain asks and tells through the client, and the raw
//! transport `Ping` they are compared with.

use std::net::SocketAddr;

use granary_example::{Add, Counter, Get, Greeter, Hello};
use granary_net::transport::Peers;
use granary_proto::frame::{Request, Response};
use granary_runtime::GrainRef;
use tokio::time::Instant;

use crate::cpu::Pids;
use crate::{CALL_TIMEOUT, KEYS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Raw transport round trip to the slave: `Request::Ping` → `Response::Pong`.
    Ping,
    /// `Counter.Get` ask (read only).
    CounterGet,
    /// `Counter.Add(1)` ask (the slave writes the state to the master's store).
    CounterAdd,
    /// `Greeter.Hello` ask (a string each way).
    GreeterHello,
    /// `tell(Get)` on a counter (one-way).
    TellGet,
}

impl Op {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Op::Ping => "raw transport Ping",
            Op::CounterGet => "Counter.Get ask",
            Op::CounterAdd => "Counter.Add(1) ask (+write)",
            Op::GreeterHello => "Greeter.Hello ask",
            Op::TellGet => "Counter tell(Get)",
        }
    }
}

/// What the calls need: references, and a transport of its own for the baseline.
pub(crate) struct Ctx {
    pub(crate) counters: Vec<GrainRef<Counter>>,
    pub(crate) greeters: Vec<GrainRef<Greeter>>,
    /// A connection pool separate from the client's, for the raw `Ping`s.
    pub(crate) peers: Peers,
    pub(crate) slave: SocketAddr,
    pub(crate) pids: Pids,
    /// Clock ticks per second of the CPU times.
    pub(crate) ticks: f64,
}

impl Ctx {
    pub(crate) async fn call(&self, op: Op, i: usize) -> Result<(), String> {
        let t = CALL_TIMEOUT;
        match op {
            Op::Ping => {
                match self
                    .peers
                    .call(self.slave, Request::Ping, Instant::now() + t)
                    .await
                {
                    Ok(Response::Pong) => Ok(()),
                    Ok(other) => Err(format!("unexpected answer to Ping: {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Op::CounterGet => self.counters[i % KEYS]
                .ask(Get)
                .timeout(t)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Op::CounterAdd => self.counters[i % KEYS]
                .ask(Add(1))
                .timeout(t)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Op::GreeterHello => self.greeters[i % KEYS]
                .ask(Hello("bench".to_owned()))
                .timeout(t)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Op::TellGet => self.counters[i % KEYS]
                .tell(Get)
                .timeout(t)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}
