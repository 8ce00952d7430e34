//! Names the harness creates, and which ones a cleanup may remove.

use super::*;

#[test]
fn only_our_names_with_a_pid_belong_to_a_harness() {
    assert_eq!(owner("gch1234-s0"), Some(1234));
    assert_eq!(owner("gch1234h"), Some(1234));
    assert_eq!(owner("gch1234s2b"), Some(1234));
    assert_eq!(owner("gch-br"), None);
    assert_eq!(owner("eth0"), None);
    assert_eq!(owner("granary"), None);
}

#[test]
fn a_live_pid_is_never_cleaned_up() {
    assert!(pid_alive(std::process::id()));
    assert!(!pid_alive(u32::MAX));
}

#[test]
fn loopback_slots_get_distinct_ports_and_filter_by_port() {
    let net = Net::loopback(4).unwrap();
    for port in [|n: &Net, s| n.tcp(s).port(), |n: &Net, s| n.udp(s).port()] {
        let mut ports: Vec<u16> = (0..4).map(|s| port(&net, s)).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4);
    }
    assert_eq!(net.udp_peer(1), net.udp(1).to_string());
    assert!(net.ns_path(0).is_none());
    assert!(net.set_isolated(0, true).is_err());
}
