//! The commands that drive a `sluice serve` over its REST API: deploy, list, get, delete,
//! invoke, logs, rollback and tenant management. Text for people by default; `--json` prints
//! the server's documents as they are, for scripts.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use reqwest::Method;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};
use sluice_manifest::{MANIFEST_FILE, Manifest};

use crate::client::ApiClient;
use crate::{build, render};

/// Where the API is and who is calling; shared by every remote command.
#[derive(clap::Args)]
pub struct Connection {
    /// Address of the sluice API (`sluice serve --api-listen`).
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8090")]
    server: String,
    /// Bearer token: the admin token for `tenant` commands, a tenant's token otherwise.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl Connection {
    fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(&self.server, self.token.as_deref())?)
    }
}

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The function's directory (holding `sluice.toml`); its component is built first if stale.
    function: PathBuf,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct NameArgs {
    /// The function's name.
    name: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The function's name.
    name: String,
    /// The event's body; without --data or --file it is read from stdin.
    #[arg(long, conflicts_with = "file")]
    data: Option<String>,
    /// Read the event's body from this file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Content type of the body.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The function's name.
    name: String,
    /// Keep the stream open and print lines as they come.
    #[arg(short, long)]
    follow: bool,
    /// How many recent lines.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The function's name.
    name: String,
    /// The earlier version to make active again.
    #[arg(long)]
    to: u64,
    #[command(flatten)]
    connection: Connection,
}

/// `sluice tenant ...`: tenant management, with the admin token.
#[derive(clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its token once.
    Create(TenantCreateArgs),
    /// List tenants with their quotas and function counts.
    List(ListArgs),
    /// Delete a tenant and its functions.
    Delete(TenantNameArgs),
}

