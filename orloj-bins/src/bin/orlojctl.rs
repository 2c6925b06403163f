//! `orlojctl`: the command-line client of the Orloj REST API. See [`orloj_bins::ctl`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(orloj_bins::ctl::main_with_args(std::env::args_os()))
}
