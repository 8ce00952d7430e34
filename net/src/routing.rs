//! [`ClusterRouter`]: delivers envelopes to grains anywhere in a cluster.
//!
//! The router keeps a cache of directory entries (grain → silo). On a miss it asks its
//! [`Resolve`] (a silo asks the master's directory; a client asks a gateway silo, which
//! asks the master). It then sends the call straight to the owning silo over TCP. A silo
//! that does not host the grain answers `Moved(owner)`: the cache is fixed and the call
//! re-sent. Calls are retried only when they certainly were not delivered (connect
//! refused, silo shutting down, moved); a connection lost mid-call fails fast with
//! [`CallError::Lost`]. A call sent and never answered (lost or timed out) also drops
//! every cached route to that silo: it may be dead, paused or cut off, and the other
//! grains cached there are looked up again rather than each timing out.
//!
//! Inside a silo the router also has a [`LocalDelivery`]: grains active on this silo are
//! reached without serialization, and grains the directory places here are activated.
//!
//! An envelope's trace context (set when a grain's handler made the call) travels in
//! the frame's `GrainCall::trace` and is put back into the envelope on the receiving
//! silo, so the callee's `grain_call` span is a child of the caller's.
//!
//! A call answered with a stream (`ask_stream`) takes the same path; the child module
//! `stream` carries its items between silos.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::frame::{GrainCall, Request, Response, SiloAddr, TraceContext};
use granary_proto::{CallError, CodecError, GrainId};
use granary_runtime::envelope::{Body, Envelope, LocalReply, ReplyTo, ReplyValue};
use granary_runtime::Router;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::transport::{Peers, TransportError};

mod stream;

/// How many `Moved` answers a call follows before giving up.
pub const MAX_HOPS: u8 = 4;
/// Entries kept in the directory cache before it is cleared.
const CACHE_CAPACITY: usize = 262_144;
/// First and last pause between retries of an undelivered call.
const RETRY_INITIAL: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Finds the silo that hosts (or should host) a grain.
#[async_trait]
pub trait Resolve: Send + Sync + fmt::Debug + 'static {
    /// The owner of `grain`, placing it if it has none.
    async fn resolve(&self, grain: &GrainId, deadline: Instant) -> Result<SiloAddr, CallError>;
}

/// A silo's own activations, as seen by its router.
#[async_trait]
pub trait LocalDelivery: Send + Sync + fmt::Debug + 'static {
    /// This silo's address.
    fn me(&self) -> SiloAddr;
    /// Delivers to the grain if it is active here right now; hands the envelope back
    /// (`Ok(Some)`) if it is not, without activating anything.
    async fn deliver_if_active(
        &self,
        envelope: Envelope,
        deadline: Instant,
    ) -> Result<Option<Envelope>, CallError>;
    /// Delivers here, activating the grain if needed. Only called right after this silo
    /// resolved the grain with the directory and was named its owner.
    async fn deliver_here(&self, envelope: Envelope, deadline: Instant) -> Result<(), CallError>;
}

/// Routes envelopes across a cluster.
pub struct ClusterRouter {
    /// Connections to silos.
    peers: Peers,
    /// Directory look-ups.
    resolver: Arc<dyn Resolve>,
    /// This silo's activations (`None` in a client).
    local: Option<Arc<dyn LocalDelivery>>,
    /// Directory cache; never locked across an `.await`.
    cache: Mutex<HashMap<GrainId, SiloAddr>>,
}

