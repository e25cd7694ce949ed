//! The control plane end to end: a real `sluice serve` with its REST API, driven over real
//! HTTP: the deploy/list/get/invoke/rollback/delete cycle, the auth matrix, every refused
//! upload, path traversal and symlink escapes, quotas, logs, restart persistence and a hot
//! swap under a live stream, with Parquet read back from disk.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use serde_json::{Value, json};
use sluice_e2e::control_plane::{ApiServer, manifest_text};
use sluice_e2e::{component, parquet_files, read_parquet, repo_root};

const LIMITS: &str = "[limits]\nmemory-mb = 64\ntimeout-ms = 5000\n";

fn bytes_of(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).expect("reading a built component")
}

fn sink_manifest(name: &str, sink_path: &str, extra: &str) -> String {
    manifest_text(name, &format!("[config]\nsink = \"out\"\n[sinks.out]\npath = \"{sink_path}\"\n{extra}{LIMITS}"))
}

fn ids_under(dir: &std::path::Path) -> Vec<i64> {
    read_parquet(dir)
        .iter()
        .flat_map(|batch| {
            let ids = batch.column_by_name("id").expect("an id column").as_any().downcast_ref::<Int64Array>().unwrap();
            (0..ids.len()).map(|i| ids.value(i)).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn deploy_list_get_invoke_rollback_delete() {
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &[]);
    let acme = server.client(&server.admin().create_tenant("acme", json!({})));
    let (echo, misbehave) = (bytes_of("echo"), bytes_of("misbehave"));

    let v1 = acme.deploy_ok("f", &manifest_text("f", LIMITS), &echo);
    assert_eq!((v1["name"].as_str(), v1["status"].as_str(), v1["active_version"].as_u64()), (Some("f"), Some("running"), Some(1)));
    assert_eq!(v1["versions"][0]["hash"].as_str().unwrap(), sluice_runtime::content_hash(&echo));
    assert_eq!(v1["versions"][0]["size_bytes"].as_u64(), Some(echo.len() as u64));
    let reply = acme.invoke("f", br#"{"id":7}"#);
    assert_eq!((reply.status, reply.content_type.as_str(), reply.text().as_str()), (200, "application/json", r#"{"id":7}"#));

    let v2 = acme.deploy_ok("f", &sink_manifest("f", "events", ""), &misbehave);
    assert_eq!(v2["active_version"], 2);
    let versions: Vec<u64> = v2["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2]);
    assert_ne!(v2["versions"][0]["hash"], v2["versions"][1]["hash"]);
    let reply = acme.invoke("f", br#"{"action":"ok","id":1}"#);
    assert_eq!((reply.status, reply.text().as_str()), (200, "1"));
    assert_eq!(ids_under(&server.data_dir.join("acme/f/events")), [1], "the sink resolves under <data-dir>/<tenant>/<function>");

    let list = acme.get("/v1/functions");
    assert_eq!(list.json(), json!([{ "name": "f", "active_version": 2, "status": "running" }]));

    let rolled = acme.post_json("/v1/functions/f/rollback", &json!({ "version": 1 }));
    assert_eq!((rolled.status, rolled.json()["active_version"].as_u64()), (200, Some(1)));
    assert_eq!(acme.invoke("f", br#"{"id":8}"#).text(), r#"{"id":8}"#);
    let missing = acme.post_json("/v1/functions/f/rollback", &json!({ "version": 9 }));
    assert_eq!((missing.status, missing.cause().as_str()), (404, "version-not-found"));
    let malformed = acme.post_json("/v1/functions/f/rollback", &json!({ "version": "one" }));
    assert_eq!((malformed.status, malformed.cause().as_str()), (400, "invalid-json"));

    // The same bytes again: a new version, the same content hash, one stored blob.
    let v3 = acme.deploy_ok("f", &manifest_text("f", LIMITS), &echo);
    assert_eq!((v3["active_version"].as_u64(), v3["versions"][2]["hash"].clone()), (Some(3), v1["versions"][0]["hash"].clone()));
    let blobs = std::fs::read_dir(server.state_dir.join("blobs")).unwrap().count();
    assert_eq!(blobs, 2, "echo and misbehave, each stored once");

    assert_eq!(acme.delete("/v1/functions/f").status, 204);
    let gone = acme.get("/v1/functions/f");
    assert_eq!((gone.status, gone.cause().as_str()), (404, "function-not-found"));
    assert_eq!(acme.invoke("f", b"{}").status, 404);
    assert_eq!(acme.get("/v1/functions").json(), json!([]));
}

#[test]
fn the_auth_matrix_no_token_bad_token_other_tenant_admin() {
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &[]);
    let admin = server.admin();
    let acme = server.client(&admin.create_tenant("acme", json!({})));
    let globex = server.client(&admin.create_tenant("globex", json!({})));
    acme.deploy_ok("f", &manifest_text("f", LIMITS), &bytes_of("echo"));
    acme.invoke("f", br#"{"id":1}"#);

    for answer in [server.anonymous().get("/v1/functions"), server.anonymous().get("/v1/tenants"), server.anonymous().get("/metrics")] {
        assert_eq!((answer.status, answer.cause().as_str()), (401, "unauthorized"));
    }
    let stranger = server.client("sluice_not-a-real-token");
    assert_eq!(stranger.get("/v1/functions").status, 401);
    assert_eq!(stranger.post_json("/v1/tenants", &json!({ "name": "x" })).status, 401);

    // A tenant cannot manage tenants; the admin has no functions of its own.
    let refused = acme.post_json("/v1/tenants", &json!({ "name": "evil" }));
    assert_eq!((refused.status, refused.cause().as_str()), (403, "admin-only"));
    assert_eq!(acme.delete("/v1/tenants/globex").status, 403);
    assert_eq!(admin.get("/v1/functions").status, 403);

    // Another tenant's function does not exist for globex, whatever it tries.
    assert_eq!(globex.get("/v1/functions/f").status, 404);
    assert_eq!(globex.invoke("f", b"{}").status, 404);
    assert_eq!(globex.get("/v1/functions/f/logs").status, 404);
    assert_eq!(globex.post_json("/v1/functions/f/rollback", &json!({ "version": 1 })).status, 404);
    assert_eq!(globex.delete("/v1/functions/f").status, 404);
    assert_eq!(globex.get("/v1/functions").json(), json!([]));
    assert_eq!(acme.invoke("f", br#"{"id":2}"#).status, 200, "acme's function survived globex's attempts");

    // Metrics: the admin sees every tenant, a tenant only its own label sets.
    let all = admin.get("/metrics").text();
    assert!(all.contains("sluice_batches_total{tenant=\"acme\",function=\"f\",version=\"1\"} 2"), "{all}");
    assert!(acme.get("/metrics").text().contains("tenant=\"acme\""));
    assert!(!globex.get("/metrics").text().contains("acme"));

    let tenants = admin.get("/v1/tenants").json();
    let names: Vec<&str> = tenants.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme", "globex"]);
    assert_eq!(tenants[0]["functions"], 1);
    let duplicate = admin.post_json("/v1/tenants", &json!({ "name": "acme" }));
    assert_eq!((duplicate.status, duplicate.cause().as_str()), (409, "tenant-exists"));
    let bad_name = admin.post_json("/v1/tenants", &json!({ "name": "../x" }));
    assert_eq!((bad_name.status, bad_name.cause().as_str()), (400, "invalid-name"));

    // Deleting a tenant stops its functions and revokes its token.
    assert_eq!(admin.delete("/v1/tenants/acme").status, 204);
    assert_eq!(acme.get("/v1/functions").status, 401);
    assert_eq!(admin.delete("/v1/tenants/acme").status, 404);
}

#[test]
fn every_refused_upload_names_its_reason_and_the_running_version_keeps_serving() {
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &["--max-component-bytes", "200000"]);
    let token = server.admin().create_tenant("acme", json!({}));
    let acme = server.client(&token);
    let echo = bytes_of("echo");
    acme.deploy_ok("f", &manifest_text("f", LIMITS), &echo);
    let good = manifest_text("f", LIMITS);

    let mut component_with_garbage = b"\0asm\x0d\0\x01\0".to_vec();
    component_with_garbage.extend_from_slice(b"definitely not sections");
    // What is uploaded, the manifest and component, and the status, cause and words the refusal has.
    type Refusal = (&'static str, String, Vec<u8>, u16, &'static str, &'static str);
    let refusals: Vec<Refusal> = vec![
        ("text", good.clone(), b"hello, I am not wasm".to_vec(), 422, "not-a-component", "magic bytes"),
        ("core module", good.clone(), b"\0asm\x01\0\0\0".to_vec(), 422, "not-a-component", "core WebAssembly module"),
        ("wrong world", good.clone(), bytes_of("wrong-world"), 422, "wrong-world", "sluice:function/handler"),
        ("does not compile", good.clone(), component_with_garbage, 422, "does-not-compile", "does not compile"),
        ("too large", good.clone(), vec![0u8; 300_000], 413, "component-too-large", "200000 bytes"),
        ("manifest syntax", "name = \"f\"\ncomponent = ".to_string(), echo.clone(), 422, "invalid-manifest", "invalid manifest"),
        ("unknown field", manifest_text("f", "colour = \"red\"\n"), echo.clone(), 422, "invalid-manifest", "colour"),
        ("zero limits", manifest_text("f", "[limits]\ntimeout-ms = 0\n"), echo.clone(), 422, "invalid-manifest", "timeout-ms"),
        ("another name", manifest_text("g", LIMITS), echo.clone(), 422, "name-mismatch", "`g`"),
        ("sink with ..", sink_manifest("f", "../globex", ""), echo.clone(), 422, "invalid-manifest", "`..`"),
        ("absolute sink", sink_manifest("f", "/etc", ""), echo.clone(), 422, "invalid-manifest", "relative"),
        ("cuda on a cpu host", manifest_text("f", &format!("device = \"cuda\"\n{LIMITS}")), echo.clone(), 422, "device-unavailable", "cuda"),
    ];
    for (what, manifest, component, status, cause, names) in refusals {
        let answer = acme.deploy("f", &manifest, &component);
        let body = answer.json();
        assert_eq!((answer.status, answer.cause().as_str()), (status, cause), "{what}: {body}");
        assert!(body["error"].as_str().unwrap().contains(names), "{what}: the error should name {names:?}: {body}");
    }

    // A sink directory that is a symlink out of the tenant's data root.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), server.data_dir.join("acme/f/escape")).unwrap();
    let answer = acme.deploy("f", &sink_manifest("f", "escape", ""), &echo);
    assert_eq!((answer.status, answer.cause().as_str()), (422, "sink-refused"), "{}", answer.text());
    assert!(answer.text().contains("outside the data root"), "{}", answer.text());
    // A function data root that is itself a symlink out.
    std::os::unix::fs::symlink(outside.path(), server.data_dir.join("acme/g")).unwrap();
    let answer = acme.deploy("g", &manifest_text("g", LIMITS), &echo);
    assert_eq!((answer.status, answer.cause().as_str()), (422, "sink-refused"), "{}", answer.text());

    // Malformed uploads: no multipart, a missing part, an unexpected part.
    let raw = acme.post_bytes("/v1/functions/f", b"x");
    assert_eq!(raw.status, 405);
    let form = reqwest::blocking::multipart::Form::new().text("manifest", good.clone());
    let missing = reqwest::blocking::Client::new()
        .put(server.url("/v1/functions/f"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert!(missing.text().unwrap().contains("no `component` part"));

    let function = acme.get("/v1/functions/f").json();
    assert_eq!((function["active_version"].as_u64(), function["versions"].as_array().unwrap().len()), (Some(1), 1));
    assert_eq!(acme.invoke("f", br#"{"id":3}"#).text(), r#"{"id":3}"#, "the running version is untouched");
    assert!(outside.path().read_dir().unwrap().next().is_none(), "nothing was written through a symlink");
}

#[test]
fn quotas_refuse_what_exceeds_them_and_the_tenants_other_work_keeps_going() {
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &[]);
    let admin = server.admin();
    let quotas = json!({ "functions": 2, "instances": 2, "memory_mb": 64, "timeout_ms": 5000, "sink_bytes": 4000 });
    let acme = server.client(&admin.create_tenant("acme", quotas));
    let misbehave = bytes_of("misbehave");

    for (manifest, names) in [
        (manifest_text("w", "[limits]\nmemory-mb = 128\n"), "limits.memory-mb = 128"),
        (manifest_text("w", "[limits]\nmemory-mb = 64\ninstances = 3\n"), "limits.instances = 3"),
        (manifest_text("w", "[limits]\nmemory-mb = 64\ntimeout-ms = 60000\n"), "limits.timeout-ms = 60000"),
    ] {
        let answer = acme.deploy("w", &manifest, &misbehave);
        assert_eq!((answer.status, answer.cause().as_str()), (422, "quota-exceeded"), "{}", answer.text());
        assert!(answer.text().contains(names), "{}", answer.text());
    }
    acme.deploy_ok("writer", &sink_manifest("writer", "events", ""), &misbehave);
    acme.deploy_ok("echo", &manifest_text("echo", LIMITS), &bytes_of("echo"));
    let third = acme.deploy("third", &manifest_text("third", LIMITS), &misbehave);
    assert_eq!((third.status, third.cause().as_str()), (422, "quota-exceeded"));
    assert!(third.text().contains("quota of functions is 2"), "{}", third.text());

    // Write until the sink quota refuses a batch: nothing of that batch lands, the rest stays.
    let events = server.data_dir.join("acme/writer/events");
    let mut refused = None;
    for id in 0..100 {
        let body = format!("{{\"action\":\"ok\",\"id\":{id},\"pad\":\"{}\"}}", "x".repeat(200));
        let answer = acme.invoke("writer", body.as_bytes());
        if answer.status != 200 {
            refused = Some((id, answer));
            break;
        }
    }
    let (refused_id, answer) = refused.expect("the sink quota refused a batch");
    assert_eq!((answer.status, answer.cause().as_str()), (422, "sink-quota"), "{}", answer.text());
    assert!(answer.text().contains("sink quota of 4000 bytes"), "{}", answer.text());
    let written: u64 = parquet_files(&events).iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(written <= 4000, "{written} bytes on disk");
    assert_eq!(ids_under(&events), (0..refused_id).collect::<Vec<_>>(), "every accepted batch is there, the refused one is not");
    assert_eq!(acme.invoke("echo", br#"{"id":1}"#).status, 200, "the tenant's other function keeps going");
    let log = acme.get("/v1/functions/writer").json();
    assert!(log["last_error"].as_str().unwrap().contains("sink quota"), "{log}");

    // Raising the quotas lets the refused work through.
    let raised = admin.put_json("/v1/tenants/acme/quotas", &json!({ "functions": 3, "sink_bytes": 1_000_000 }));
    assert_eq!(raised.status, 200, "{}", raised.text());
    assert_eq!((raised.json()["quotas"]["functions"].as_u64(), raised.json()["quotas"]["instances"].as_u64()), (Some(3), Some(2)));
    assert_eq!(acme.invoke("writer", br#"{"action":"ok","id":999}"#).status, 200);
    acme.deploy_ok("third", &manifest_text("third", LIMITS), &misbehave);
    let zero = admin.put_json("/v1/tenants/acme/quotas", &json!({ "instances": 0 }));
    assert_eq!((zero.status, zero.cause().as_str()), (422, "invalid-quotas"));
    let unknown = admin.put_json("/v1/tenants/acme/quotas", &json!({ "cpus": 3 }));
    assert_eq!((unknown.status, unknown.cause().as_str()), (400, "invalid-json"));
}

#[test]
fn guest_logs_are_tagged_and_followed_live() {
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &[]);
    let token = server.admin().create_tenant("acme", json!({}));
    let acme = server.client(&token);
    acme.deploy_ok("m", &sink_manifest("m", "events", ""), &bytes_of("misbehave"));

    let failed = acme.invoke("m", br#"{"action":"panic"}"#);
    assert_eq!((failed.status, failed.cause().as_str()), (422, "trap"), "{}", failed.text());
    let lines = acme.get("/v1/functions/m/logs?limit=50").json()["lines"].as_array().unwrap().clone();
    let panic = lines.iter().find(|l| l["message"].as_str().unwrap().contains("asked to panic")).expect("the guest's panic message");
    assert_eq!((panic["tenant"].as_str(), panic["function"].as_str(), panic["version"].as_u64()), (Some("acme"), Some("m"), Some(1)));
    assert!(panic["invocation"].as_u64().unwrap() >= 1 && panic["ts"].as_str().unwrap().ends_with('Z'));
    assert!(lines.iter().any(|l| l["level"] == "error" && l["message"].as_str().unwrap().contains("invocation failed (trap)")));
    assert_eq!(acme.get("/v1/functions/m/logs?limit=1").json()["lines"].as_array().unwrap().len(), 1);
    assert_eq!(acme.get("/v1/functions/m/logs?limit=x").status, 400);

    // Follow: a stream that stays open and carries each new line as it is logged.
    let follow = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .get(server.url("/v1/functions/m/logs?follow=true&limit=0"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(follow.headers()["content-type"], "application/x-ndjson");
    let reader = std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(follow).lines();
        let line = lines.next().expect("a followed line").unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(acme.invoke("m", br#"{"action":"error"}"#).status, 422);
    let line = reader.join().unwrap();
    assert!(line["message"].as_str().unwrap().contains("asked to fail"), "{line}");
}

#[test]
fn functions_and_tenants_survive_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let mut server = ApiServer::start(work.path(), &[]);
    let token = server.admin().create_tenant("acme", json!({ "functions": 5 }));
    let acme = server.client(&token);
    acme.deploy_ok("web", &sink_manifest("web", "out", "[[triggers]]\nkind = \"http\"\n"), &bytes_of("echo"));
    acme.deploy_ok("m", &manifest_text("m", LIMITS), &bytes_of("echo"));
    acme.deploy_ok("m", &sink_manifest("m", "events", ""), &bytes_of("misbehave"));
    assert_eq!(acme.post_json("/v1/functions/m/rollback", &json!({ "version": 1 })).status, 200);

    server.kill_and_restart();

    let acme = server.client(&token);
    assert_eq!(
        acme.get("/v1/functions").json(),
        json!([{ "name": "m", "active_version": 1, "status": "running" }, { "name": "web", "active_version": 1, "status": "running" }])
    );
    assert_eq!(acme.get("/v1/functions/m").json()["versions"].as_array().unwrap().len(), 2);
    assert_eq!(acme.invoke("m", br#"{"id":5}"#).text(), r#"{"id":5}"#, "the rolled-back version is the one restored");
    let answer = server.anonymous().post_bytes("/t/acme/functions/web", br#"{"id":6}"#);
    assert_eq!((answer.status, answer.text().as_str()), (200, r#"{"id":6}"#), "the HTTP trigger is served again");
    assert_eq!(ids_under(&server.data_dir.join("acme/web/out")), [6]);
    assert_eq!(server.admin().get("/v1/tenants").json()[0]["quotas"]["functions"], 5);

    // A clean stop (SIGTERM) drains and exits 0; the store is read again on the next start.
    assert!(server.terminate(Duration::from_secs(30)));
    let server = ApiServer::start(work.path(), &[]);
    assert_eq!(server.client(&token).invoke("m", br#"{"id":7}"#).status, 200);
    let stored = std::fs::read_to_string(server.state_dir.join("tenants/acme/tenant.json")).unwrap();
    assert!(!stored.contains(&token), "the token is stored only as its hash");
}

#[test]
fn a_hot_swap_under_a_live_http_stream_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &[]);
    let acme = server.client(&server.admin().create_tenant("acme", json!({})));
    let echo = bytes_of("echo");
    let trigger = "[[triggers]]\nkind = \"http\"\n";
    let deploy = |version: u32| acme.deploy_ok("live", &sink_manifest("live", &format!("v{version}"), trigger), &echo);
    deploy(1);

    let stop = Arc::new(AtomicBool::new(false));
    let url = server.url("/t/acme/functions/live");
    let senders: Vec<_> = (0..2)
        .map(|sender| {
            let (stop, url) = (stop.clone(), url.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut answers = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = sender * 1_000_000 + n;
                    let body = format!("{{\"id\":{id}}}");
                    let response = client.post(&url).body(body.clone()).send().expect("an answer");
                    let status = response.status().as_u16();
                    let reply = response.text().unwrap();
                    assert!(status == 200 && reply == body, "request {id}: {status} {reply}");
                    answers.push(id);
                    n += 1;
                }
                answers
            })
        })
        .collect();
    let started = Instant::now();
    for version in 2..=6 {
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(deploy(version)["active_version"], version);
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    let answers: Vec<i64> = senders.into_iter().flat_map(|s| s.join().expect("every request answered with its own body")).collect();
    let elapsed = started.elapsed();
    let mut handled: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for version in 1..=6 {
        for id in ids_under(&server.data_dir.join(format!("acme/live/v{version}"))) {
            handled.entry(id).or_default().push(version);
        }
    }
    let sent: Vec<i64> = {
        let mut ids = answers.clone();
        ids.sort();
        ids
    };
    assert_eq!(handled.keys().copied().collect::<Vec<_>>(), sent, "every event handled, none invented");
    assert!(handled.values().all(|versions| versions.len() == 1), "each event handled by exactly one version");
    let versions_seen: std::collections::BTreeSet<u32> = handled.values().flatten().copied().collect();
    assert!(versions_seen.len() >= 4, "events reached versions {versions_seen:?}");
    eprintln!("hot swap: {} requests over {elapsed:?} across versions {versions_seen:?}", answers.len());
    let metrics = server.admin().get("/metrics").text();
    assert!(metrics.contains("sluice_http_queue_depth{tenant=\"acme\",function=\"live\"}"), "{metrics}");
    assert!(metrics.contains("sluice_events_total{tenant=\"acme\",function=\"live\",version=\"6\"}"), "{metrics}");
}

#[test]
fn schemathesis_finds_no_server_error() {
    let schemathesis = repo_root().join("tools/venv-schemathesis/bin/schemathesis");
    assert!(schemathesis.is_file(), "{} is missing: scripts/test installs it", schemathesis.display());
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &[]);
    let token = server.admin().create_tenant("acme", json!({}));
    server.client(&token).deploy_ok("echo", &manifest_text("echo", LIMITS), &bytes_of("echo"));
    // A followed log stream stays open by design; every other value of every parameter is generated.
    let config = work.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[[operations]]\ninclude-name = \"GET /v1/functions/{name}/logs\"\nparameters = { \"query.follow\" = false }\n",
    )
    .unwrap();
    for (who, token) in [("tenant", token.as_str()), ("admin", sluice_e2e::control_plane::ADMIN_TOKEN)] {
        let output = std::process::Command::new(&schemathesis)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &server.url("/openapi.json"), "--checks", "not_a_server_error", "--max-examples", "30"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .arg("--seed=7")
            .current_dir(work.path())
            .output()
            .expect("running schemathesis");
        let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "schemathesis as {who} found a server error:\n{report}\nserve log:\n{}", server.log_text());
    }
}

/// Invocations of `function` offered one every `interval` for `window` (a late one is sent at
/// once, never skipped); returns how many completed with 200 and their p99 latency.
fn paced_throughput(api: &sluice_e2e::control_plane::Api, function: &str, interval: Duration, window: Duration) -> (u32, Duration) {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut next = started;
    while started.elapsed() < window {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next += interval;
        let sent = Instant::now();
        let answer = api.invoke(function, br#"{"id":1}"#);
        assert_eq!(answer.status, 200, "{}", answer.text());
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    (latencies.len() as u32, latencies[latencies.len() * 99 / 100])
}

#[test]
fn a_runaway_tenant_does_not_slow_another_tenant_by_more_than_ten_percent() {
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &[]);
    let admin = server.admin();
    let calm = server.client(&admin.create_tenant("calm", json!({})));
    // The default instances quota: the runaway may run a busy guest on each of two cores.
    let noisy_token = admin.create_tenant("noisy", json!({ "timeout_ms": 1000 }));
    let noisy = server.client(&noisy_token);
    calm.deploy_ok("victim", &manifest_text("victim", LIMITS), &bytes_of("echo"));
    noisy.deploy_ok("runaway", &manifest_text("runaway", "[limits]\nmemory-mb = 64\ntimeout-ms = 1000\n"), &bytes_of("misbehave"));
    paced_throughput(&calm, "victim", Duration::ZERO, Duration::from_millis(500));

    // Busy loops to the timeout, memory growth to the limit and an error storm, all at once
    // and without pause, from more clients than the runaway tenant has instances.
    let stop = Arc::new(AtomicBool::new(false));
    let runaway = |action: &'static str| {
        let (stop, url, token) = (stop.clone(), server.url("/v1/functions/runaway/invoke"), noisy_token.clone());
        move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
            let mut failed = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let body = format!("{{\"action\":\"{action}\"}}");
                let status = client.post(&url).bearer_auth(&token).body(body).send().unwrap().status();
                assert_eq!(status, 422, "the runaway's invocations fail with the function's own error");
                failed += 1;
            }
            failed
        }
    };
    // The victim's load is a steady 250 invocations/s; windows alone and beside the runaway
    // alternate, so background load on the machine hits both alike.
    let (interval, window) = (Duration::from_millis(4), Duration::from_secs(2));
    let (mut alone, mut beside, mut runaway_failures) = (0, 0, 0);
    let (mut p99_alone, mut p99_beside) = (Duration::ZERO, Duration::ZERO);
    for _round in 0..3 {
        let (done, p99) = paced_throughput(&calm, "victim", interval, window);
        (alone, p99_alone) = (alone + done, p99_alone.max(p99));
        stop.store(false, Ordering::Relaxed);
        let noise: Vec<_> = ["loop", "loop", "grow", "error", "error"].into_iter().map(|a| std::thread::spawn(runaway(a))).collect();
        std::thread::sleep(Duration::from_millis(200));
        let (done, p99) = paced_throughput(&calm, "victim", interval, window);
        (beside, p99_beside) = (beside + done, p99_beside.max(p99));
        stop.store(true, Ordering::Relaxed);
        runaway_failures += noise.into_iter().map(|t| t.join().unwrap()).sum::<u32>();
    }
    let ratio = f64::from(beside) / f64::from(alone);
    eprintln!(
        "isolation: victim {alone} invocations alone (p99 {p99_alone:?}) vs {beside} beside the runaway (p99 {p99_beside:?}): {:.1}%; runaway failures {runaway_failures}",
        ratio * 100.0
    );
    assert!(runaway_failures > 0);
    assert!(ratio >= 0.9, "the victim slowed to {:.1}% of its throughput alone ({beside} vs {alone})", ratio * 100.0);
}

#[test]
fn a_deployed_kafka_function_keeps_consuming_across_deploys_and_reports_its_lag() {
    let broker = sluice_e2e::streams::Broker::start();
    broker.create_topic("clicks", 2);
    let work = tempfile::tempdir().unwrap();
    let server = ApiServer::start(work.path(), &[]);
    let acme = server.client(&server.admin().create_tenant("acme", json!({})));
    let echo = bytes_of("echo");
    let trigger = format!(
        "[batching]\nmax-events = 50\nmax-wait-ms = 100\n[[triggers]]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"clicks\"]\ngroup = \"acme-k\"\n",
        broker.address()
    );
    let deploy = |version: u32| acme.deploy_ok("k", &sink_manifest("k", &format!("v{version}"), &trigger), &echo);
    let bodies = |range: std::ops::Range<i64>| range.map(|id| format!("{{\"id\":{id}}}")).collect::<Vec<_>>();
    let handled = || -> Vec<i64> {
        let mut ids: Vec<i64> = (1..=3).flat_map(|v| ids_under(&server.data_dir.join(format!("acme/k/v{v}")))).collect();
        ids.sort();
        ids
    };

    deploy(1);
    broker.produce("clicks", 2, &bodies(0..300));
    assert!(sluice_e2e::streams::eventually(Duration::from_secs(60), || handled().len() >= 300), "v1 consumed {}", handled().len());
    deploy(2);
    broker.produce("clicks", 2, &bodies(300..600));
    deploy(3);
    broker.produce("clicks", 2, &bodies(600..900));
    assert!(sluice_e2e::streams::eventually(Duration::from_secs(60), || handled().len() >= 900), "consumed {}", handled().len());
    assert_eq!(handled(), (0..900).collect::<Vec<_>>(), "every message handled once, by one version");
    let later_versions = ids_under(&server.data_dir.join("acme/k/v2")).len() + ids_under(&server.data_dir.join("acme/k/v3")).len();
    assert!(later_versions > 0, "the swapped-in versions took over the same consumer");

    let lag_reported = sluice_e2e::streams::eventually(Duration::from_secs(30), || {
        acme.get("/metrics").text().contains("sluice_kafka_consumer_lag{tenant=\"acme\",function=\"k\",topic=\"clicks\"")
    });
    assert!(lag_reported, "{}", acme.get("/metrics").text());
    assert_eq!(acme.delete("/v1/functions/k").status, 204, "deleting stops the consumer");
}
