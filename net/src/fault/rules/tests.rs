//! The rules parser and matcher.

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn parses_every_action_and_skips_comments() {
    let rules = parse(
        "# partition\nudp out 10.77.0.2 drop\n\nudp in 127.0.0.1:7101 drop  # one port\n\
         udp out * loss 0.25\nudp out * dup 0.1\nudp out * delay 50ms..300ms\ntcp out 10.77.0.3 delay 2s\n",
    )
    .unwrap();
    assert_eq!(rules.len(), 6);
    assert_eq!(rules[0].peer, Peer::Ip("10.77.0.2".parse().unwrap()));
    assert_eq!(rules[0].action, Action::Loss(1.0));
    assert_eq!(rules[1].dir, Dir::In);
    assert_eq!(rules[1].peer, Peer::Addr(addr("127.0.0.1:7101")));
    assert_eq!(rules[2].action, Action::Loss(0.25));
    assert_eq!(rules[3].action, Action::Dup(0.1));
    assert_eq!(
        rules[4].action,
        Action::Delay(Duration::from_millis(50), Duration::from_millis(300))
    );
    assert_eq!(rules[5].proto, Proto::Tcp);
    assert_eq!(
        rules[5].action,
        Action::Delay(Duration::from_secs(2), Duration::from_secs(2))
    );
}

#[test]
fn refuses_bad_lines_and_names_them() {
    for (text, why) in [
        ("udp out * drop 1", "takes no argument"),
        ("tcp in * drop", "not supported"),
        ("tcp out * dup 0.5", "UDP only"),
        ("udp out nowhere drop", "bad peer"),
        ("udp sideways * drop", "unknown direction"),
        ("udp out * loss 1.5", "outside"),
        ("udp out * delay 5", "no unit"),
        ("udp out * delay 9ms..2ms", "ends before"),
        ("udp out *", "expected"),
    ] {
        let err = parse(&format!("udp out * drop\n{text}")).unwrap_err();
        assert!(err.starts_with("line 2:"), "{text}: {err}");
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn matching_respects_protocol_direction_and_peer() {
    let rules = parse("udp out 10.0.0.2 drop\ntcp out 10.0.0.3:80 drop\nudp in * dup 1").unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let v = |proto, dir, peer: &str, rng: &mut fastrand::Rng| {
        judge(&rules, proto, dir, addr(peer), rng)
    };
    assert!(v(Proto::Udp, Dir::Out, "10.0.0.2:1", &mut rng).drop);
    assert!(!v(Proto::Udp, Dir::Out, "10.0.0.4:1", &mut rng).drop);
    assert!(!v(Proto::Udp, Dir::In, "10.0.0.2:1", &mut rng).drop);
    assert!(v(Proto::Udp, Dir::In, "10.0.0.2:1", &mut rng).dup);
    assert!(v(Proto::Tcp, Dir::Out, "10.0.0.3:80", &mut rng).drop);
    assert!(!v(Proto::Tcp, Dir::Out, "10.0.0.3:81", &mut rng).drop);
}

#[test]
fn the_first_rule_of_a_kind_wins_and_probabilities_hold() {
    let rules = parse("udp out * loss 0.3\nudp out * drop\nudp out * delay 10ms..20ms").unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut dropped = 0;
    for _ in 0..10_000 {
        let v = judge(&rules, Proto::Udp, Dir::Out, addr("1.2.3.4:5"), &mut rng);
        dropped += usize::from(v.drop);
        let delay = v.delay.unwrap();
        assert!(delay >= Duration::from_millis(10) && delay <= Duration::from_millis(20));
    }
    assert!(
        (2_700..3_300).contains(&dropped),
        "{dropped} of 10000 dropped"
    );
}
