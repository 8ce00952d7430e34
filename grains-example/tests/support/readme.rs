//! Running README commands on free ports: the silo lines of a README block name fixed
//! addresses (`127.0.0.1:7100`); a test maps each `--listen`/`--udp` address to a port
//! the kernel just handed out and rewrites every command with it.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::free_ports;

/// README address → the free address used instead.
pub type PortMap = HashMap<String, SocketAddr>;

/// The value after `name` in `args`, if any.
pub fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).map(String::as_str)
}

/// Fresh ports for every silo's `--listen` (TCP) and `--udp` (UDP) address; `silos` are
/// the silo command lines (their arguments) and how to name one in a failure.
pub fn fresh_ports<'a>(silos: impl IntoIterator<Item = (&'a [String], String)>) -> PortMap {
    let mut map = PortMap::new();
    for (args, shown) in silos {
        let ports = free_ports();
        for (name, fresh) in [("--listen", ports.tcp), ("--udp", ports.udp)] {
            let addr =
                flag(args, name).unwrap_or_else(|| panic!("a silo line without {name}: {shown}"));
            assert!(map.insert(addr.to_owned(), fresh).is_none(), "{addr} twice");
        }
    }
    map
}

/// `args` with every address replaced by its free port; an address no silo listens on
/// fails the test.
pub fn substitute(args: &[String], map: &PortMap) -> Vec<String> {
    args.iter()
        .map(|arg| match map.get(arg) {
            Some(fresh) => fresh.to_string(),
            None => {
                assert!(
                    arg.parse::<SocketAddr>().is_err(),
                    "{arg} is not the address of a silo of the README section"
                );
                arg.clone()
            }
        })
        .collect()
}
