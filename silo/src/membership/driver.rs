//! The membership task: owns the UDP socket and the [`Protocol`], and publishes
//! snapshots, the acting master's leadership and a slave's hosting lease.
//!
//! One task does everything (receive, tick, send, publish), so the protocol state needs
//! no lock. After every event it persists the election state if it changed (before any
//! packet that depends on it leaves), publishes, then sends. It stops when the `abort`
//! token fires (at once, sending nothing) or when the `leave` token fires (after sending
//! SHUTDOWN).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary_proto::packet::{AuthRejection, LoadReport, Packet, PacketCodec, PacketError, SiloId};
use granary_proto::replica::StorePosition;
use granary_runtime::HostingLease;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::candidate::ExternalLease;
use super::protocol::{Outbox, Protocol};
use super::snapshot::MembershipSnapshot;
use super::{ElectionStore, Leadership};

/// How often a throttled warning may be logged at first.
const WARN_EVERY: Duration = Duration::from_secs(1);
/// The longest a throttled warning stays silent while its cause persists.
const WARN_MAX: Duration = Duration::from_secs(60);
/// How often an auth rejection may be sent back (they are tiny; this only bounds
/// what spoofed sources can make us send).
const REJECT_EVERY: Duration = Duration::from_millis(50);

/// Rate limiter for one kind of warning, backing off while its cause persists: one
/// line, then the next after 1 s, 2 s, 4 s … up to a minute (each with a count of what
/// was suppressed in between), back to 1 s after a quiet spell.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    /// When the last line was logged.
    last: Option<Instant>,
    /// Events not logged since.
    suppressed: u64,
    /// Current silence after a line (zero means [`WARN_EVERY`]).
    every: Duration,
}

