//! CPU time and resident memory of this process, read from `/proc` (Linux). Elsewhere
//! both read as zero.

/// `(cpu_ms, rss_bytes)`: CPU time used so far (user + system) and resident memory.
pub(crate) fn usage() -> (u64, u64) {
    (cpu_ms().unwrap_or(0), rss_bytes().unwrap_or(0))
}

/// Clock ticks per second of `/proc/self/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on
/// every Linux we run on).
const TICKS_PER_SECOND: u64 = 100;
/// Memory page size assumed for `/proc/self/statm`.
const PAGE: u64 = 4096;

fn cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000 / TICKS_PER_SECOND)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_uses_memory_and_some_cpu() {
        // Burn a little CPU so the tick counter moves past zero on a fresh process.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let (_cpu, rss) = super::usage();
        assert!(rss > 1024 * 1024, "rss {rss}");
    }
}
