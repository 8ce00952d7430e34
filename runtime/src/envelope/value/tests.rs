use std::sync::Arc;

use super::*;

#[test]
fn small_values_stay_in_place_and_come_back() {
    let v = LocalValue::new(42u64);
    assert!(v.is_inline());
    assert_eq!(v.as_any().downcast_ref::<u64>(), Some(&42));
    assert_eq!(v.downcast::<u64>().unwrap(), 42);

    let s = LocalValue::new(String::from("hello"));
    assert!(s.is_inline(), "a String is three words");
    assert_eq!(s.downcast::<String>().unwrap(), "hello");

    let unit = LocalValue::new(());
    assert!(unit.is_inline());
    unit.downcast::<()>().unwrap();
}

#[test]
fn large_and_over_aligned_values_are_boxed() {
    let big = LocalValue::new([7u8; 100]);
    assert!(!big.is_inline());
    assert_eq!(big.as_any().downcast_ref::<[u8; 100]>(), Some(&[7u8; 100]));
    assert_eq!(big.downcast::<[u8; 100]>().unwrap(), [7u8; 100]);

    let wide = LocalValue::new(u128::MAX);
    assert_eq!(wide.is_inline(), std::mem::align_of::<u128>() <= 8);
    assert_eq!(wide.downcast::<u128>().unwrap(), u128::MAX);
}

#[test]
fn a_wrong_downcast_hands_the_value_back() {
    let v = LocalValue::new(String::from("kept"));
    let v = v.downcast::<u64>().unwrap_err();
    assert_eq!(v.held_type_id(), TypeId::of::<String>());
    assert!(v.as_any().downcast_ref::<u64>().is_none());
    assert_eq!(v.downcast::<String>().unwrap(), "kept");
}

#[test]
fn held_values_are_dropped_exactly_once() {
    let small = Arc::new(1);
    let big = Arc::new([0u64; 8]);
    {
        let _a = LocalValue::new(small.clone());
        let _b = LocalValue::new((big.clone(), [0u64; 8]));
        assert_eq!(Arc::strong_count(&small), 2);
        assert_eq!(Arc::strong_count(&big), 2);
    }
    assert_eq!(Arc::strong_count(&small), 1);
    assert_eq!(Arc::strong_count(&big), 1);
    let taken = LocalValue::new(small.clone())
        .downcast::<Arc<i32>>()
        .unwrap();
    assert_eq!(Arc::strong_count(&small), 2);
    drop(taken);
    assert_eq!(Arc::strong_count(&small), 1);
    let taken = LocalValue::new((big.clone(), [1u64; 8]))
        .downcast::<(Arc<[u64; 8]>, [u64; 8])>()
        .unwrap();
    assert_eq!(Arc::strong_count(&big), 2);
    drop(taken);
    assert_eq!(Arc::strong_count(&big), 1);
}
