//! README walkthroughs run as written: a section's `sh` blocks — the `silo` command
//! lines, then `$C` client lines with the output each must print (`# OUTPUT`, or
//! `# PREFIX …`), then client lines run after whatever the section describes in
//! between — parsed from README.md, with every address replaced by a free port.
//! [`Walkthrough::parse`] refuses any line it does not understand, so the README cannot
//! drift from the tests.

use tokio::time::Instant;

use super::{flag, fresh_ports, run_client, substitute, PortMap, Ports, Procs, SiloSpec, START};

/// The binaries as the README calls them (from the workspace root, after `cargo build`).
pub const README_SILO: &str = "./target/debug/silo";
pub const README_CLIENT: &str = "./target/debug/client";

/// What a client command must print.
#[derive(Debug)]
pub enum Expected {
    /// `# OUTPUT`: exactly this line.
    Line(String),
    /// `# OUTPUT …`: a line starting with this.
    Prefix(String),
}

/// One `$C ARGS   # OUTPUT` line.
#[derive(Debug)]
pub struct Call {
    pub line: String,
    pub args: Vec<String>,
    pub expected: Expected,
}

/// The walkthrough's commands, in README order.
#[derive(Debug)]
pub struct Walkthrough {
    /// The flags of each `./target/debug/silo` line of the first block.
    pub silos: Vec<Vec<String>>,
    /// The flags of `$C` (`C="./target/debug/client FLAGS"`).
    pub client: Vec<String>,
    /// The client lines of the second block.
    pub calls: Vec<Call>,
    /// The client lines of the third block, run after whatever the section says happens
    /// in between (silos stopped and started again, a master killed…).
    pub after: Vec<Call>,
}

fn words(text: &str) -> Vec<String> {
    assert!(
        !text.contains(['"', '\'', '\\', '$', '`']),
        "the walkthrough test splits commands on spaces only: {text}"
    );
    text.split_whitespace().map(str::to_owned).collect()
}

impl Walkthrough {
    /// The walkthrough of the README section that starts at the heading line `section`
    /// and ends at the heading line `end`: exactly three `sh` blocks.
    pub fn parse(readme: &str, section: &str, end: &str) -> Self {
        let start = readme
            .find(&format!("\n{section}\n"))
            .unwrap_or_else(|| panic!("README has no `{section}`"));
        let len = readme[start..]
            .find(&format!("\n{end}\n"))
            .unwrap_or_else(|| panic!("`{section}` does not end at `{end}`"));
        let section = &readme[start..start + len];
        // The `sh` blocks; `#` lines in them are shell comments.
        let mut blocks: Vec<Vec<&str>> = Vec::new();
        let mut open = false;
        for line in section.lines() {
            match line.trim_end() {
                "```sh" => {
                    assert!(!open, "nested ``` in the section");
                    blocks.push(Vec::new());
                    open = true;
                }
                "```" if open => open = false,
                l if open && !l.is_empty() && !l.starts_with('#') => {
                    blocks.last_mut().unwrap().push(l)
                }
                _ => {}
            }
        }
        assert!(!open, "unclosed ```sh block in the section");
        let [silo_block, client_block, restart_block]: [Vec<&str>; 3] = blocks
            .try_into()
            .unwrap_or_else(|b: Vec<_>| panic!("expected 3 sh blocks, found {}", b.len()));

        let mut silos = Vec::new();
        for line in silo_block {
            if let Some(flags) = line.strip_prefix(&format!("{README_SILO} ")) {
                silos.push(words(flags));
            } else if line.starts_with("cargo build ") {
                // Cargo built the binaries for this test; check it is the same build.
                let args = words(line);
                assert!(
                    args.windows(2).any(|w| w == ["-p", "granary-example"])
                        && args.iter().any(|a| a == "--bins"),
                    "the walkthrough builds something else than the binaries tested: {line}"
                );
            } else {
                panic!("unknown line in the walkthrough's first block: {line}");
            }
        }
        let (first, calls) = client_block.split_first().expect("an empty second block");
        let client = first
            .strip_prefix(&format!("C=\"{README_CLIENT} "))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("the second block does not start with C=\"…\": {first}"));
        let walkthrough = Walkthrough {
            silos,
            client: words(client),
            calls: calls.iter().map(|l| Self::call(l)).collect(),
            after: restart_block.iter().map(|l| Self::call(l)).collect(),
        };
        assert!(
            !walkthrough.silos.is_empty()
                && !walkthrough.calls.is_empty()
                && !walkthrough.after.is_empty(),
            "a walkthrough block is empty: {walkthrough:?}"
        );
        walkthrough
    }

    /// `$C ARGS   # OUTPUT`.
    fn call(line: &str) -> Call {
        let (command, comment) = line
            .split_once('#')
            .unwrap_or_else(|| panic!("a client line without its `# output`: {line}"));
        let args = command
            .strip_prefix("$C ")
            .unwrap_or_else(|| panic!("a client line not starting with `$C `: {line}"));
        let output = comment.trim();
        assert!(!output.is_empty(), "an empty `# output`: {line}");
        let expected = match output.strip_suffix(" …") {
            Some(prefix) => Expected::Prefix(prefix.to_owned()),
            None => Expected::Line(output.to_owned()),
        };
        Call {
            line: line.to_owned(),
            args: words(args),
            expected,
        }
    }
}

