//! The compiled-in fault filter: the rules file, its parser, and the hooks that apply it.
//!
//! The rules live in one process-wide [`Filter`] behind a std mutex that is never held
//! across an `.await`. Each hook first asks whether the file changed (a `stat`, at most
//! every [`RELOAD_EVERY`](super::RELOAD_EVERY)); a file that fails to parse keeps the
//! previous rules and logs why.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{RELOAD_EVERY, RULES_ENV};

/// Which traffic a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Proto {
    Udp,
    Tcp,
}

/// Which way the traffic goes, seen from this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dir {
    In,
    Out,
}

/// Whom a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Peer {
    Any,
    Ip(IpAddr),
    Addr(SocketAddr),
}

impl Peer {
    fn matches(self, addr: SocketAddr) -> bool {
        match self {
            Peer::Any => true,
            Peer::Ip(ip) => addr.ip() == ip,
            Peer::Addr(a) => addr == a,
        }
    }
}

/// What happens to matching traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Action {
    /// Lost with this probability (`drop` is 1.0).
    Loss(f64),
    /// Sent twice with this probability (UDP only).
    Dup(f64),
    /// Held back by a uniform random delay in `[min, max]`.
    Delay(Duration, Duration),
}

/// One line of the rules file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Rule {
    pub(super) proto: Proto,
    pub(super) dir: Dir,
    pub(super) peer: Peer,
    pub(super) action: Action,
}

/// Parses a whole rules file; the error names the line.
pub(super) fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        rules.push(parse_rule(line).map_err(|e| format!("line {}: {e}: `{line}`", n + 1))?);
    }
    Ok(rules)
}

fn parse_rule(line: &str) -> Result<Rule, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [proto, dir, peer, action, rest @ ..] = words.as_slice() else {
        return Err("expected PROTO DIR PEER ACTION [ARG]".into());
    };
    let proto = match *proto {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        other => return Err(format!("unknown protocol `{other}`")),
    };
    let dir = match *dir {
        "in" => Dir::In,
        "out" => Dir::Out,
        other => return Err(format!("unknown direction `{other}`")),
    };
    if proto == Proto::Tcp && dir == Dir::In {
        return Err("`tcp in` is not supported: cut a connection where it is written".into());
    }
    let peer = if *peer == "*" {
        Peer::Any
    } else if let Ok(addr) = peer.parse::<SocketAddr>() {
        Peer::Addr(addr)
    } else if let Ok(ip) = peer.parse::<IpAddr>() {
        Peer::Ip(ip)
    } else {
        return Err(format!("bad peer `{peer}` (want *, IP or IP:PORT)"));
    };
    let arg = rest.first().copied();
    if rest.len() > 1 {
        return Err("too many words".into());
    }
    let probability = |arg: Option<&str>| -> Result<f64, String> {
        let p: f64 = arg
            .ok_or("missing probability")?
            .parse()
            .map_err(|_| "bad probability")?;
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err("probability outside 0..=1".into())
        }
    };
    let action = match *action {
        "drop" if arg.is_none() => Action::Loss(1.0),
        "drop" => return Err("`drop` takes no argument".into()),
        "loss" => Action::Loss(probability(arg)?),
        "dup" if proto == Proto::Udp => Action::Dup(probability(arg)?),
        "dup" => return Err("`dup` is for UDP only (TCP never duplicates)".into()),
        "delay" => {
            let arg = arg.ok_or("missing delay")?;
            let (min, max) = arg.split_once("..").unwrap_or((arg, arg));
            let min = parse_duration(min)?;
            let max = parse_duration(max)?;
            if max < min {
                return Err("delay range ends before it starts".into());
            }
            Action::Delay(min, max)
        }
        other => return Err(format!("unknown action `{other}`")),
    };
    Ok(Rule {
        proto,
        dir,
        peer,
        action,
    })
}

/// `250ms`, `2s`, `1500us`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (ms, s, us)"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad number in `{text}`"))?;
    match unit {
        "us" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("unknown unit in `{text}` (ms, s, us)")),
    }
}

/// What the rules say about one datagram or write.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Verdict {
    pub(super) drop: bool,
    pub(super) dup: bool,
    pub(super) delay: Option<Duration>,
}

