//! The `ringway` binary: mimalloc as the allocator, then the CLI.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(ringway::cli::main());
}
