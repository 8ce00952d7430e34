//! The pure part of the Mandelbrot job: the view, rendering rows, splitting an image
//! into bands, and writing a grayscale PNG. No grains here, so a single-threaded render
//! (the tests' reference) runs exactly the same code as the workers.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// What to render: the image size and the part of the complex plane it shows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// The point at the image's centre (real part).
    pub center_re: f64,
    /// The point at the image's centre (imaginary part).
    pub center_im: f64,
    /// Plane units per pixel.
    pub scale: f64,
    /// Iterations before a point counts as inside the set.
    pub max_iter: u32,
}

impl View {
    /// The whole set, centred, `width` × `height` pixels, 3.2 units wide.
    pub fn new(width: u32, height: u32, max_iter: u32) -> Self {
        let width = width.max(1);
        let height = height.max(1);
        Self {
            width,
            height,
            center_re: -0.6,
            center_im: 0.0,
            scale: (3.2 / f64::from(width)).max(2.4 / f64::from(height)),
            max_iter: max_iter.max(1),
        }
    }

    /// Bytes of one band of `rows` rows (one byte per pixel).
    pub fn band_bytes(&self, rows: u32) -> usize {
        self.width as usize * rows as usize
    }
}

/// Renders rows `y0..y1` (one gray byte per pixel, row after row), or `None` if `stop`
/// was set meanwhile (checked after every row).
pub fn render_rows(view: &View, y0: u32, y1: u32, stop: &AtomicBool) -> Option<Vec<u8>> {
    let y1 = y1.min(view.height);
    let mut out = Vec::with_capacity(view.band_bytes(y1.saturating_sub(y0)));
    let half_w = f64::from(view.width) / 2.0;
    let half_h = f64::from(view.height) / 2.0;
    let max = f64::from(view.max_iter).sqrt();
    for y in y0..y1 {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let im = view.center_im + (f64::from(y) + 0.5 - half_h) * view.scale;
        for x in 0..view.width {
            let re = view.center_re + (f64::from(x) + 0.5 - half_w) * view.scale;
            let n = escape_time(re, im, view.max_iter);
            out.push(if n >= view.max_iter {
                0
            } else {
                (f64::from(n).sqrt() / max * 255.0) as u8
            });
        }
    }
    Some(out)
}

/// Iterations until `z² + c` leaves the radius-2 disc (`max_iter` if it never does).
fn escape_time(re: f64, im: f64, max_iter: u32) -> u32 {
    let (mut x, mut y) = (0.0f64, 0.0f64);
    let mut n = 0;
    while n < max_iter {
        let (x2, y2) = (x * x, y * y);
        if x2 + y2 > 4.0 {
            break;
        }
        y = 2.0 * x * y + im;
        x = x2 - y2 + re;
        n += 1;
    }
    n
}

/// Splits `height` rows into `bands` bands of near-equal size: `(y0, y1)` per band id.
pub fn bands(height: u32, bands: u32) -> Vec<(u32, u32)> {
    let bands = bands.clamp(1, height.max(1));
    (0..bands)
        .map(|b| {
            let y0 = (u64::from(height) * u64::from(b) / u64::from(bands)) as u32;
            let y1 = (u64::from(height) * u64::from(b + 1) / u64::from(bands)) as u32;
            (y0, y1)
        })
        .collect()
}

/// Encodes a grayscale image (`width` × `height` bytes) as a PNG: 8-bit gray, rows
/// unfiltered, stored (uncompressed) deflate blocks, so no compression library is
/// needed.
pub fn png(width: u32, height: u32, gray: &[u8]) -> Vec<u8> {
    assert_eq!(gray.len(), width as usize * height as usize, "pixel count");
    let mut raw = Vec::with_capacity(gray.len() + height as usize);
    for row in gray.chunks(width.max(1) as usize) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut zlib = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        zlib.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        zlib.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    (b << 16) | a
}
