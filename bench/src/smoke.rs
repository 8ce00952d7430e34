//! `--smoke`: every benchmark binary runs once in CI with tiny counts (a few hundred
//! calls, seconds), so a change to an internal API that breaks a benchmark, or a
//! benchmark that no longer runs, fails CI. Its figures mean nothing.

/// True when the command line holds `--smoke`; the flag is removed from the arguments
/// the benchmark parses next (see [`args`]).
pub fn enabled() -> bool {
    std::env::args().skip(1).any(|a| a == "--smoke")
}

/// The command-line arguments after the program name, without `--smoke`.
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--smoke")
        .collect()
}
