//! The `lenet5` command. All the work is in the library; this file maps its errors to messages and exit codes.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // A closed pipe (`lenet5 eval ... | head`) ends the program quietly, as it does for other Unix tools,
    // instead of making `println!` panic.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", cli::message(&err));
            match cli::engine_error(&err) {
                Some(lenet5_core::Error::Interrupted { .. }) => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
