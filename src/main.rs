//! The `ringway` binary: mimalloc as the allocator, then the CLI.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (the 5th option of `mi_option_e`).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Eagerly committed arenas make RSS jump by whole huge pages: with 10,000 idle
/// connections (about 650 bytes of heap each) RSS grew by 2 KiB each. Committing on
/// demand keeps RSS close to what is used, at the cost of a few more page faults.
///
/// It must be set before mimalloc reserves its first arena, which happens at the first
/// allocation, before `main`: so it runs as an ELF constructor. It overrides
/// `MIMALLOC_ARENA_EAGER_COMMIT` from the environment.
extern "C" fn configure_allocator() {
    // SAFETY: setting an option is allowed at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

fn main() {
    std::process::exit(ringway::cli::main());
}
