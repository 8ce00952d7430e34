//! Every silo's HTTP port: `/metrics` parses as OpenMetrics text and counts exactly the
//! workload that was run; `/health` and `/ready` answer as an orchestrator expects,
//! including while a slave is fenced.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use granary_example::{Add, Counter};
use granary_runtime::Grain;
use granary_silo::testing::TestCluster;
use granary_silo::ClusterSilo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const STABLE: Duration = Duration::from_secs(10);
const COUNTER: &str = Counter::TYPE_NAME;

/// One HTTP/1.0 answer: status, `Content-Type`, body.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// `GET path` over a fresh connection (HTTP/1.0: no chunking, the server closes).
async fn get(addr: SocketAddr, path: &str) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(String::from_utf8(raw).expect("UTF-8 answer"))
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {addr} timed out"))
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .expect("a status line");
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Answer {
        status: status.parse().expect("a numeric status"),
        content_type,
        body: body.to_owned(),
    }
}

fn http(silo: &ClusterSilo) -> SocketAddr {
    silo.http_addr().expect("the cluster serves HTTP")
}

/// One sample line: `name{label="value",…} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// A parsed exposition.
#[derive(Debug)]
struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of `name`'s samples that carry every label of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// Parses OpenMetrics text (the subset a Prometheus server reads from us): `# HELP`,
/// `# TYPE`, `# UNIT`, samples of declared families only, `# EOF` last.
fn parse(text: &str) -> Result<Scrape, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition does not end with `# EOF`")?;
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (what, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(what), Some(name), Some(rest)) = (what, name, rest) else {
                return Err(format!("malformed line {line:?}"));
            };
            valid_name(name)
                .then_some(())
                .ok_or(format!("bad name in {line:?}"))?;
            match what {
                "TYPE" => {
                    let known = ["counter", "gauge", "histogram", "info", "unknown"];
                    if !known.contains(&rest) {
                        return Err(format!("unknown type in {line:?}"));
                    }
                    if types.insert(name.to_owned(), rest.to_owned()).is_some() {
                        return Err(format!("{name} declared twice"));
                    }
                }
                "HELP" | "UNIT" => {}
                _ => return Err(format!("unknown comment {line:?}")),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|e| format!("{e} in {line:?}"))?;
        let family = types
            .iter()
            .find(|(family, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_count", "_sum", "_created"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                suffixes
                    .iter()
                    .any(|s| sample.name == format!("{family}{s}"))
            })
            .map(|(family, _)| family.clone());
        if family.is_none() {
            return Err(format!("sample of no declared family: {line:?}"));
        }
        samples.push(sample);
    }
    Ok(Scrape { samples })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..end];
    if !valid_name(name) {
        return Err("bad metric name".into());
    }
    let mut labels = HashMap::new();
    let mut rest = &line[end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next().ok_or("unclosed labels")?;
            match c {
                '}' if key.is_empty() => {
                    rest = &inner[i + 1..];
                    break;
                }
                '=' => {
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return Err("unquoted label value".into());
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next().ok_or("unterminated label value")?.1 {
                            '"' => break,
                            '\\' => match chars.next().ok_or("dangling escape")?.1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                _ => return Err("bad escape".into()),
                            },
                            c => value.push(c),
                        }
                    }
                    if !valid_name(&key) || labels.insert(key.clone(), value).is_some() {
                        return Err(format!("bad or repeated label {key:?}"));
                    }
                    key.clear();
                    match chars.next().ok_or("unclosed labels")? {
                        (_, ',') => {}
                        (i, '}') => {
                            rest = &inner[i + 1..];
                            break;
                        }
                        _ => return Err("expected , or }".into()),
                    }
                }
                c => key.push(c),
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Scrapes `silo`'s `/metrics` and parses it; panics with the text if it does not parse.
async fn scrape(silo: &ClusterSilo) -> Scrape {
    let answer = get(http(silo), "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        answer.content_type
    );
    parse(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body))
}

