//! The `noroshi` binary.

/// mimalloc: the delivery path allocates many short-lived buffers (a message per
/// recipient); glibc's allocator spent about a sixth of the daemon's CPU on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    noroshi::cli::main()
}
