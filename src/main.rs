//! The `lenet5` command. All the work is in the library; this file maps its errors to messages and exit codes.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`lenet5 ... | head`) is not an error worth reporting.
            if let Some(lenet5::Error::Io { source, .. }) = err.downcast_ref::<lenet5::Error>() {
                if source.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("error: {err}");
            match err.downcast_ref::<lenet5::Error>() {
                Some(lenet5::Error::Interrupted { .. }) => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
