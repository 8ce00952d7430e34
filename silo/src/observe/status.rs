//! [`StatusSource`]: builds this silo's [`SiloStatus`] and, on the master, the
//! [`ClusterStatus`] (the master asks every live slave for its own report, in parallel,
//! with a short deadline; a slave that does not answer is listed as unanswered).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use granary_net::transport::Peers;
use granary_proto::frame::{Request, Response};
use granary_proto::packet::SiloId;
use granary_proto::status::{
    ClusterStatus, GrainTypeStatus, HotGrain, MemberView, RoleKind, SiloState, SiloStatus,
    HOT_GRAINS,
};
use granary_proto::CallError;
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::{EventLog, EVENT_LOG_CAPACITY};
use super::process;
use crate::catalog::Catalog;
use crate::membership::{Hosting, MemberInfo, MemberStatus, MembershipSnapshot, SiloRole};

impl StatusSource {
    /// A slave's way to the cluster status: the master's answer.
    async fn ask_master(&self, peers: &Peers) -> Result<ClusterStatus, CallError> {
        let master = self.master().ok_or_else(|| {
            CallError::Unreachable(
                "no acting master known yet (joining, or an election runs)".into(),
            )
        })?;
        let deadline = Instant::now() + STATUS_TIMEOUT * 3;
        match peers
            .call(master.tcp, Request::ClusterStatus, deadline)
            .await?
        {
            Response::ClusterStatus(status) => status.map(|s| *s),
            _ => Err(CallError::Codec(
                "the master answered a status request with something else".into(),
            )),
        }
    }
}

/// How long the master waits for a slave's status report.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything a status report is made of.
#[derive(Debug)]
pub(crate) struct StatusSource {
    /// This silo.
    pub(crate) me: SiloId,
    /// Its role.
    pub(crate) role: SiloRole,
    /// When it started (uptime).
    pub(crate) started: Instant,
    /// Its grains.
    pub(crate) catalog: Arc<Catalog>,
    /// Its view of the cluster.
    pub(crate) membership: watch::Receiver<Arc<MembershipSnapshot>>,
    /// What it saw happen.
    pub(crate) events: Arc<EventLog>,
}