/// Applies the first rule of each action kind that matches.
pub(super) fn judge(
    rules: &[Rule],
    proto: Proto,
    dir: Dir,
    peer: SocketAddr,
    rng: &mut fastrand::Rng,
) -> Verdict {
    let mut verdict = Verdict::default();
    let (mut loss, mut dup, mut delay) = (false, false, false);
    for rule in rules
        .iter()
        .filter(|r| r.proto == proto && r.dir == dir && r.peer.matches(peer))
    {
        match rule.action {
            Action::Loss(p) if !loss => {
                loss = true;
                verdict.drop = rng.f64() < p;
            }
            Action::Dup(p) if !dup => {
                dup = true;
                verdict.dup = rng.f64() < p;
            }
            Action::Delay(min, max) if !delay => {
                delay = true;
                let span = max.saturating_sub(min);
                verdict.delay = Some(min + span.mul_f64(rng.f64()));
            }
            _ => {}
        }
    }
    verdict
}

/// The process-wide filter state.
struct Filter {
    path: Option<PathBuf>,
    rules: Vec<Rule>,
    /// The file's modification time and length when last read.
    seen: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    rng: fastrand::Rng,
}

impl Filter {
    fn refresh(&mut self) {
        let Some(path) = &self.path else { return };
        let now = Instant::now();
        if self
            .checked
            .is_some_and(|at| now.saturating_duration_since(at) < RELOAD_EVERY)
        {
            return;
        }
        self.checked = Some(now);
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == self.seen {
            return;
        }
        self.seen = stamp;
        let text = if stamp.is_some() {
            std::fs::read_to_string(path).unwrap_or_default()
        } else {
            String::new() // no file: no faults
        };
        match parse(&text) {
            Ok(rules) => {
                if rules != self.rules {
                    tracing::warn!(
                        "fault injection: {} rule(s) from {}",
                        rules.len(),
                        path.display()
                    );
                }
                self.rules = rules;
            }
            Err(e) => tracing::error!(
                "fault injection: {} not applied ({e}); keeping the previous rules",
                path.display()
            ),
        }
    }

    fn judge(&mut self, proto: Proto, dir: Dir, peer: SocketAddr) -> Verdict {
        self.refresh();
        if self.rules.is_empty() {
            return Verdict::default();
        }
        judge(&self.rules, proto, dir, peer, &mut self.rng)
    }
}

fn verdict(proto: Proto, dir: Dir, peer: SocketAddr) -> Verdict {
    static FILTER: OnceLock<Mutex<Filter>> = OnceLock::new();
    let filter = FILTER.get_or_init(|| {
        let path = std::env::var_os(RULES_ENV).map(PathBuf::from);
        if let Some(path) = &path {
            tracing::warn!("fault injection enabled: rules from {}", path.display());
        }
        Mutex::new(Filter {
            path,
            rules: Vec::new(),
            seen: None,
            checked: None,
            rng: fastrand::Rng::new(),
        })
    });
    filter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .judge(proto, dir, peer)
}

/// See the disabled twin in the parent module.
pub fn udp_send(socket: &tokio::net::UdpSocket, bytes: &[u8], dest: SocketAddr) -> bool {
    let v = verdict(Proto::Udp, Dir::Out, dest);
    if v.drop {
        return true;
    }
    if v.delay.is_none() && !v.dup {
        return false;
    }
    // A second handle on the same socket (same source port), for sends made later or
    // from another task.
    let Ok(clone) = socket
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::UdpSocket::from)
    else {
        return false;
    };
    if v.dup {
        let _ = clone.send_to(bytes, dest);
    }
    let Some(delay) = v.delay else { return false };
    let bytes = bytes.to_vec();
    // A detached thread: the delayed datagram must go out even if the task that sent
    // it ends, and a sleeping thread is all it costs (chaos builds only).
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = clone.send_to(&bytes, dest);
    });
    true
}

/// See the disabled twin in the parent module.
pub fn udp_recv_dropped(src: SocketAddr) -> bool {
    verdict(Proto::Udp, Dir::In, src).drop
}

/// See the disabled twin in the parent module.
pub fn tcp_connect(peer: SocketAddr) -> std::io::Result<()> {
    if verdict(Proto::Tcp, Dir::Out, peer).drop {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("fault injection: link to {peer} is down"),
        ))
    } else {
        Ok(())
    }
}

/// See the disabled twin in the parent module.
pub async fn tcp_write(peer: Option<SocketAddr>) -> std::io::Result<()> {
    let Some(peer) = peer else { return Ok(()) };
    let v = verdict(Proto::Tcp, Dir::Out, peer);
    if v.drop {
        return Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            format!("fault injection: link to {peer} is down"),
        ));
    }
    if let Some(delay) = v.delay {
        tokio::time::sleep(delay).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
