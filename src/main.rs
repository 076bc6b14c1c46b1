//! The `noroshi` binary.

fn main() -> std::process::ExitCode {
    noroshi::cli::main()
}
