use granary_runtime::registry::registry;

#[test]
fn every_example_grain_is_registered_with_its_messages() {
    let registered = registry().grain_types();
    assert!(!registered.is_empty());
    for name in super::grain_types() {
        let entry = registry()
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not registered"));
        assert!(!entry.messages.is_empty(), "{name} lists no message");
    }
    let account = registry().get("example.account/v1").unwrap();
    assert!(account
        .messages
        .iter()
        .any(|m| m.message == "increment_followers"));
    assert!(
        registry().problems().is_empty(),
        "{:?}",
        registry().problems()
    );
}
