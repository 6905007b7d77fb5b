//! The `loadgen-merge` binary: one result out of the results of several loadgen processes that
//! measured one run together (see `loadgen::merge`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Merges loadgen results (JSON files) of processes that measured one run together: the first
/// is the primary (the one that published and sampled the servers); every file's subscribers,
/// deliveries and latency histograms are added to it. Prints the merged JSON, or writes --out.
#[derive(Debug, Parser)]
#[command(name = "loadgen-merge", version, about, long_about = None)]
struct Cli {
    /// Write the merged JSON here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The primary's results, then the observers'.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let reports = cli
        .reports
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<loadgen::Report>>>()?;
    let merged = loadgen::merge::merge(&reports)?;
    let json = serde_json::to_string_pretty(&merged)? + "\n";
    match cli.out {
        Some(path) => {
            std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(json.as_bytes())?,
    }
    Ok(())
}
