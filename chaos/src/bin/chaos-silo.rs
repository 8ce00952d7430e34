//! The silo the chaos harness runs: the example grains and the chaos register, with the
//! network fault filter compiled in (rules from the file named by `GRANARY_FAULTS`).
//! Flags as for `silo --help`.

fn main() -> std::process::ExitCode {
    std::hint::black_box(granary_chaos::grains::grain_types());
    granary_silo::cli::main()
}
