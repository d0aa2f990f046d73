//! The `annfs` binary.

/// mimalloc reuses large buffers instead of returning them to the kernel after every request,
/// which with glibc cost a page fault per 4 KiB of every 1 MiB read.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    annfs::cli::main()
}
