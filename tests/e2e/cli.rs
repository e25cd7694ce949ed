//! The developer CLI end to end, through the real `sluice` binary: `sluice new` scaffolds a crate
//! that builds and runs on its sample, `sluice dev` swaps a saved change in while serving and
//! keeps the old version through a compile error, and the API commands fail with clear words.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use sluice_e2e::streams::{eventually, free_port, http_request, wait_for_port};
use sluice_e2e::{read_parquet, repo_root, row_count, sluice_bin};

/// One cargo target directory for every scaffold of these tests: the guest SDK and
/// wit-bindgen compile once, and reruns only rebuild the handlers.
fn shared_target_dir() -> PathBuf {
    repo_root().join("target/sluice-test-cache/scaffolds")
}

/// `sluice` with no API address or token inherited from the caller's environment, nor a cargo
/// target directory that would move the scaffolds' components away from where their manifests say.
fn sluice() -> Command {
    let mut command = Command::new(sluice_bin());
    for inherited in ["SLUICE_SERVER", "SLUICE_TOKEN", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        command.env_remove(inherited);
    }
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("running sluice")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sluice new <name> --dir <parent>/<name>` on the shared target directory.
fn scaffold(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    let output = run(sluice().arg("new").arg(name).arg("--dir").arg(&dir).arg("--target-dir").arg(shared_target_dir()));
    assert!(output.status.success(), "sluice new failed: {}", text(&output.stderr));
    assert!(text(&output.stdout).contains(&format!("sluice dev {}", dir.display())), "{}", text(&output.stdout));
    dir
}

#[test]
fn a_scaffolded_handler_builds_and_runs_on_its_sample() {
    let work = tempfile::tempdir().unwrap();
    let function = scaffold(work.path(), "hello-run");
    let data = work.path().join("data");
    let output = run(sluice()
        .arg("run")
        .arg(&function)
        .arg("--input")
        .arg(function.join("sample.jsonl"))
        .arg("--data-dir")
        .arg(&data));
    assert!(output.status.success(), "sluice run failed: {}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "hello from hello-run: 3 events in 2 kinds\n");

    let batches = read_parquet(&data.join("events"));
    assert_eq!(row_count(&batches), 2, "one row per kind");
    let mut totals = Vec::new();
    for batch in &batches {
        let kinds = batch.column_by_name("kind").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        let counts = batch.column_by_name("n").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        let sums = batch.column_by_name("total").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
        for row in 0..batch.num_rows() {
            totals.push((kinds.value(row).to_string(), counts.value(row), sums.value(row)));
        }
    }
    totals.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(totals, [("click".to_string(), 2, 4.5), ("view".to_string(), 1, 2.0)]);

    let again = run(sluice().arg("new").arg("hello-run").arg("--dir").arg(&function));
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already exists and is not empty"), "{}", text(&again.stderr));
    let handler = std::fs::read_to_string(function.join("src/lib.rs")).unwrap();
    assert!(handler.contains("hello from"), "the existing crate is untouched");
    let bad = run(sluice().arg("new").arg("9lives").arg("--dir").arg(work.path().join("bad")));
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("function name `9lives` must start with a letter"), "{}", text(&bad.stderr));
    assert!(!work.path().join("bad").exists());
}

/// `sluice dev` as a child process, killed if still running when dropped.
struct Dev {
    child: Child,
    log: PathBuf,
}

impl Dev {
    /// Runs `sluice dev` on `function`, its HTTP trigger on `port`, data and log under `work`.
    fn start(work: &Path, function: &Path, port: u16) -> Dev {
        let log = work.join("dev.log");
        let child = sluice()
            .arg("dev")
            .arg(function)
            .arg("--data-dir")
            .arg(work.join("data"))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting sluice dev");
        Dev { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a POST to the function's HTTP trigger, if it answered 200.
fn ask(port: u16, name: &str) -> Option<String> {
    let (status, _, body) = http_request(port, "POST", &format!("/functions/{name}"), br#"{"kind":"a","value":1}"#).ok()?;
    (status == 200).then(|| text(&body))
}

/// Saves `lib.rs` with `from` replaced by `to`, then waits until the HTTP trigger answers with
/// `to`; returns the time from the save to that answer.
fn edit_and_wait(dev: &Dev, lib: &Path, port: u16, from: &str, to: &str) -> Duration {
    let source = std::fs::read_to_string(lib).unwrap();
    assert!(source.contains(from), "{from} is not in {}", lib.display());
    let saved = Instant::now();
    std::fs::write(lib, source.replace(from, to)).unwrap();
    let answered = eventually(Duration::from_secs(300), || ask(port, "hello-dev").is_some_and(|body| body.starts_with(to)));
    assert!(answered, "the edit never served; dev log:\n{}", dev.log_text());
    saved.elapsed()
}

#[test]
fn dev_swaps_in_each_save_and_keeps_serving_through_a_compile_error() {
    let work = tempfile::tempdir().unwrap();
    let function = scaffold(work.path(), "hello-dev");
    let lib = function.join("src/lib.rs");
    let port = free_port();
    let dev = Dev::start(work.path(), &function, port);
    wait_for_port(port, Duration::from_secs(600));
    assert_eq!(ask(port, "hello-dev").as_deref(), Some("hello from hello-dev: 1 events in 1 kinds\n"));

    // A reply no earlier run has built, so the reload includes compiling the new component
    // rather than finding it in the host's cache.
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let reloaded = format!("reload {stamp} from");
    let first = edit_and_wait(&dev, &lib, port, "hello from", &reloaded);
    eprintln!("save -> new reply over HTTP: {} ms", first.as_millis());
    assert!(dev.log_text().contains("sluice dev: reloaded hello-dev in "), "{}", dev.log_text());

    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("Ok(Outcome::text(reply))", "Ok(Outcome::text(reply)")).unwrap();
    let refused = eventually(Duration::from_secs(300), || dev.log_text().contains("reload failed"));
    assert!(refused, "the broken build was not reported; dev log:\n{}", dev.log_text());
    let log = dev.log_text();
    assert!(log.contains("error") && log.contains("src/lib.rs"), "cargo's compile error is printed: {log}");
    assert!(log.contains("the previous version keeps serving"), "{log}");
    assert_eq!(ask(port, "hello-dev"), Some(format!("{reloaded} hello-dev: 1 events in 1 kinds\n")));

    std::fs::write(&lib, source.replace(&reloaded, &format!("fixed {stamp} from"))).unwrap();
    let fixed = eventually(Duration::from_secs(300), || ask(port, "hello-dev").is_some_and(|body| body.starts_with(&format!("fixed {stamp} from"))));
    assert!(fixed, "the fixed source never served; dev log:\n{}", dev.log_text());
    let reloads: Vec<String> = dev.log_text().lines().filter(|l| l.contains("sluice dev: reloaded")).map(str::to_string).collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    eprintln!("dev's own save -> serving report: {reloads:?}");

    let manifest = function.join("sluice.toml");
    let valid = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, valid.replace("[limits]", "[limits]\nmemory = \"lots\"")).unwrap();
    let refused = eventually(Duration::from_secs(60), || dev.log_text().matches("sluice dev: reload failed").count() == 2);
    assert!(refused, "the broken manifest was not reported; dev log:\n{}", dev.log_text());
    assert!(dev.log_text().contains("unknown field `memory`"), "the bad field is named: {}", dev.log_text());
    assert!(ask(port, "hello-dev").is_some_and(|body| body.starts_with(&format!("fixed {stamp} from"))));

    Command::new("kill").arg("-TERM").arg(dev.child.id().to_string()).status().unwrap();
    let mut dev = dev;
    let stopped = eventually(Duration::from_secs(30), || dev.child.try_wait().unwrap().is_some());
    assert!(stopped, "sluice dev did not stop on SIGTERM");
    assert!(dev.child.wait().unwrap().success(), "{}", dev.log_text());
}

#[test]
fn dev_waits_for_a_fix_when_the_first_build_fails() {
    let work = tempfile::tempdir().unwrap();
    let function = scaffold(work.path(), "hello-wait");
    let lib = function.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("Ok(Outcome::text(reply))", "Ok(Outcome::text(reply, 1))")).unwrap();
    let port = free_port();
    let dev = Dev::start(work.path(), &function, port);
    let waiting = eventually(Duration::from_secs(600), || dev.log_text().contains("nothing serves yet"));
    assert!(waiting, "the failed first build was not reported; dev log:\n{}", dev.log_text());
    assert!(dev.log_text().contains("src/lib.rs"), "cargo's error is printed: {}", dev.log_text());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens before a version loads");

    std::fs::write(&lib, source).unwrap();
    wait_for_port(port, Duration::from_secs(300));
    assert_eq!(ask(port, "hello-wait").as_deref(), Some("hello from hello-wait: 1 events in 1 kinds\n"));

    let missing = run(sluice().arg("dev").arg(work.path().join("nowhere")));
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("sluice.toml does not exist"), "{}", text(&missing.stderr));
}

#[test]
fn api_commands_name_a_missing_token_and_an_unreachable_server() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let output = run(sluice().args(["list", "--server", &nobody]));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("no API token: pass --token or set SLUICE_TOKEN"), "{}", text(&output.stderr));

    let output = run(sluice().args(["get", "hello", "--server", &nobody]).env("SLUICE_TOKEN", "t0ken"));
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&format!("cannot reach the sluice server at {nobody}")), "{stderr}");
    assert!(stderr.contains("refused"), "the cause is named: {stderr}");

    let output = run(sluice().args(["list", "--server", "127.0.0.1:8090", "--token", "t"]));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("must start with http://"), "{}", text(&output.stderr));

    let output = run(sluice().args(["delete", "../etc", "--server", &nobody, "--token", "t"]));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("function name `../etc` must be non-empty"), "{}", text(&output.stderr));
}

/// `sluice serve` with its control plane on a loopback port, killed when dropped.
struct ControlPlane {
    child: Child,
    log: PathBuf,
    url: String,
    admin_token: String,
}

impl ControlPlane {
    fn start(work: &Path) -> ControlPlane {
        let (api_port, http_port) = (free_port(), free_port());
        let admin_token = "admin-secret-for-the-cli-test".to_string();
        let token_file = work.join("admin-token");
        std::fs::write(&token_file, &admin_token).unwrap();
        let log = work.join("serve.log");
        let child = Command::new(sluice_bin())
            .arg("serve")
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--state-dir")
            .arg(work.join("state"))
            .arg("--data-dir")
            .arg(work.join("data"))
            .arg("--admin-token-file")
            .arg(&token_file)
            .env_remove("SLUICE_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting sluice serve");
        wait_for_port(api_port, Duration::from_secs(60));
        ControlPlane { child, log, url: format!("http://127.0.0.1:{api_port}"), admin_token }
    }

    /// `sluice <args> --server <this>` with `token` in SLUICE_TOKEN; asserts it succeeded.
    fn ok(&self, token: &str, args: &[&str]) -> String {
        let output = self.call(token, args);
        assert!(
            output.status.success(),
            "sluice {args:?} failed: {}\nserve log:\n{}",
            text(&output.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        text(&output.stdout)
    }

    /// `sluice <args>` that must fail; returns its stderr.
    fn refused(&self, token: &str, args: &[&str]) -> String {
        let output = self.call(token, args);
        assert!(!output.status.success(), "sluice {args:?} succeeded: {}", text(&output.stdout));
        text(&output.stderr)
    }

    fn call(&self, token: &str, args: &[&str]) -> Output {
        run(sluice().args(args).env("SLUICE_SERVER", &self.url).env("SLUICE_TOKEN", token))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_cli_drives_a_real_server_through_a_whole_deploy_cycle() {
    let work = tempfile::tempdir().unwrap();
    let server = ControlPlane::start(work.path());
    let admin = server.admin_token.clone();

    let stderr = server.refused("not-the-token", &["list"]);
    assert!(stderr.contains(&format!("the server at {} refused the token (HTTP 401)", server.url)), "{stderr}");

    let created = server.ok(&admin, &["tenant", "create", "acme", "--functions", "3", "--memory-mb", "128"]);
    assert!(created.contains("created tenant acme") && created.contains("functions=3"), "{created}");
    let token = created.lines().find_map(|line| line.strip_prefix("token: ")).expect("the token is printed").to_string();
    let tenants: serde_json::Value = serde_json::from_str(&server.ok(&admin, &["tenant", "list", "--json"])).unwrap();
    assert_eq!(tenants[0]["name"], "acme", "{tenants}");
    assert!(server.ok(&admin, &["tenant", "list"]).starts_with("NAME  FUNCTIONS  QUOTAS\nacme"));
    let stderr = server.refused(&token, &["tenant", "list"]);
    assert!(stderr.contains("admin token") && stderr.contains("HTTP 403"), "{stderr}");

    let function = scaffold(work.path(), "hello-deploy");
    let function_arg = function.to_str().unwrap();
    assert!(server.ok(&token, &["deploy", function_arg]).starts_with("deployed hello-deploy version 1 (sha256 "));
    let lib = function.join("src/lib.rs");
    std::fs::write(&lib, std::fs::read_to_string(&lib).unwrap().replace("hello from", "v2 from")).unwrap();
    assert!(server.ok(&token, &["deploy", function_arg]).starts_with("deployed hello-deploy version 2 (sha256 "));

    assert_eq!(server.ok(&token, &["list"]), "NAME          VERSION  STATUS\nhello-deploy  2        running\n");
    let details = server.ok(&token, &["get", "hello-deploy"]);
    assert!(details.contains("active version  2\n"), "{details}");
    let document: serde_json::Value = serde_json::from_str(&server.ok(&token, &["get", "hello-deploy", "--json"])).unwrap();
    assert_eq!(document["versions"].as_array().unwrap().len(), 2, "{document}");

    let event = r#"{"kind":"a","value":1}"#;
    assert_eq!(server.ok(&token, &["invoke", "hello-deploy", "--data", event]), "v2 from hello-deploy: 1 events in 1 kinds\n");
    // --token wins over SLUICE_TOKEN (here the admin's, which may not touch functions).
    assert_eq!(server.ok(&admin, &["rollback", "hello-deploy", "--to", "1", "--token", &token]), "rolled back hello-deploy: active version 1\n");
    let events = work.path().join("event.json");
    std::fs::write(&events, event).unwrap();
    let events_arg = events.to_str().unwrap();
    assert_eq!(
        server.ok(&token, &["invoke", "hello-deploy", "--file", events_arg]),
        "hello from hello-deploy: 1 events in 1 kinds\n"
    );
    let mut piped = sluice()
        .args(["invoke", "hello-deploy"])
        .env("SLUICE_SERVER", &server.url)
        .env("SLUICE_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), br#"{"kind":"b","value":2}"#).unwrap();
    let from_stdin = piped.wait_with_output().unwrap();
    assert!(from_stdin.status.success());
    assert_eq!(text(&from_stdin.stdout), "hello from hello-deploy: 1 events in 1 kinds\n", "the event is read from stdin");
    let stderr = server.refused(&token, &["invoke", "hello-deploy", "--data", "not json"]);
    assert!(stderr.starts_with("error: "), "{stderr}");
    let stderr = server.refused(&token, &["rollback", "hello-deploy", "--to", "9"]);
    assert!(stderr.contains("has no version 9") && stderr.contains("HTTP 404"), "{stderr}");

    let logs = server.ok(&token, &["logs", "hello-deploy"]);
    assert!(logs.contains("hello-deploy v2") && logs.contains("hello-deploy v1"), "{logs}");
    assert!(logs.contains("1 events in 1 kinds"), "the handler's own log line: {logs}");
    let mut follow = sluice()
        .args(["logs", "hello-deploy", "-f"])
        .env("SLUICE_SERVER", &server.url)
        .env("SLUICE_TOKEN", &token)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(follow.stdout.take().unwrap()), &mut first).unwrap();
    assert!(first.contains("hello-deploy v"), "{first}");
    assert!(follow.try_wait().unwrap().is_none(), "a follow stays open");
    follow.kill().unwrap();
    follow.wait().unwrap();

    assert_eq!(server.ok(&token, &["delete", "hello-deploy"]), "deleted function hello-deploy\n");
    let stderr = server.refused(&token, &["get", "hello-deploy"]);
    assert!(stderr.contains("no function `hello-deploy`") && stderr.contains("HTTP 404"), "{stderr}");
    assert_eq!(server.ok(&token, &["list"]), "no functions\n");
    assert_eq!(server.ok(&admin, &["tenant", "delete", "acme"]), "deleted tenant acme\n");
    let stderr = server.refused(&token, &["list"]);
    assert!(stderr.contains("refused the token (HTTP 401)"), "a deleted tenant's token is refused: {stderr}");
}
