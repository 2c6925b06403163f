//! `orlojworker`: a standalone Orloj task worker. See `orlojworker --help`.

use orloj_bins::{daemon, telemetry, workerd};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match workerd::OrlojworkerArgs::parse_and_check(std::env::args_os()) {
        Ok(args) => args,
        Err(err) => {
            if let Some(clap_err) = err.downcast_ref::<clap::Error>()
                && !clap_err.use_stderr()
            {
                // --help / --version
                let _ = clap_err.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("orlojworker: {}", daemon::one_line(&err));
            return ExitCode::from(2);
        }
    };
    telemetry::init(args.effective_log_level(), args.log.log_format);
    match workerd::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("orlojworker: {}", daemon::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