/// Polls until `check` holds on the scrapes of `silos` (each silo scraped once per
/// round); panics with the last scrape's figures at the deadline.
async fn until_scraped(
    what: &str,
    silos: &[&ClusterSilo],
    mut check: impl FnMut(&[Scrape]) -> Result<(), String>,
) {
    let deadline = Instant::now() + STABLE;
    loop {
        let mut scrapes = Vec::new();
        for silo in silos {
            scrapes.push(scrape(silo).await);
        }
        match check(&scrapes) {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn expect(what: &str, got: f64, ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what} is {got}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_silo_exports_exactly_the_workload_it_served() {
    let cluster = TestCluster::builder()
        .http()
        .slaves(2)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    for i in 0..30 {
        client
            .grain::<Counter>(format!("k{}", i % 10))
            .ask(Add(1))
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
    }
    let master = cluster.master();
    let slaves: Vec<&ClusterSilo> = cluster.slaves().map(|(_, s)| s).collect();
    let counter = [("grain_type", COUNTER)];

    until_scraped("the slaves' grain and call metrics", &slaves, |scrapes| {
        let sum = |name: &str, labels: &[(&str, &str)]| -> f64 {
            scrapes.iter().map(|s| s.sum(name, labels)).sum()
        };
        let adds = sum(
            "granary_messages_handled_total",
            &[("grain_type", COUNTER), ("message", "Add")],
        );
        expect("Counter/Add handled", adds, adds == 30.0)?;
        let n = sum("granary_activations", &counter);
        expect("Counter activations", n, n == 10.0)?;
        let n = sum("granary_activations_created_total", &counter);
        expect("Counter activations created", n, n == 10.0)?;
        let n = sum("granary_handler_duration_seconds_count", &counter);
        expect("timed turns", n, n == 30.0)?;
        let n = sum(
            "granary_handler_duration_seconds_bucket",
            &[("grain_type", COUNTER), ("le", "+Inf")],
        );
        expect("turns in the +Inf bucket", n, n == 30.0)?;
        let n = sum("granary_handler_failures_total", &[]);
        expect("failed turns", n, n == 0.0)?;
        let n = sum(
            "granary_storage_operation_duration_seconds_count",
            &[("provider", "master"), ("op", "write")],
        );
        expect("state writes through the master", n, n == 30.0)?;
        let n = sum(
            "granary_storage_operation_duration_seconds_count",
            &[("provider", "master"), ("op", "read")],
        );
        expect("state reads through the master", n, n == 10.0)?;
        let n = sum("granary_mailbox_queue_depth", &counter);
        expect("queued messages", n, n == 0.0)?;
        let n = sum("granary_fencing_events_total", &[]);
        expect("fencing events", n, n == 0.0)
    })
    .await;

    let all: Vec<&ClusterSilo> = std::iter::once(master).chain(slaves.clone()).collect();
    until_scraped("every silo's call metrics", &all, |scrapes| {
        let ok: f64 = scrapes
            .iter()
            .map(|s| s.sum("granary_call_outcomes_total", &[("outcome", "ok")]))
            .sum();
        expect("calls served ok", ok, ok == 30.0)?;
        let in_flight: f64 = scrapes
            .iter()
            .map(|s| s.sum("granary_calls_in_flight", &[]))
            .sum();
        expect("calls in flight", in_flight, in_flight == 0.0)
    })
    .await;

    until_scraped("the master's metrics", &[master], |scrapes| {
        let m = &scrapes[0];
        let n = m.sum(
            "granary_storage_operation_duration_seconds_count",
            &[("provider", "memory"), ("op", "write")],
        );
        expect("writes served by the master", n, n >= 30.0)?;
        let n = m.sum("granary_storage_errors_total", &[]);
        expect("storage errors", n, n == 0.0)?;
        let n = m.sum("granary_directory_entries", &[]);
        expect("directory entries", n, n == 10.0)?;
        let n = m.sum("granary_directory_placements_total", &[]);
        expect("placements", n, n == 10.0)?;
        let n = m.sum("granary_activations", &[]);
        expect("activations on the master", n, n == 0.0)?;
        let n = m.sum("granary_membership_members", &[("state", "active")]);
        expect("active members", n, n == 3.0)?;
        let n = m.sum("granary_membership_joins_total", &[]);
        expect("joins", n, n == 2.0)?;
        let n = m.sum("granary_membership_deaths_total", &[]);
        expect("deaths", n, n == 0.0)
    })
    .await;

    for silo in &all {
        let m = scrape(silo).await;
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "granary_uptime_seconds",
        ] {
            assert!(m.has(name), "{name} missing on {}", silo.id());
        }
        assert!(m.sum("process_resident_memory_bytes", &[]) > 0.0);
        assert!(m.sum("granary_uptime_seconds", &[]) > 0.0);
        // Labels are bounded: no grain key ever becomes a label value.
        let keys: HashSet<String> = (0..10).map(|i| format!("k{i}")).collect();
        for sample in &m.samples {
            assert!(
                sample.labels.values().all(|v| !keys.contains(v)),
                "a grain key in {sample:?}"
            );
        }
    }
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_slave_is_alive_but_not_ready_and_deaths_are_counted() {
    let mut cluster = TestCluster::builder()
        .http()
        .slaves(2)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    for silo in std::iter::once(cluster.master()).chain(cluster.slaves().map(|(_, s)| s)) {
        let ready = get(http(silo), "/ready").await;
        assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
        assert_eq!(get(http(silo), "/health").await.status, 200);
    }

    // A slave dies: the master counts the death and sees a dead member.
    cluster.kill_silo(1).await;
    until_scraped("the master's view of the death", &[cluster.master()], |s| {
        let n = s[0].sum("granary_membership_deaths_total", &[]);
        expect("deaths", n, n == 1.0)?;
        let n = s[0].sum("granary_membership_members", &[("state", "dead")]);
        expect("dead members", n, n == 1.0)?;
        let n = s[0].sum("granary_membership_members", &[("state", "active")]);
        expect("active members", n, n == 2.0)
    })
    .await;

    // The master dies: the remaining slave fences itself. It is alive, not ready.
    cluster.kill_master().await;
    let slave = cluster.slave(0).unwrap();
    let deadline = Instant::now() + STABLE;
    let ready = loop {
        let ready = get(http(slave), "/ready").await;
        // Before the lease runs out, the store (the dead master) fails the probe first.
        let fenced = ready.status == 503 && ready.body.contains("fenced");
        if fenced || Instant::now() >= deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("fenced"), "{}", ready.body);
    let health = get(http(slave), "/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    until_scraped("the slave's fencing", &[slave], |s| {
        let n = s[0].sum("granary_fencing_events_total", &[]);
        expect("fencing events", n, n == 1.0)
    })
    .await;
    cluster.shutdown().await;
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let good = "# HELP a_b x y\n# TYPE a_b counter\na_b_total{k=\"v \\\"q\\\"\"} 1\n# EOF\n";
    let scrape = parse(good).unwrap();
    assert_eq!(scrape.samples[0].labels["k"], "v \"q\"");
    for bad in [
        "# TYPE a counter\na_total 1\n",                // no EOF
        "a 1\n# EOF\n",                                 // undeclared family
        "# TYPE a gauge\na{k=v} 1\n# EOF\n",            // unquoted value
        "# TYPE a gauge\na one\n# EOF\n",               // not a number
        "# TYPE a gauge\n# TYPE a gauge\na 1\n# EOF\n", // declared twice
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
