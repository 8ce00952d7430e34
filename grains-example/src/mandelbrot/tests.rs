use std::sync::atomic::AtomicBool;

use super::*;

#[test]
fn bands_cover_every_row_once() {
    for (height, n) in [(1, 1), (10, 3), (1200, 150), (7, 100)] {
        let ranges = bands(height, n);
        assert_eq!(ranges.first().unwrap().0, 0);
        assert_eq!(ranges.last().unwrap().1, height);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
            assert!(pair[0].0 < pair[0].1);
        }
    }
}

#[test]
fn bands_render_the_same_pixels_as_the_whole_image() {
    let view = View::new(64, 48, 200);
    let stop = AtomicBool::new(false);
    let whole = render_rows(&view, 0, 48, &stop).unwrap();
    assert_eq!(whole.len(), 64 * 48);
    let joined: Vec<u8> = bands(48, 5)
        .into_iter()
        .flat_map(|(y0, y1)| render_rows(&view, y0, y1, &stop).unwrap())
        .collect();
    assert_eq!(joined, whole);
    // Some pixels are inside the set (0), some escape.
    assert!(whole.contains(&0));
    assert!(whole.iter().any(|&p| p > 100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(render_rows(&view, 0, 48, &stop), None);
}

#[test]
fn png_has_the_right_structure() {
    let image = png(3, 2, &[0, 1, 2, 3, 4, 5]);
    assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&image[12..16], b"IHDR");
    assert_eq!(&image[16..20], &3u32.to_be_bytes());
    assert_eq!(&image[20..24], &2u32.to_be_bytes());
    assert_eq!(&image[image.len() - 8..image.len() - 4], b"IEND");
    // The CRC of IEND is fixed.
    assert_eq!(&image[image.len() - 4..], &[0xae, 0x42, 0x60, 0x82]);
    // A large image spans several stored blocks.
    let big = png(300, 300, &vec![7; 90_000]);
    assert!(big.len() > 90_000);
}
