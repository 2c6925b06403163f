//! `orlojworker`: a standalone Orloj task worker. See `orlojworker --help`.

use orloj_bins::{runtime_args, workerd};

// The dispatch path allocates heavily; mimalloc is markedly faster there than glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let parsed = workerd::OrlojworkerArgs::parse_and_check(std::env::args_os());
    runtime_args::run_main("orlojworker", parsed, |a| &a.log, workerd::run).await
}