/// The role a member plays now: the acting master, a standby candidate, or a slave.
fn role_of(member: &MemberInfo) -> RoleKind {
    match (member.is_master, member.is_candidate) {
        (true, _) => RoleKind::Master,
        (false, true) => RoleKind::Standby,
        (false, false) => RoleKind::Slave,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl StatusSource {
    /// Where this silo stands now.
    pub(crate) fn state(&self) -> SiloState {
        let snapshot = self.membership.borrow();
        let leaving = snapshot
            .get(&snapshot.me)
            .is_some_and(|m| m.status != MemberStatus::Active);
        match (self.role, snapshot.master, snapshot.hosting) {
            _ if leaving => SiloState::Leaving,
            (SiloRole::Master, Some(_), _) if snapshot.is_acting_master() => SiloState::Active,
            (SiloRole::Master, Some(_), _) => SiloState::Standby,
            (_, None, _) => SiloState::Joining,
            (SiloRole::Slave, Some(_), Hosting::Serving) => SiloState::Active,
            (SiloRole::Slave, Some(_), Hosting::Suspended) => SiloState::Suspended,
            (SiloRole::Slave, Some(_), Hosting::Fenced) => SiloState::Fenced,
        }
    }

    /// This silo's report.
    pub(crate) fn silo_status(&self) -> SiloStatus {
        let (cpu_ms, rss_bytes) = process::usage();
        let mut grain_types = Vec::new();
        let mut hot = Vec::new();
        for dispatcher in self.catalog.dispatchers() {
            let load = dispatcher.stats();
            let counted = dispatcher.type_stats().snapshot();
            grain_types.push(GrainTypeStatus {
                grain_type: load.grain_type.to_owned(),
                activations: load.activations as u64,
                queue_depth: load.queue_depth as u64,
                messages: counted.messages_total(),
                latency: counted.latency,
            });
            hot.extend(load.grains.into_iter().map(|g| HotGrain {
                grain_type: load.grain_type.to_owned(),
                key: g.key,
                rate_milli: (g.message_rate * 1000.0).round() as u64,
                queue_depth: g.queue_depth as u64,
                messages: g.messages,
                replicas: g.copies,
            }));
        }
        grain_types.sort_by(|a, b| a.grain_type.cmp(&b.grain_type));
        hot.sort_by(|a, b| {
            (b.rate_milli, b.queue_depth, b.messages).cmp(&(
                a.rate_milli,
                a.queue_depth,
                a.messages,
            ))
        });
        hot.retain(|g| g.rate_milli > 0 || g.queue_depth > 0);
        hot.truncate(HOT_GRAINS);
        SiloStatus {
            id: self.me,
            role: match self.role {
                SiloRole::Slave => RoleKind::Slave,
                SiloRole::Master if self.membership.borrow().is_acting_master() => RoleKind::Master,
                SiloRole::Master => RoleKind::Standby,
            },
            state: self.state(),
            uptime_ms: millis(self.started.elapsed()),
            activations: grain_types.iter().map(|t| t.activations).sum(),
            queue_depth: grain_types.iter().map(|t| t.queue_depth).sum(),
            cpu_ms,
            rss_bytes,
            grain_types,
            hot_grains: hot,
            events: self.events.recent(),
        }
    }

    /// Every member this silo knows, tombstones included.
    pub(crate) fn members(&self) -> Vec<MemberView> {
        let snapshot = self.membership.borrow();
        snapshot
            .members
            .values()
            .map(|m| MemberView {
                id: m.id,
                role: role_of(m),
                state: match m.status {
                    MemberStatus::Active => SiloState::Active,
                    MemberStatus::ShuttingDown => SiloState::Leaving,
                    MemberStatus::Dead => SiloState::Dead,
                },
                activations: m.load.activations,
                queue_depth: m.load.queue_depth,
            })
            .collect()
    }

    /// The master this silo follows, if known.
    pub(crate) fn master(&self) -> Option<SiloId> {
        self.membership.borrow().master
    }

    /// The whole cluster: assembled here on the acting master (its own report plus every
    /// live slave's and standby's, asked in parallel through `peers`); asked of the acting
    /// master elsewhere.
    pub(crate) async fn cluster_status(&self, peers: &Peers) -> Result<ClusterStatus, CallError> {
        if !self.membership.borrow().is_acting_master() {
            return self.ask_master(peers).await;
        }
        let slaves: Vec<SiloId> = {
            let snapshot = self.membership.borrow();
            snapshot
                .active_members()
                .map(|m| m.id)
                .filter(|id| *id != self.me)
                .collect()
        };
        let deadline = Instant::now() + STATUS_TIMEOUT;
        let answers = join_all(slaves.iter().map(|id| async move {
            let answer = peers.call(id.tcp, Request::SiloStatus, deadline).await;
            (*id, answer)
        }))
        .await;
        let mut silos = vec![self.silo_status()];
        let mut unanswered = Vec::new();
        for (id, answer) in answers {
            match answer {
                Ok(Response::SiloStatus(status)) => silos.push(*status),
                Ok(_) => unanswered.push((id, "answered something else".to_owned())),
                Err(e) => unanswered.push((id, e.to_string())),
            }
        }
        let mut events: Vec<_> = silos
            .iter()
            .flat_map(|s| s.events.iter().cloned())
            .collect();
        events.sort_by_key(|e| (e.at_unix_ms, e.seq));
        let skip = events.len().saturating_sub(EVENT_LOG_CAPACITY);
        events.drain(..skip);
        Ok(ClusterStatus {
            master: self.me,
            members: self.members(),
            silos,
            unanswered,
            events,
        })
    }
}
