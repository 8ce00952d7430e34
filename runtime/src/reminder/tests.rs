use super::*;

#[test]
fn a_grain_always_hashes_to_the_same_shard() {
    // Part of the stored layout: these values must never change.
    let id = GrainId::new("example.counter/v1", "alice");
    assert_eq!(shard_of(&id), shard_of(&id.clone()));
    let spread: std::collections::HashSet<u32> = (0..200)
        .map(|i| shard_of(&GrainId::new("example.counter/v1", format!("k{i}"))))
        .collect();
    assert_eq!(
        spread.len(),
        REMINDER_SHARDS as usize,
        "200 keys cover every shard"
    );
    assert!(spread.iter().all(|s| *s < REMINDER_SHARDS));
    assert_eq!(shard_key(3), "03");
    assert_eq!(shard_id(15), GrainId::new(SHARD_TYPE, "15"));
}

#[test]
fn the_shard_function_is_pinned() {
    // FNV-1a 64 of "type\0key", modulo 16: stored tables depend on these values.
    assert_eq!(shard_of(&GrainId::new("t", "k")), 6);
    assert_eq!(shard_of(&GrainId::new("example.counter/v1", "alice")), 1);
    assert_eq!(shard_of(&GrainId::new("example.pulse/v1", "p1")), 9);
}

#[test]
fn call_errors_map_to_reminder_errors() {
    assert_eq!(
        ReminderError::from(CallError::Storage("disk full".into())),
        ReminderError::Storage("disk full".into())
    );
    assert_eq!(
        ReminderError::from(CallError::Timeout),
        ReminderError::Unavailable(CallError::Timeout)
    );
}