impl ClusterRouter {
    /// A router over `peers` that resolves with `resolver` and, in a silo, delivers
    /// locally through `local`.
    pub fn new(
        peers: Peers,
        resolver: Arc<dyn Resolve>,
        local: Option<Arc<dyn LocalDelivery>>,
    ) -> Self {
        Self {
            peers,
            resolver,
            local,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The connection pool.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    fn cached(&self, grain: &GrainId) -> Option<SiloAddr> {
        self.cache
            .lock()
            .expect("router cache poisoned")
            .get(grain)
            .copied()
    }

    fn remember(&self, grain: &GrainId, silo: SiloAddr) {
        let mut cache = self.cache.lock().expect("router cache poisoned");
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(grain) {
            cache.clear();
        }
        cache.insert(grain.clone(), silo);
    }

    fn forget(&self, grain: &GrainId) {
        self.cache
            .lock()
            .expect("router cache poisoned")
            .remove(grain);
    }

    /// Drops every cached entry.
    pub fn forget_all(&self) {
        self.cache.lock().expect("router cache poisoned").clear();
    }

    /// Drops every cached entry pointing at `silo` (it left or died).
    pub fn forget_silo(&self, silo: SiloAddr) {
        self.cache
            .lock()
            .expect("router cache poisoned")
            .retain(|_, s| *s != silo);
    }

    async fn owner(&self, grain: &GrainId, deadline: Instant) -> Result<SiloAddr, CallError> {
        match self.cached(grain) {
            Some(silo) => Ok(silo),
            None => {
                let silo = self.resolver.resolve(grain, deadline).await?;
                self.remember(grain, silo);
                Ok(silo)
            }
        }
    }

    /// Handles a grain call that arrived over TCP at this silo: delivers it here if this
    /// silo hosts or owns the grain, else answers `Moved` with the owner. (A call asking
    /// for a streamed reply goes to [`ClusterRouter::inbound_stream`].)
    pub async fn inbound(&self, call: GrainCall, one_way: bool) -> Response {
        let deadline = inbound_deadline(&call);
        let target = call.target.clone();
        let (tx, rx) = oneshot::channel();
        let envelope = Envelope {
            target: call.target,
            body: Body::Encoded {
                name: call.message,
                bytes: call.payload,
            },
            reply: if one_way {
                ReplyTo::None
            } else {
                ReplyTo::Encoded(tx)
            },
            hops: call.hops,
            trace: call.trace,
            deadline: (!one_way).then_some(deadline),
        };
        if let Err(response) = self.accept(envelope, &target, deadline).await {
            return response;
        }
        if one_way {
            return Response::Grain(Ok(Vec::new()));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Response::Grain(Err(CallError::Timeout)),
            Ok(Err(_)) => Response::Grain(Err(CallError::Lost(
                "the activation went away before replying".into(),
            ))),
            Ok(Ok(result)) => Response::Grain(result),
        }
    }

    /// Delivers an envelope that arrived over TCP to a grain of this silo: at once if it
    /// is active here, else only if the directory names this silo its owner. `Err` is
    /// the response to send instead (`Moved`, or why it was not delivered).
    async fn accept(
        &self,
        envelope: Envelope,
        target: &GrainId,
        deadline: Instant,
    ) -> Result<(), Response> {
        let Some(local) = &self.local else {
            return Err(Response::Grain(Err(CallError::Unreachable(
                "not a silo".into(),
            ))));
        };
        let not_active = local
            .deliver_if_active(envelope, deadline)
            .await
            .map_err(|e| Response::Grain(Err(e)))?;
        if let Some(envelope) = not_active {
            // Not active here: only the directory may say it belongs here.
            self.forget(target);
            match self.owner(target, deadline).await {
                Ok(owner) if owner == local.me() => local
                    .deliver_here(envelope, deadline)
                    .await
                    .map_err(|e| Response::Grain(Err(e)))?,
                Ok(owner) => return Err(Response::Moved(owner)),
                Err(e) => return Err(Response::Grain(Err(e))),
            }
        }
        Ok(())
    }
}

/// The deadline of a call that arrived over TCP.
fn inbound_deadline(call: &GrainCall) -> Instant {
    Instant::now() + Duration::from_millis(u64::from(call.timeout_ms.max(1)))
}

impl fmt::Debug for ClusterRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterRouter")
            .field("resolver", &self.resolver)
            .field("local", &self.local.as_ref().map(|l| l.me()))
            .finish_non_exhaustive()
    }
}

/// Fails `reply` and returns the error, for `?`-style early exits.
fn fail(reply: ReplyTo, err: CallError) -> Result<(), CallError> {
    reply.fail(err.clone());
    Err(err)
}

