//! `orloj-loadtest`: load test and quality gates for orlojd. See [`orloj_bins::loadtest`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(orloj_bins::loadtest::main_with_args(std::env::args_os()))
}
