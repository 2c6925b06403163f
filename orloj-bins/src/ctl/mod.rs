//! `orlojctl`, the command-line client of the Orloj REST API (spec §4).
//!
//! [`main_with_args`] is the whole program: it parses the command line ([`cli::Cli`]),
//! resolves the server and token ([`config::resolve`]) and runs one command. Data goes to
//! stdout, diagnostics to stderr. Exit codes: 0 ok, 1 error or timeout, 2 usage error
//! (`diff` follows kubectl: 1 means differences were found).

/// `print!` that ends the process quietly when stdout is a closed pipe (`orlojctl ... | head`)
/// instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::ctl::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` counterpart of [`out!`].
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {
        out!("{}\n", format_args!($($arg)*))
    };
}

pub mod auth;
pub mod cli;
pub mod client;
mod commands;
pub mod config;
pub mod init;
pub mod manifests;
pub mod output;
mod tasks;

use std::ffi::OsString;

pub use commands::wait_phases;

/// A mistake in how the command was called; exits with status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Writes to stdout; a closed pipe ends the process with status 0, another write error with 1.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Runs orlojctl with these arguments (the first is the program name) and returns the exit
/// status.
pub fn main_with_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The reference CLI also accepts the single-dash `-version`.
    let args: Vec<OsString> = args
        .into_iter()
        .map(|a| {
            let a: OsString = a.into();
            if a == "-version" {
                "--version".into()
            } else {
                a
            }
        })
        .collect();
    let cli = match <cli::Cli as clap::Parser>::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<UsageError>() { 2 } else { 1 }
        }
    }
}