#[async_trait]
impl Router for ClusterRouter {
    async fn deliver(&self, envelope: Envelope, deadline: Instant) -> Result<(), CallError> {
        let envelope = match &self.local {
            Some(local) => match local.deliver_if_active(envelope, deadline).await? {
                None => return Ok(()),
                Some(back) => back,
            },
            None => envelope,
        };
        let Envelope {
            target,
            body,
            mut reply,
            mut hops,
            trace,
            deadline: waits_until,
        } = envelope;
        let decode_reply = match &body {
            Body::Local { vtable, .. } => Some(vtable.decode_reply),
            Body::Encoded { .. } => None,
        };
        // The body stays unencoded until it must leave this process.
        let mut body = Some(body);
        let mut encoded: Option<(String, Vec<u8>)> = None;
        let one_way = matches!(reply, ReplyTo::None);
        let stream = stream::window(&reply);
        let mut owner = self.cached(&target);
        let mut pause = RETRY_INITIAL;
        let mut last_error = None;
        loop {
            if Instant::now() >= deadline {
                return fail(reply, last_error.unwrap_or(CallError::Timeout));
            }
            let (silo, fresh) = match owner.take() {
                Some(silo) => (silo, false),
                None => match self.resolver.resolve(&target, deadline).await {
                    Ok(silo) => {
                        self.remember(&target, silo);
                        (silo, true)
                    }
                    // No live slave yet, master unreachable: not delivered, try again.
                    Err(e @ CallError::Unreachable(_)) => {
                        last_error = Some(e);
                        pause_before_retry(&mut pause, deadline).await;
                        continue;
                    }
                    Err(e) => return fail(reply, e),
                },
            };
            if let Some(local) = &self.local {
                if silo == local.me() && !fresh {
                    // A cached or forwarded address naming this silo for a grain that is
                    // not active here: only the directory may place it here (asking it
                    // also confirms the entry), or the grain could run twice.
                    self.forget(&target);
                    continue;
                }
                if silo == local.me() {
                    return match (body.take(), encoded.take()) {
                        (Some(body), _) => {
                            let envelope = Envelope {
                                target,
                                body,
                                reply,
                                hops,
                                trace,
                                deadline: waits_until,
                            };
                            local.deliver_here(envelope, deadline).await
                        }
                        (None, Some(encoded)) => {
                            deliver_encoded_here(
                                local.as_ref(),
                                target,
                                encoded,
                                reply,
                                decode_reply,
                                (hops, trace, waits_until),
                                deadline,
                            )
                            .await
                        }
                        (None, None) => unreachable!("the body is kept in one form or the other"),
                    };
                }
            }
            let (message, payload) = match (&encoded, body.take()) {
                (Some(encoded), _) => encoded.clone(),
                (None, Some(body)) => match body.into_bytes() {
                    Ok(bytes) => {
                        encoded = Some(bytes.clone());
                        bytes
                    }
                    Err(e) => return fail(reply, e),
                },
                (None, None) => unreachable!("the body is kept in one form or the other"),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let call = GrainCall {
                target: target.clone(),
                message,
                payload,
                timeout_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX),
                hops,
                one_way,
                stream,
                trace,
            };
            let answer = if stream.is_some() {
                match stream::call(&self.peers, silo.addr, call, reply, decode_reply, deadline)
                    .await
                {
                    stream::Outcome::Carried => return Ok(()),
                    stream::Outcome::Answer(answer, back) => {
                        reply = back;
                        answer
                    }
                }
            } else {
                self.peers
                    .call(silo.addr, Request::Grain(call), deadline)
                    .await
            };
            match answer {
                Ok(Response::Grain(Ok(bytes))) => {
                    complete(reply, bytes, decode_reply);
                    return Ok(());
                }
                // The owner is shutting down or fenced: the entry moves soon.
                Ok(Response::Grain(Err(
                    e @ (CallError::ShuttingDown | CallError::Unreachable(_)),
                ))) => {
                    last_error = Some(e);
                }
                Ok(Response::Grain(Err(e))) if e.is_not_delivered() => return fail(reply, e),
                Ok(Response::Grain(Err(e))) => {
                    reply.fail(e);
                    return Ok(());
                }
                Ok(Response::Moved(new_owner)) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        let e = CallError::Unreachable(format!(
                            "{target} keeps moving; the directory is unsettled"
                        ));
                        return fail(reply, e);
                    }
                    self.remember(&target, new_owner);
                    owner = Some(new_owner);
                    continue;
                }
                Ok(other) => {
                    return fail(
                        reply,
                        CallError::Codec(format!("unexpected answer to a grain call: {other:?}")),
                    );
                }
                // Not sent: the silo is gone or not up yet.
                Err(e @ (TransportError::Unreachable(_) | TransportError::Closed)) => {
                    last_error = Some(e.into())
                }
                // Sent, outcome unknown (connection lost, timeout): never retried. The
                // silo may be dead, paused or cut off: forget every route to it, so other
                // grains cached there are looked up again instead of each timing out.
                Err(e) => {
                    self.forget_silo(silo);
                    return fail(reply, e.into());
                }
            }
            // Not delivered: forget the entry, wait a little, ask the directory again.
            self.forget(&target);
            pause_before_retry(&mut pause, deadline).await;
        }
    }
}

