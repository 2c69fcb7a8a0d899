//! `gantry`: one binary for every Gantry service. See `gantry --help`.

use clap::Parser;

/// mimalloc rather than the system allocator: the services allocate and free many small buffers per request, and
/// glibc's malloc took about a fifth of their CPU in the profile (see the README's Scaling section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = gantry::cli::Cli::parse();
    match gantry::cli::main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
