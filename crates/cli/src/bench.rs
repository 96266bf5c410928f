//! `stockade bench`: placeholder until the benchmark lands.

use clap::Args;
use stockade_core::Result;

#[derive(Debug, Args)]
pub struct BenchArgs {}

pub async fn run(_a: BenchArgs) -> Result<i32> {
    Ok(0)
}
