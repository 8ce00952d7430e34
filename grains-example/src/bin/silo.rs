//! A silo hosting the example grains. `silo --help` lists the flags.

fn main() -> std::process::ExitCode {
    // Referencing the grain crate keeps its `register_grain!` items in the binary (the
    // silo logs every registered type at start and refuses to start with none).
    std::hint::black_box(granary_example::grain_types());
    granary_silo::cli::main()
}