#[derive(clap::Args)]
pub struct TenantCreateArgs {
    /// The tenant's name (letters, digits, `-` and `_`).
    name: String,
    /// Most functions the tenant may deploy [server default: 10].
    #[arg(long)]
    functions: Option<u32>,
    /// Most invocations at once across the tenant's functions, and most `instances` one manifest may ask for [server default: 4].
    #[arg(long)]
    instances: Option<u32>,
    /// Most `memory-mb` (linear memory of one instance) a manifest may ask for [server default: 256].
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Most `timeout-ms` (one invocation) a manifest may ask for [server default: 60000].
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// GPU memory the tenant's functions may hold, in MiB [server default: 1024].
    #[arg(long)]
    gpu_memory_mb: Option<u64>,
    /// Bytes of Parquet the tenant's sinks may hold [server default: 10 GiB].
    #[arg(long)]
    sink_bytes: Option<u64>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct TenantNameArgs {
    /// The tenant's name.
    name: String,
    #[command(flatten)]
    connection: Connection,
}

/// Names travel in URL paths; the server's own rule (letters, digits, `-`, `_`) keeps them
/// from ever needing escapes, so anything else is refused before a request is sent.
fn checked_name<'a>(kind: &str, name: &'a str) -> anyhow::Result<&'a str> {
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    anyhow::ensure!(valid, "{kind} name `{name}` must be non-empty and use only letters, digits, `-` and `_`");
    Ok(name)
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let manifest = Manifest::load(&args.function)?;
    build::build_if_needed(&manifest, false)?;
    let manifest_path = manifest.dir.join(MANIFEST_FILE);
    let manifest_text =
        std::fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let component_path = manifest.component_path();
    let component = std::fs::read(&component_path).with_context(|| format!("reading {}", component_path.display()))?;
    let form = Form::new()
        .part("manifest", Part::text(manifest_text).mime_str("application/toml")?)
        .part(
            "component",
            Part::bytes(component).file_name(format!("{}.wasm", manifest.name)).mime_str("application/wasm")?,
        );
    let path = format!("/v1/functions/{}", manifest.name);
    let document = client.send_json(client.request(Method::PUT, &path).multipart(form), "the deploy")?;
    if args.connection.json {
        print_json(&document);
    } else {
        println!("deployed {}", deployed_line(&document));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let functions = client.send_json(client.request(Method::GET, "/v1/functions"), "the function list")?;
    if args.connection.json {
        print_json(&functions);
    } else {
        print!("{}", function_table(&functions));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn get(args: NameArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let path = format!("/v1/functions/{}", checked_name("function", &args.name)?);
    let document = client.send_json(client.request(Method::GET, &path), "the function")?;
    if args.connection.json {
        print_json(&document);
    } else {
        print!("{}", function_details(&document));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn delete(args: NameArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let path = format!("/v1/functions/{}", checked_name("function", &args.name)?);
    client.send(client.request(Method::DELETE, &path))?;
    if !args.connection.json {
        println!("deleted function {}", args.name);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let path = format!("/v1/functions/{}/invoke", checked_name("function", &args.name)?);
    let body = match (&args.data, &args.file) {
        (Some(data), _) => data.clone().into_bytes(),
        (None, Some(file)) => std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        (None, None) => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body).context("reading the event from stdin")?;
            body
        }
    };
    let request = client.request(Method::POST, &path).header("content-type", &args.content_type).body(body);
    let mut reply = client.send(request)?;
    // The handler's reply is the result: copied as it is, for pipes and scripts.
    let mut stdout = std::io::stdout().lock();
    reply.copy_to(&mut stdout).context("reading the handler's reply")?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let name = checked_name("function", &args.name)?;
    if args.follow {
        let path = format!("/v1/functions/{name}/logs?follow=true");
        let stream = client.send(client.request(Method::GET, &path))?;
        for line in BufReader::new(stream).lines() {
            let line = line.context("the log stream broke off")?;
            if line.trim().is_empty() {
                continue;
            }
            if args.connection.json {
                println!("{line}");
            } else {
                let parsed: Value = serde_json::from_str(&line).with_context(|| format!("a log line is not JSON: {line}"))?;
                println!("{}", log_line(&parsed));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let path = format!("/v1/functions/{name}/logs?limit={}", args.limit);
    let document = client.send_json(client.request(Method::GET, &path), "the logs")?;
    if args.connection.json {
        print_json(&document);
    } else {
        for line in document["lines"].as_array().into_iter().flatten() {
            println!("{}", log_line(line));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let path = format!("/v1/functions/{}/rollback", checked_name("function", &args.name)?);
    let request = client.request(Method::POST, &path).json(&json!({ "version": args.to }));
    let document = client.send_json(request, "the rollback")?;
    if args.connection.json {
        print_json(&document);
    } else {
        println!("rolled back {}: active version {}", args.name, text(&document["active_version"]));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn tenant(command: TenantCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::Create(args) => tenant_create(args),
        TenantCommand::List(args) => tenant_list(args),
        TenantCommand::Delete(args) => tenant_delete(args),
    }
}

fn tenant_create(args: TenantCreateArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let name = checked_name("tenant", &args.name)?;
    let quotas: serde_json::Map<String, Value> = [
        ("functions", args.functions.map(u64::from)),
        ("instances", args.instances.map(u64::from)),
        ("memory_mb", args.memory_mb),
        ("timeout_ms", args.timeout_ms),
        ("gpu_memory_mb", args.gpu_memory_mb),
        ("sink_bytes", args.sink_bytes),
    ]
    .into_iter()
    .filter_map(|(field, value)| value.map(|v| (field.to_string(), Value::from(v))))
    .collect();
    let request = client.request(Method::POST, "/v1/tenants").json(&json!({ "name": name, "quotas": quotas }));
    let tenant = client.send_json(request, "the tenant creation")?;
    if args.connection.json {
        print_json(&tenant);
    } else {
        println!("created tenant {name} ({})", quota_text(&tenant["quotas"]));
        println!("token: {}", text(&tenant["token"]));
        eprintln!("the token is shown only once: keep it (SLUICE_TOKEN) for this tenant's functions");
    }
    Ok(ExitCode::SUCCESS)
}

fn tenant_list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let tenants = client.send_json(client.request(Method::GET, "/v1/tenants"), "the tenant list")?;
    if args.connection.json {
        print_json(&tenants);
    } else {
        print!("{}", tenant_table(&tenants));
    }
    Ok(ExitCode::SUCCESS)
}

fn tenant_delete(args: TenantNameArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let path = format!("/v1/tenants/{}", checked_name("tenant", &args.name)?);
    client.send(client.request(Method::DELETE, &path))?;
    if !args.connection.json {
        println!("deleted tenant {}", args.name);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("a JSON value serializes"));
}

/// A JSON scalar as text: strings bare, null as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let lines = std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>()).chain(rows.iter().cloned());
    for line in lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// "name version N (sha256 abcdef012345, 1.20 MB)" for the active version of a function document.
fn deployed_line(document: &Value) -> String {
    let active = &document["active_version"];
    let version = document["versions"].as_array().into_iter().flatten().find(|v| &v["version"] == active);
    let detail = version
        .map(|v| {
            let hash = text(&v["hash"]);
            let size = v["size_bytes"].as_u64().map(render::bytes).unwrap_or_else(|| "-".to_string());
            format!(" (sha256 {}, {size})", &hash[..hash.len().min(12)])
        })
        .unwrap_or_default();
    format!("{} version {}{detail}", text(&document["name"]), text(active))
}

fn function_table(functions: &Value) -> String {
    let rows: Vec<Vec<String>> = functions
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| vec![text(&f["name"]), text(&f["active_version"]), text(&f["status"])])
        .collect();
    if rows.is_empty() {
        return "no functions\n".to_string();
    }
    table(&["NAME", "VERSION", "STATUS"], &rows)
}

fn function_details(document: &Value) -> String {
    let mut out = format!(
        "name            {}\nstatus          {}\nactive version  {}\ninstances       {}\nlast error      {}\nversions\n",
        text(&document["name"]),
        text(&document["status"]),
        text(&document["active_version"]),
        text(&document["instances"]),
        text(&document["last_error"]),
    );
    let rows: Vec<Vec<String>> = document["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let marker = if v["version"] == document["active_version"] { "*" } else { "" };
            vec![
                format!("{marker}{}", text(&v["version"])),
                text(&v["hash"]),
                v["size_bytes"].as_u64().map(render::bytes).unwrap_or_else(|| "-".to_string()),
                text(&v["deployed_at"]),
            ]
        })
        .collect();
    for line in table(&["VERSION", "SHA-256", "SIZE", "DEPLOYED"], &rows).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn quota_text(quotas: &Value) -> String {
    match quotas.as_object() {
        Some(fields) if !fields.is_empty() => {
            fields.iter().map(|(field, value)| format!("{field}={}", text(value))).collect::<Vec<_>>().join(" ")
        }
        _ => "default quotas".to_string(),
    }
}

fn tenant_table(tenants: &Value) -> String {
    let rows: Vec<Vec<String>> = tenants
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let functions = match &t["functions"] {
                Value::Array(names) => names.len().to_string(),
                other => text(other),
            };
            vec![text(&t["name"]), functions, quota_text(&t["quotas"])]
        })
        .collect();
    if rows.is_empty() {
        return "no tenants\n".to_string();
    }
    table(&["NAME", "FUNCTIONS", "QUOTAS"], &rows)
}

/// `ts level function vN invocation: message`.
fn log_line(line: &Value) -> String {
    format!(
        "{} {:<5} {} v{} {}: {}",
        text(&line["ts"]),
        text(&line["level"]),
        text(&line["function"]),
        text(&line["version"]),
        text(&line["invocation"]),
        text(&line["message"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        json!({
            "name": "hello", "status": "running", "active_version": 2, "instances": 1, "last_error": null,
            "versions": [
                {"version": 1, "hash": "aa".repeat(32), "size_bytes": 1_500_000, "deployed_at": "2026-11-24T22:00:00Z"},
                {"version": 2, "hash": "bb".repeat(32), "size_bytes": 2_000, "deployed_at": "2026-11-24T22:05:00Z"},
            ],
        })
    }

    #[test]
    fn a_deploy_names_the_active_version_its_hash_and_size() {
        assert_eq!(deployed_line(&document()), "hello version 2 (sha256 bbbbbbbbbbbb, 2.00 KB)");
    }

    #[test]
    fn function_details_mark_the_active_version() {
        let details = function_details(&document());
        assert!(details.contains("active version  2\n"), "{details}");
        assert!(details.contains("last error      -\n"), "{details}");
        let active: Vec<&str> = details.lines().filter(|l| l.trim_start().starts_with('*')).collect();
        assert_eq!(active.len(), 1, "{details}");
        assert!(active[0].contains(&"bb".repeat(32)), "{details}");
    }

    #[test]
    fn tables_align_columns_and_say_when_empty() {
        let functions = json!([{"name": "a", "active_version": 1, "status": "running"}, {"name": "longer-name", "active_version": 12, "status": "failed"}]);
        assert_eq!(
            function_table(&functions),
            "NAME         VERSION  STATUS\na            1        running\nlonger-name  12       failed\n"
        );
        assert_eq!(function_table(&json!([])), "no functions\n");
        let tenants = json!([{"name": "acme", "functions": 2, "quotas": {"functions": 5}}]);
        assert_eq!(tenant_table(&tenants), "NAME  FUNCTIONS  QUOTAS\nacme  2          functions=5\n");
    }

    #[test]
    fn names_that_would_need_escaping_are_refused() {
        assert!(checked_name("function", "hello-world_2").is_ok());
        for bad in ["", "a/b", "../x", "a b", "a?b"] {
            let error = checked_name("function", bad).unwrap_err().to_string();
            assert!(error.contains(&format!("`{bad}`")), "{error}");
        }
    }

    #[test]
    fn log_lines_carry_function_version_and_invocation() {
        let line = json!({"ts": "2026-11-24T22:00:00Z", "level": "info", "tenant": "acme", "function": "hello", "version": 3, "invocation": 17, "message": "3 events"});
        assert_eq!(log_line(&line), "2026-11-24T22:00:00Z info  hello v3 17: 3 events");
    }
}
