//! `orlojd`: the Orloj server. See `orlojd --help`.

use orloj_bins::{daemon, runtime_args};

// The dispatch path allocates heavily; mimalloc is markedly faster there than glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let parsed = daemon::OrlojdArgs::parse_and_check(std::env::args_os());
    runtime_args::run_main("orlojd", parsed, |a| &a.log, daemon::run).await
}
