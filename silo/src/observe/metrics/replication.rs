//! The replication metrics: copies hosted on this silo by role and, on the master, the
//! copy sets and the decisions taken.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{counter, family, gauge};
use crate::catalog::Catalog;
use crate::replication::controller::Controller;

/// Copies of replicated grains.
#[derive(Debug)]
pub(super) struct ReplicationCollector {
    pub(super) catalog: Arc<Catalog>,
    /// The master's decisions (`None` on a slave).
    pub(super) controller: Option<Arc<Controller>>,
}

impl Collector for ReplicationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let mut m = family(
            &mut encoder,
            "granary_replicas",
            "Activations of replicated grain types on this silo, per grain type and role (primary, replica, worker). Single-activation types are not listed.",
            None,
            MetricType::Gauge,
        )?;
        for dispatcher in self.catalog.dispatchers() {
            let Some(copies) = dispatcher.copies() else {
                continue;
            };
            for (role, n) in copies.role_counts() {
                gauge(
                    &mut m,
                    &[
                        ("grain_type", dispatcher.grain_type()),
                        ("role", role.as_str()),
                    ],
                    n as u64,
                )?;
            }
        }
        let Some(controller) = &self.controller else {
            return Ok(());
        };
        let (grains, members) = controller.set_counts();
        let m = family(
            &mut encoder,
            "granary_replicated_grains",
            "The master only: grains that have copies beyond their home.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(grains as u64).encode(m)?;
        let m = family(
            &mut encoder,
            "granary_replica_silos",
            "The master only: silos hosting copies of a grain beyond its home, summed over grains.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(members as u64).encode(m)?;
        let mut m = family(
            &mut encoder,
            "granary_replication_decisions",
            "The master only: copies added (grown), removed by a scale-in decision after the cool-down (shrunk), or removed because the copy deactivated after idling for the cool-down, or its silo or home went away (dropped).",
            None,
            MetricType::Counter,
        )?;
        let counts = &controller.counts;
        for (decision, n) in [
            ("grown", &counts.grown),
            ("shrunk", &counts.shrunk),
            ("dropped", &counts.dropped),
        ] {
            counter(&mut m, &[("decision", decision)], n.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}
