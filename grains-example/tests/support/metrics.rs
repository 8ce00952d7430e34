//! Prometheus scrapes of in-process silos (`TestCluster` with `.http()`): a plain
//! HTTP/1.0 GET, and a parser of the OpenMetrics text a Prometheus server reads from us
//! (strict: a sample of an undeclared family or a malformed line is an error).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use granary_silo::ClusterSilo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.0 answer: status, `Content-Type`, body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` over a fresh connection (HTTP/1.0: no chunking, the server closes).
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
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

pub fn http(silo: &ClusterSilo) -> SocketAddr {
    silo.http_addr().expect("the cluster serves HTTP")
}

/// One sample line: `name{label="value",…} value`.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of `name`'s samples that carry every label of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
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

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// Parses OpenMetrics text (the subset a Prometheus server reads from us): `# HELP`,
/// `# TYPE`, `# UNIT`, samples of declared families only, `# EOF` last.
pub fn parse(text: &str) -> Result<Scrape, String> {
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
pub async fn scrape(silo: &ClusterSilo) -> Scrape {
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
