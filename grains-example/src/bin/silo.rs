//! A silo hosting the example grains. `silo --help` lists the flags.

fn main() -> std::process::ExitCode {
    // Calling into the grain crate keeps its `register_grain!` items in the binary.
    eprintln!(
        "granary silo: example grain types {:?}",
        granary_example::grain_types()
    );
    granary_silo::cli::main()
}
