//! Sliding windows on the paused tokio clock.

use std::time::Duration;

use tokio::time::Instant;

use super::Window;

#[tokio::test(start_paused = true)]
async fn samples_older_than_the_span_drop_out() {
    let mut window = Window::new(Duration::from_secs(3));
    for i in 0..10u32 {
        window.push(Instant::now(), i);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    // Pushed at t = 0..9; the last push was at t = 9: 6..=9 remain.
    assert_eq!(
        window.samples().copied().collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_is_full_once_its_span_has_passed_since_the_first_sample() {
    let mut window = Window::new(Duration::from_secs(2));
    assert!(!window.is_full(Instant::now()));
    window.push(Instant::now(), 1u8);
    tokio::time::advance(Duration::from_millis(1_999)).await;
    assert!(!window.is_full(Instant::now()));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(window.is_full(Instant::now()));
    window.reset();
    assert!(!window.is_full(Instant::now()));
    assert_eq!(window.len(), 0);
}
