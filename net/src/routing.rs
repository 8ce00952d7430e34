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
//!
//! Replicated grains (`copies`): a silo answers a call to one with
//! [`Response::GrainAt`], carrying the state version the call was served at and, when
//! the caller's is older, the grain's copy set. The router then spreads messages over
//! the set (round robin; writes of read-replicated grains to the primary) and sends its
//! newest version with every read, so a replica never serves it older state. Grains
//! that are not replicated never touch that table.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::frame::{GrainCall, Request, Response, SiloAddr, TraceContext};
use granary_proto::replication::{CopyKind, CopySet, GrainReplyAt, ReplicaCall, SetVersion};
use granary_proto::{CallError, CodecError, GrainId};
use granary_runtime::envelope::{Body, CopyHint, Envelope, LocalReply, ReplyTo, ReplyValue};
use granary_runtime::Router;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::transport::{Peers, TransportError};

mod copies;
mod stream;
use copies::{is_read, CopyRoutes, Waiting};

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

    /// For a grain whose type is replicated on this silo: `Some`, holding this silo's
    /// copy set of it if newer than `seen`. `None` (the default) for every other grain.
    fn copy_answer(&self, _grain: &GrainId, _seen: Option<SetVersion>) -> Option<Option<CopySet>> {
        None
    }
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
    /// Copy sets and seen versions of replicated grains.
    copies: CopyRoutes,
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
            copies: CopyRoutes::default(),
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

    /// Drops every cached entry (and copy set; the versions seen stay true).
    pub fn forget_all(&self) {
        self.cache.lock().expect("router cache poisoned").clear();
        self.copies.forget_sets();
    }

    /// Drops every cached entry pointing at `silo` (it left or died).
    pub fn forget_silo(&self, silo: SiloAddr) {
        self.cache
            .lock()
            .expect("router cache poisoned")
            .retain(|_, s| *s != silo);
        self.copies.forget_silo(silo);
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
        // A replicated grain answers with its version (and maybe its copy set).
        let seen = call.replica.and_then(|r| r.copies_seen);
        let copies = (self.local.as_ref()).and_then(|local| local.copy_answer(&target, seen));
        let (reply, rx) = Waiting::channel(one_way, copies.is_some());
        let envelope = Envelope {
            target: call.target,
            body: Body::Encoded {
                name: call.message,
                bytes: call.payload,
            },
            reply,
            hops: call.hops,
            trace: call.trace,
            copy: call.replica.map_or_else(CopyHint::default, |r| CopyHint {
                min_version: r.min_version,
                primary: r.primary,
            }),
            deadline: (!one_way).then_some(deadline),
        };
        let answer = |result: Result<Vec<u8>, CallError>, version: u64| match &copies {
            Some(newer) => Response::GrainAt(Box::new(GrainReplyAt {
                reply: result,
                version,
                copies: newer.clone(),
            })),
            None => Response::Grain(result),
        };
        if let Err(refused) = self
            .accept(envelope, &target, copies.is_some(), deadline)
            .await
        {
            return match refused {
                Refused::Moved(owner) => Response::Moved(owner),
                Refused::Failed(e) => answer(Err(e), 0),
            };
        }
        let (result, version) = rx.wait(deadline).await;
        answer(result, version)
    }

    /// Delivers an envelope that arrived over TCP to a grain of this silo: at once if it
    /// is active here, else only if the directory names this silo its owner. A grain
    /// replicated here (`replicated`) whose call asks for the primary (a read a replica
    /// could not serve) is taken to the primary by this silo instead.
    async fn accept(
        &self,
        envelope: Envelope,
        target: &GrainId,
        replicated: bool,
        deadline: Instant,
    ) -> Result<(), Refused> {
        let Some(local) = &self.local else {
            return Err(Refused::Failed(CallError::Unreachable("not a silo".into())));
        };
        let not_active = local
            .deliver_if_active(envelope, deadline)
            .await
            .map_err(Refused::Failed)?;
        let Some(envelope) = not_active else {
            return Ok(());
        };
        if envelope.copy.primary && replicated {
            // The caller keeps its route; this silo forwards to the primary.
            return Router::deliver(self, envelope, deadline)
                .await
                .map_err(Refused::Failed);
        }
        // Not active here: only the directory may say it belongs here.
        self.forget(target);
        match self.owner(target, deadline).await {
            Ok(owner) if owner == local.me() => local
                .deliver_here(envelope, deadline)
                .await
                .map_err(Refused::Failed),
            Ok(owner) => Err(Refused::Moved(owner)),
            Err(e) => Err(Refused::Failed(e)),
        }
    }
}

