//! The silo the remote benchmarks start as child processes: Granary's own `silo`
//! command line (`silo --help`), hosting the example grains and the bench's grains.

fn main() -> std::process::ExitCode {
    // Referencing both grain crates keeps their `register_grain!` items in the binary.
    std::hint::black_box(granary_example::grain_types());
    std::hint::black_box(granary_bench::grains::grain_types());
    granary_silo::cli::main()
}