/// Sleeps `pause` (bounded by `deadline`) and doubles it up to [`RETRY_MAX`].
async fn pause_before_retry(pause: &mut Duration, deadline: Instant) {
    tokio::time::sleep_until((Instant::now() + *pause).min(deadline)).await;
    *pause = (*pause * 2).min(RETRY_MAX);
}

/// Completes `reply` with an encoded reply, decoding it for a local caller.
fn complete(reply: ReplyTo, bytes: Vec<u8>, decode_reply: Option<DecodeReply>) {
    match reply {
        ReplyTo::None => {}
        ReplyTo::Encoded(tx) => {
            let _ = tx.send(Ok(bytes));
        }
        // An empty stream (it ended before any item).
        reply @ ReplyTo::Stream(_) => reply.complete(Ok(ReplyValue::None)),
        ReplyTo::Local(tx) => {
            let decoded = match decode_reply {
                Some(decode) => decode(&bytes).map_err(|e| CallError::Codec(e.to_string())),
                None => Err(CallError::Codec("no decoder for a local reply".into())),
            };
            let _ = tx.send(decoded);
        }
    }
}

/// Decodes replies (or stream items) for callers in this process.
type DecodeReply = fn(&[u8]) -> Result<LocalReply, CodecError>;

/// Delivers an already-encoded call to this silo and completes `reply` (which may want a
/// decoded value) before returning.
async fn deliver_encoded_here(
    local: &dyn LocalDelivery,
    target: GrainId,
    (name, bytes): (String, Vec<u8>),
    reply: ReplyTo,
    decode_reply: Option<DecodeReply>,
    (hops, trace, waits_until): (u8, Option<TraceContext>, Option<Instant>),
    deadline: Instant,
) -> Result<(), CallError> {
    let (tx, decode) = match (reply, decode_reply) {
        (ReplyTo::Local(tx), Some(decode)) => (tx, decode),
        (reply, _) => {
            let envelope = Envelope {
                target,
                body: Body::Encoded { name, bytes },
                reply,
                hops,
                trace,
                deadline: waits_until,
            };
            return local.deliver_here(envelope, deadline).await;
        }
    };
    let (etx, erx) = oneshot::channel();
    let envelope = Envelope {
        target,
        body: Body::Encoded { name, bytes },
        reply: ReplyTo::Encoded(etx),
        hops,
        trace,
        deadline: waits_until,
    };
    local.deliver_here(envelope, deadline).await?;
    let result = match tokio::time::timeout_at(deadline, erx).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Err(_)) => Err(CallError::Lost(
            "the activation went away before replying".into(),
        )),
        Ok(Ok(result)) => {
            result.and_then(|b| decode(&b).map_err(|e| CallError::Codec(e.to_string())))
        }
    };
    let _ = tx.send(result);
    Ok(())
}

#[cfg(test)]
mod tests;