/// Why a call that arrived over TCP was not delivered here.
#[derive(Debug)]
enum Refused {
    /// The grain lives on this other silo.
    Moved(SiloAddr),
    /// Delivering it failed.
    Failed(CallError),
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
    fn observed(&self, grain: &GrainId, version: u64) {
        self.copies.learn(grain, version, None);
    }

    async fn deliver(&self, mut envelope: Envelope, deadline: Instant) -> Result<(), CallError> {
        // A replicated grain: the newest version this caller has seen goes with it.
        let known = self.copies.known(&envelope.target);
        if let Some(known) = known {
            envelope.copy.min_version = envelope.copy.min_version.max(known.token);
        }
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
            copy,
            deadline: waits_until,
        } = envelope;
        // Which copies may take it: any copy of a stateless worker; any replica for a
        // read of a read-replicated grain; else the home (primary).
        let any_copy = known.is_some_and(|k| match k.kind {
            Some(CopyKind::StatelessWorker) => true,
            Some(CopyKind::ReadReplicas) => !copy.primary && is_read(&target, &body),
            None => false,
        });
        let me = self.local.as_ref().map(|l| l.me());
        // A read of a read-replicated grain: it changes nothing, so one lost with the
        // replica that had it may be asked again of the primary.
        let retry_read = any_copy && known.and_then(|k| k.kind) == Some(CopyKind::ReadReplicas);
        // Set when a copy could not take the call: it goes to the home (primary) from
        // then on, and the home's reply brings the newest set if ours is outdated.
        let mut to_home = false;
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
            let picked = self.copies.pick(&target, any_copy && !to_home, me);
            let (silo, fresh) = match picked.or_else(|| owner.take()) {
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
                                copy,
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
                                (hops, trace, copy, waits_until),
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
                replica: self.copies.known(&target).map(|k| ReplicaCall {
                    min_version: copy.min_version.max(k.token),
                    copies_seen: k.seen,
                    primary: copy.primary || !any_copy,
                }),
            };
            let mut response = if stream.is_some() {
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
            let mut version = 0;
            if let Ok(Response::GrainAt(at)) = response {
                let GrainReplyAt {
                    reply: result,
                    version: at_version,
                    copies,
                } = *at;
                self.copies.learn(&target, at_version, copies);
                version = at_version;
                response = Ok(Response::Grain(result));
            }
            match response {
                Ok(Response::Grain(Ok(bytes))) => {
                    complete(reply, bytes, decode_reply, version);
                    return Ok(());
                }
                // The owner is shutting down or fenced: the entry moves soon.
                Ok(Response::Grain(Err(
                    e @ (CallError::ShuttingDown | CallError::Unreachable(_)),
                ))) => {
                    if self.avoid_copy(&target, picked, &mut to_home) {
                        continue;
                    }
                    last_error = Some(e);
                }
                Ok(Response::Grain(Err(e))) if e.is_not_delivered() => return fail(reply, e),
                Ok(Response::Grain(Err(e))) => {
                    reply.complete_at(Err(e), version);
                    return Ok(());
                }
                Ok(Response::Moved(_)) if picked.is_some() && !to_home => {
                    // A copy that does not host the grain (any more, or not yet): this
                    // call goes to the home, whose reply brings the newest set.
                    to_home = true;
                    continue;
                }
                Ok(Response::Moved(_)) if picked.is_some() => {
                    // The home itself moved: the set is outdated.
                    self.copies.drop_silo_of(&target, silo);
                    continue;
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
                    if self.avoid_copy(&target, picked, &mut to_home) {
                        continue;
                    }
                    last_error = Some(e.into())
                }
                // A replica was lost with a read in flight: ask the primary instead.
                Err(TransportError::Lost(why)) if retry_read && picked.is_some() && !to_home => {
                    tracing::debug!(grain = %target, replica = %silo, "read lost with its replica ({why}); asking the primary");
                    to_home = true;
                    continue;
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

/// Completes `reply` with an encoded reply served at `version`, decoding it for a
/// local caller.
fn complete(reply: ReplyTo, bytes: Vec<u8>, decode_reply: Option<DecodeReply>, version: u64) {
    match reply {
        ReplyTo::None => {}
        ReplyTo::Encoded(tx) => {
            let _ = tx.send(Ok(bytes));
        }
        ReplyTo::EncodedAt(tx) => {
            let _ = tx.send((Ok(bytes), version));
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
    (hops, trace, copy, waits_until): (u8, Option<TraceContext>, CopyHint, Option<Instant>),
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
                copy,
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
        copy,
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