/// Starts the walkthrough's silos on `map` (fresh ports if `None`), as the README does:
/// in order, the master first, each slave joined. Tries once more on fresh ports if a
/// silo exits early. Returns the silos' indices (in README order) and the ports used.
pub async fn start_silos(
    procs: &mut Procs,
    walkthrough: &Walkthrough,
    map: Option<PortMap>,
) -> (Vec<usize>, PortMap) {
    let mut map = map.unwrap_or_else(|| ports_of(walkthrough));
    for attempt in 1..=2 {
        let first = procs.count();
        match try_start_silos(procs, walkthrough, &map).await {
            Ok(silos) => return (silos, map),
            Err(e) if attempt == 1 => {
                eprintln!("walkthrough start failed, retrying on other ports: {e}");
                for i in first..procs.count() {
                    procs.kill9(i);
                }
                map = ports_of(walkthrough);
            }
            Err(e) => panic!("walkthrough start failed twice: {e}"),
        }
    }
    unreachable!()
}

async fn try_start_silos(
    procs: &mut Procs,
    walkthrough: &Walkthrough,
    map: &PortMap,
) -> Result<Vec<usize>, String> {
    let deadline = Instant::now() + START;
    let mut silos = Vec::new();
    for (k, args) in walkthrough.silos.iter().enumerate() {
        let args = substitute(args, map);
        let ports = Ports {
            tcp: flag(&args, "--listen").unwrap().parse().unwrap(),
            udp: flag(&args, "--udp").unwrap().parse().unwrap(),
        };
        let role = flag(&args, "--role").unwrap_or("master").to_owned();
        let i = procs.spawn(SiloSpec::new(&format!("{role}{k}"), &args).ports(ports));
        silos.push(i);
    }
    // The masters first, as a user would wait for them, then the slaves.
    for (k, &i) in silos.iter().enumerate() {
        if flag(&walkthrough.silos[k], "--role") != Some("slave") {
            procs.wait_listening(i, deadline).await?.close().await;
        }
    }
    for (k, &i) in silos.iter().enumerate() {
        if flag(&walkthrough.silos[k], "--role") == Some("slave") {
            procs.wait_joined(i, deadline).await?;
        }
    }
    Ok(silos)
}

/// Runs each `$C` line and checks its output.
pub async fn run_calls(calls: &[Call], client: &[String]) {
    for call in calls {
        let mut args = client.to_vec();
        args.extend(call.args.iter().cloned());
        let output = run_client(&args).await;
        assert!(
            output.status.success(),
            "`{}` failed ({}): {}",
            call.line,
            output.status,
            output.stderr
        );
        let printed = output.stdout.trim_end();
        let ok = match &call.expected {
            Expected::Line(line) => printed == line,
            Expected::Prefix(prefix) => !printed.contains('\n') && printed.starts_with(prefix),
        };
        assert!(ok, "`{}` printed {printed:?}", call.line);
    }
}

/// Fresh ports for the walkthrough's silos.
pub fn ports_of(walkthrough: &Walkthrough) -> PortMap {
    fresh_ports(
        walkthrough
            .silos
            .iter()
            .map(|args| (args.as_slice(), args.join(" "))),
    )
}
