//! `sluice`: run Wasm data handlers over files and streams through the host's
//! native dataframe engine.

mod accesslogs;
mod build;
mod client;
mod datagen;
mod dev;
mod remote;
mod render;
mod run;
mod scaffold;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice", version, about = "WebAssembly-sandboxed data functions, JSON to Parquet at host speed")]
struct Cli {
    /// Log verbosity: -v for info, -vv for debug (or set RUST_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate sample data, build the example handler, run it, print the ten busiest companies.
    Demo(run::DemoArgs),
    /// Run a function over files through the file trigger.
    Run(run::RunArgs),
    /// Run the Kafka, HTTP and cron triggers of functions until SIGTERM, then drain.
    Serve(serve::ServeArgs),
    /// Write the seed benchmark dataset (JSON lines of per-company network metrics).
    Gen(GenArgs),
    /// Scaffold a handler crate (SDK dependency, handler, manifest, sample input) that builds and runs as is.
    New(scaffold::NewArgs),
    /// Serve a function's triggers, rebuild on every save and swap the new version in place.
    Dev(dev::DevArgs),
    /// Build a function if stale and upload its manifest and component as a new version.
    Deploy(remote::DeployArgs),
    /// List the deployed functions.
    List(remote::ListArgs),
    /// Show a function: status, versions, instances, last error.
    Get(remote::NameArgs),
    /// Delete a function and its versions.
    Delete(remote::NameArgs),
    /// Send one event to a function and print its reply.
    Invoke(remote::InvokeArgs),
    /// Print a function's recent log lines, or follow them with -f.
    Logs(remote::LogsArgs),
    /// Make an earlier version active again.
    Rollback(remote::RollbackArgs),
    /// Create, list or delete tenants (admin token).
    #[command(subcommand)]
    Tenant(remote::TenantCommand),
}

#[derive(clap::Args)]
struct GenArgs {
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Hours of data, one row per company every 5 s (62 h ≈ 1.13 GB).
    #[arg(long, default_value_t = 62.0, conflicts_with = "size_mb")]
    hours: f64,
    /// Pick the hours to reach about this many megabytes instead.
    #[arg(long)]
    size_mb: Option<u64>,
    #[arg(long, default_value_t = 100)]
    companies: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `seed` (company metrics) or `access-logs` (web access logs, `--size-mb`, default 500).
    #[arg(long, default_value = "seed", value_parser = ["seed", "access-logs"])]
    dataset: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Demo(args) => run::demo(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Gen(args) => generate(args),
        Command::New(args) => scaffold::new(args),
        Command::Dev(args) => dev::dev(args),
        Command::Deploy(args) => remote::deploy(args),
        Command::List(args) => remote::list(args),
        Command::Get(args) => remote::get(args),
        Command::Delete(args) => remote::delete(args),
        Command::Invoke(args) => remote::invoke(args),
        Command::Logs(args) => remote::logs(args),
        Command::Rollback(args) => remote::rollback(args),
        Command::Tenant(command) => remote::tenant(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn generate(args: GenArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.dataset == "access-logs" {
        if let Some(parent) = args.out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let bytes = args.size_mb.unwrap_or(500) * 1_000_000;
        let made = accesslogs::write_access_logs(&args.out, bytes, args.seed)?;
        eprintln!("wrote {} rows, {} to {}", made.rows, render::bytes(made.bytes), args.out.display());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let hours = match args.size_mb {
        Some(mb) => datagen::SeedSpec::with_target_bytes(mb * 1_000_000).hours,
        None => args.hours,
    };
    let spec = datagen::SeedSpec { companies: args.companies, hours, seed: args.seed, ..Default::default() };
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let made = datagen::write_seed_dataset(&args.out, &spec)?;
    eprintln!("wrote {} rows, {} to {}", made.rows, render::bytes(made.bytes), args.out.display());
    Ok(std::process::ExitCode::SUCCESS)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