impl Throttle {
    /// `Some(suppressed_count)` if a line may be logged now, else `None` (and counts).
    pub(super) fn allow(&mut self, now: Instant) -> Option<u64> {
        let every = self.every.max(WARN_EVERY);
        match self.last {
            Some(last) if now.saturating_duration_since(last) < every => {
                self.suppressed += 1;
                None
            }
            last => {
                // The cause persisted through the silence (events were held back and
                // this one follows right after it): back off further.
                let storm = last.is_some_and(|last| {
                    self.suppressed > 0 && now.saturating_duration_since(last) < every * 2
                });
                self.every = if storm {
                    (every * 2).min(WARN_MAX)
                } else {
                    WARN_EVERY
                };
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Everything the membership task owns.
#[derive(Debug)]
pub(super) struct Driver {
    /// The bound UDP socket (dropped, and its port freed, when the task ends), registered
    /// with the membership thread's runtime.
    pub(super) socket: UdpSocket,
    /// Signs/verifies and size-checks datagrams.
    pub(super) codec: PacketCodec,
    /// The state machine.
    pub(super) protocol: Protocol,
    /// This silo, stamped on every packet.
    pub(super) me: SiloId,
    /// Sequence number of the last packet sent.
    pub(super) seq: u64,
    /// Version of the last published snapshot.
    pub(super) version: u64,
    /// Load changed since the last publish; refreshed silently on the next tick.
    pub(super) load_pending: bool,
    /// Where snapshots go.
    pub(super) snapshots: watch::Sender<Arc<MembershipSnapshot>>,
    /// This silo's load, read at every tick.
    pub(super) load: watch::Receiver<LoadReport>,
    /// A candidate's store position, read before every event.
    pub(super) position: watch::Receiver<StorePosition>,
    /// A slave: the newest admission whose directory report the master accepted.
    pub(super) reported: watch::Receiver<u64>,
    /// The value of `reported` the protocol was last given.
    pub(super) reported_seen: u64,
    /// Shared-store mode: the lease task's verdicts.
    pub(super) external: Option<mpsc::Receiver<ExternalLease>>,
    /// A slave's hosting lease, renewed from the protocol after every event.
    pub(super) hosting: Arc<HostingLease>,
    /// Where the last published hosting lease ran until.
    pub(super) hosting_published: Option<Instant>,
    /// Where a candidate persists its election state.
    pub(super) election: Arc<dyn ElectionStore>,
    /// This candidate's leadership, published after every event.
    pub(super) leadership: watch::Sender<Leadership>,
    /// Fired once when the master says SHUTDOWN.
    pub(super) shutdown_requested: CancellationToken,
    /// Throttles "dropped a bad datagram" warnings.
    pub(super) drop_warnings: Throttle,
    /// Throttles socket error warnings.
    pub(super) io_warnings: Throttle,
    /// When an auth rejection was last sent back.
    pub(super) last_rejection: Option<Instant>,
}

impl Driver {
    /// Runs until `abort` (stop now) or `leave` (send SHUTDOWN, then stop) fires. Once
    /// `announce` fires, SHUTDOWN is sent instead of heartbeats every tick (until the
    /// peers have left), while the task keeps running.
    pub(super) async fn run(
        mut self,
        leave: CancellationToken,
        abort: CancellationToken,
        announce: CancellationToken,
    ) {
        let mut announced = false;
        let mut buf = vec![0u8; self.codec.max_packet() + 1];
        let mut interval = self.protocol.tick_interval();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut external = self.external.take();
        loop {
            if self.sync_inputs() {
                // A report was accepted: heartbeat at once, so the new master renews the
                // lease without waiting for the next tick. (Checked here, not only when
                // `reported` wakes the loop: any other event may have read it first.)
                let load = *self.load.borrow();
                let mut out = Outbox::new();
                self.protocol.on_tick(Instant::now(), load, &mut out);
                self.finish(out, false).await;
            }
            tokio::select! {
                biased;
                () = abort.cancelled() => return,
                () = leave.cancelled() => {
                    let mut out = Outbox::new();
                    self.protocol.on_leave(Instant::now(), &mut out);
                    self.finish(out, true).await;
                    return;
                }
                () = announce.cancelled(), if !announced => {
                    announced = true;
                    let mut out = Outbox::new();
                    self.protocol.on_leave(Instant::now(), &mut out);
                    self.finish(out, true).await;
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((_, src)) if granary_net::fault::udp_recv_dropped(src) => {}
                    Ok((len, src)) => self.on_datagram(&buf[..len], src).await,
                    Err(e) => {
                        if let Some(suppressed) = self.io_warnings.allow(Instant::now()) {
                            tracing::warn!("membership socket receive failed: {e}{}", suppressed_note(suppressed));
                        }
                        // Do not spin if the error persists.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                // A report was accepted: handled at the top of the loop.
                Ok(()) = self.reported.changed() => {}
                Some(lease) = async { match external.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    let mut out = Outbox::new();
                    self.protocol.on_external(Instant::now(), lease, &mut out);
                    self.finish(out, false).await;
                }
                _ = ticker.tick() => {
                    let load = *self.load.borrow();
                    let mut out = Outbox::new();
                    if announced {
                        // Repeat SHUTDOWN to whoever has not left yet (datagrams get lost).
                        self.protocol.on_leave(Instant::now(), &mut out);
                    } else {
                        self.protocol.on_tick(Instant::now(), load, &mut out);
                    }
                    self.finish(out, true).await;
                }
            }
            if self.protocol.shutdown_requested() && !self.shutdown_requested.is_cancelled() {
                self.shutdown_requested.cancel();
            }
            let wanted = self.protocol.tick_interval();
            if wanted != interval {
                tracing::debug!(interval = %humantime::format_duration(wanted), "tick interval changed");
                // Hurrying starts at once; slowing down waits out the current interval.
                let first = if wanted < interval {
                    wanted.min(Duration::from_millis(1))
                } else {
                    wanted
                };
                interval = wanted;
                ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            }
        }
    }

    /// Feeds the inputs other parts of the silo own into the protocol; true when a newer
    /// directory report was accepted since the last call.
    fn sync_inputs(&mut self) -> bool {
        let position = *self.position.borrow_and_update();
        self.protocol.set_position(position);
        let reported = *self.reported.borrow_and_update();
        self.protocol.set_reported(reported);
        let newer = reported > self.reported_seen;
        self.reported_seen = self.reported_seen.max(reported);
        newer
    }

    /// After an event: persist the election state if it changed (the packets depend on
    /// it), publish what changed, then send.
    async fn finish(&mut self, mut out: Outbox, tick: bool) {
        if let Some(state) = self.protocol.take_persist() {
            let store = self.election.clone();
            let saved = tokio::task::spawn_blocking(move || store.save(&state))
                .await
                .unwrap_or_else(|e| Err(format!("the save task failed: {e}")));
            if let Err(e) = saved {
                // Never send a vote or a claim we could not make durable.
                tracing::error!(
                    "cannot persist the election state ({e}); not sending {} packet(s)",
                    out.len()
                );
                out.clear();
            }
        }
        self.publish(tick);
        self.send_all(out).await;
    }

    /// Verifies and handles one datagram; bad ones are logged (throttled) and dropped.
    async fn on_datagram(&mut self, datagram: &[u8], src: SocketAddr) {
        let now = Instant::now();
        let packet = match self.codec.decode(datagram) {
            Ok(packet) => packet,
            Err(PacketError::Rejected(reason)) => {
                self.protocol.on_rejected(now, src, reason);
                return;
            }
            Err(e) => {
                if let Some(reason) = e.auth_rejection() {
                    self.reject(src, reason, now).await;
                }
                if let Some(suppressed) = self.drop_warnings.allow(now) {
                    tracing::warn!(
                        "dropped a membership packet from {src}: {e}{}",
                        suppressed_note(suppressed)
                    );
                }
                return;
            }
        };
        tracing::trace!(%src, from = %packet.from, seq = packet.seq, kind = packet.body.name(), "received");
        let mut out = Outbox::new();
        self.protocol.on_packet(now, src, packet, &mut out);
        self.finish(out, false).await;
    }

    /// Tells `src` why its packet was refused (at most every [`REJECT_EVERY`]).
    async fn reject(&mut self, src: SocketAddr, reason: AuthRejection, now: Instant) {
        if self
            .last_rejection
            .is_some_and(|at| now.saturating_duration_since(at) < REJECT_EVERY)
        {
            return;
        }
        self.last_rejection = Some(now);
        let _ = self
            .socket
            .send_to(&PacketCodec::encode_rejection(reason), src)
            .await;
    }

    /// Publishes a snapshot if something changed: a membership change bumps the
    /// version and wakes watchers; a load-only change is written silently, and only on
    /// ticks (`tick`), so heartbeats do not churn snapshots.
    fn publish(&mut self, tick: bool) {
        let now = Instant::now();
        if self.protocol.is_slave() {
            let until = self.protocol.hosting_until();
            if until != self.hosting_published {
                self.hosting_published = until;
                match until {
                    Some(until) => self.hosting.renew_until(until),
                    None => self.hosting.revoke(),
                }
            }
        }
        let leadership = match self.protocol.leadership() {
            Some((epoch, until)) => Leadership {
                epoch,
                until: Some(until),
            },
            None => Leadership {
                epoch: self.leadership.borrow().epoch,
                until: None,
            },
        };
        self.leadership.send_if_modified(|current| {
            let changed = *current != leadership;
            *current = leadership;
            changed
        });
        let dirty = self.protocol.take_dirty();
        self.load_pending |= dirty.load;
        if dirty.membership {
            self.version += 1;
            self.load_pending = false;
            let snapshot = Arc::new(self.protocol.snapshot(self.version, now));
            self.snapshots.send_replace(snapshot);
        } else if tick && self.load_pending {
            self.load_pending = false;
            let snapshot = Arc::new(self.protocol.snapshot(self.version, now));
            self.snapshots.send_if_modified(|current| {
                *current = snapshot;
                false
            });
        }
    }

    /// Encodes and sends every queued packet. Failures are logged, never fatal: UDP is
    /// lossy anyway and the protocol recovers on the next tick.
    async fn send_all(&mut self, out: Outbox) {
        for (dest, body) in out {
            self.seq += 1;
            let kind = body.name();
            let packet = Packet {
                from: self.me,
                seq: self.seq,
                body,
            };
            let bytes = match self.codec.encode(&packet) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!("cannot encode a {kind} packet for {dest}: {e}");
                    continue;
                }
            };
            tracing::trace!(%dest, seq = self.seq, kind, "sending");
            if granary_net::fault::udp_send(&self.socket, &bytes, dest) {
                continue; // dropped or delayed by the fault filter (chaos builds only)
            }
            if let Err(e) = self.socket.send_to(&bytes, dest).await {
                if let Some(suppressed) = self.io_warnings.allow(Instant::now()) {
                    tracing::warn!(
                        "cannot send {kind} to {dest}: {e}{}",
                        suppressed_note(suppressed)
                    );
                }
            }
        }
    }
}

/// " (N more like it suppressed)" when a throttle held lines back, else nothing.
pub(super) fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more like it since the last report)")
    }
}
