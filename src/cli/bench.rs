//! `lenet5 bench`: where the time goes.

use super::CliResult;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub fn run(_a: BenchArgs) -> CliResult {
    Ok(())
}
