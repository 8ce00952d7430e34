//! Parsing and applying `--scaling`.

use super::*;

#[test]
fn a_flag_names_a_type_and_its_settings() {
    let flag = parse_scaling_flag("example.digest/v1:max-copies=3, cool-down=10s").unwrap();
    assert_eq!(flag.type_name, "example.digest/v1");
    let s = apply(Scaling::DEFAULT, &flag).unwrap();
    assert_eq!(s.max_copies, 3);
    assert_eq!(s.cool_down, Duration::from_secs(10));
    assert_eq!(s.hot_queue, Scaling::DEFAULT.hot_queue);
}

#[test]
fn bad_flags_say_what_is_wrong() {
    assert!(parse_scaling_flag("no-colon")
        .unwrap_err()
        .contains("TYPE:KEY=VALUE"));
    assert!(parse_scaling_flag("t:max-copies")
        .unwrap_err()
        .contains("KEY=VALUE"));
    let flag = parse_scaling_flag("t:speed=3").unwrap();
    assert!(apply(Scaling::DEFAULT, &flag)
        .unwrap_err()
        .contains("unknown key `speed`"));
    let flag = parse_scaling_flag("t:window=soon").unwrap();
    assert!(apply(Scaling::DEFAULT, &flag)
        .unwrap_err()
        .contains("duration"));
}
