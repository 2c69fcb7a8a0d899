//! `gantry`: one binary for every Gantry service. See `gantry --help`.

use clap::Parser;

/// mimalloc rather than the system allocator: the services allocate and free many small buffers per request, and
/// glibc's malloc took about a fifth of their CPU in the profile (see the README's Scaling section). Its v2 line
/// (the workspace's `features = ["v2"]`), the one its authors call stable: with v3, the crate's default, the Rust
/// processes spent 4-5 % more CPU per task in `just bench` (three interleaved pairs, 2,000 x 10).
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
