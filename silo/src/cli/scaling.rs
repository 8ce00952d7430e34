//! `--replication` and `--scaling`: turning hot-grain replication off, and overriding a
//! replicated grain type's [`Scaling`] from the command line.
//!
//! `--scaling TYPE:KEY=VALUE,…` starts from what the type declares and changes the keys
//! given: `max-copies`, `max-local`, `busy` (percent), `queue` (messages), `rate`
//! (messages per second; 0 is off), `window` and `cool-down` (durations such as `5s`).

use std::time::Duration;

use clap::ValueEnum;
use granary_runtime::registry::registry;
use granary_runtime::Scaling;

use super::RunError;
use crate::SiloConfig;

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Switch {
    /// Enabled.
    #[default]
    On,
    /// Disabled.
    Off,
}

/// One `--scaling` flag: a grain type and the keys it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingFlag {
    /// The grain type's wire name.
    pub type_name: String,
    /// `(key, value)` in the order given.
    pub settings: Vec<(String, String)>,
}

/// Parses `TYPE:KEY=VALUE,…` (the values are checked when applied).
pub fn parse_scaling_flag(text: &str) -> Result<ScalingFlag, String> {
    let (type_name, settings) = text.rsplit_once(':').ok_or_else(|| {
        format!("`{text}`: expected TYPE:KEY=VALUE,… (e.g. my.grain/v1:max-copies=3)")
    })?;
    let settings = settings
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("`{pair}`: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ScalingFlag {
        type_name: type_name.trim().to_owned(),
        settings,
    })
}

/// `base` with the flag's settings applied.
fn apply(base: Scaling, flag: &ScalingFlag) -> Result<Scaling, String> {
    let mut s = base;
    for (key, value) in &flag.settings {
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("{key}={value}: expected a whole number"))
        };
        let duration = || {
            humantime::parse_duration(value)
                .map_err(|e| format!("{key}={value}: expected a duration such as 5s ({e})"))
        };
        let small = |n: u32| u16::try_from(n).map_err(|_| format!("{key}={value}: too large"));
        match key.as_str() {
            "max-copies" => s = s.max_copies(small(number()?)?),
            "max-local" => s = s.max_local(small(number()?)?),
            "busy" => s = s.hot_busy_pct(small(number()?)?),
            "queue" => s = s.hot_queue(number()?),
            "rate" => s = s.hot_rate(number()?),
            "window" => s = s.window(duration()?.max(Duration::from_millis(1))),
            "cool-down" => s = s.cool_down(duration()?),
            other => {
                return Err(format!(
                    "unknown key `{other}` (keys: max-copies, max-local, busy, queue, rate, window, cool-down)"
                ))
            }
        }
    }
    Ok(s)
}

/// Applies `--replication` and every `--scaling` to `config`. A `--scaling` for a type
/// that is not registered, or that declares no replication, is an error.
pub(super) fn configure(
    mut config: SiloConfig,
    replication: Switch,
    flags: &[ScalingFlag],
) -> Result<SiloConfig, RunError> {
    config = config.with_replication(replication == Switch::On);
    for flag in flags {
        let entry = registry().get(&flag.type_name).ok_or_else(|| {
            RunError::Config(format!(
                "--scaling {}: no grain type `{}` is registered in this silo",
                flag.type_name, flag.type_name
            ))
        })?;
        let base = entry.replication.scaling().copied().ok_or_else(|| {
            RunError::Config(format!(
                "--scaling {}: the type is a single activation (its `REPLICATION` is `Replication::Single`); only stateless workers and read replicas scale",
                flag.type_name
            ))
        })?;
        let scaling = apply(base, flag)
            .map_err(|e| RunError::Config(format!("--scaling {}: {e}", flag.type_name)))?;
        tracing::info!(
            "{} ({}): scaling {scaling:?}",
            flag.type_name,
            entry.replication.describe()
        );
        config = config.with_type_scaling(flag.type_name.clone(), scaling);
    }
    if replication == Switch::Off {
        tracing::info!("replication is off: every grain type runs as a single activation");
    }
    Ok(config)
}

#[cfg(test)]
mod tests;
