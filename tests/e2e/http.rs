//! The HTTP trigger end to end: `sluice serve` as a child process, hundreds of concurrent
//! loopback connections, and each refusal path (413, 429, 504, handler error).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_e2e::streams::{Serve, free_port, function_dir, http_request, wait_for_port};

fn http_function(dir: &Path, name: &str, component: &str, trigger: &str, rest: &str) -> PathBuf {
    function_dir(dir, name, component, &format!("{rest}\n[[triggers]]\nkind = \"http\"\n{trigger}\n"))
}

/// Sends `requests` from `connections` threads at once; returns every (status, head, body).
fn load(port: u16, path: &str, connections: usize, requests: usize, body: impl Fn(usize) -> String + Send + Sync + 'static) -> Vec<(usize, u16, String, Vec<u8>)> {
    let body = Arc::new(body);
    let threads: Vec<_> = (0..connections)
        .map(|thread| {
            let (body, path) = (body.clone(), path.to_string());
            std::thread::spawn(move || {
                (0..requests)
                    .map(|n| {
                        let id = thread * requests + n;
                        let (status, head, reply) = http_request(port, "POST", &path, body(id).as_bytes()).expect("an answer");
                        (id, status, head, reply)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

#[test]
fn concurrent_requests_are_all_answered_and_each_refusal_has_its_status() {
    let work = tempfile::tempdir().unwrap();
    let limits = "[limits]\ninstances = 2\ntimeout-ms = 5000\nmemory-mb = 64\n";
    let echo = http_function(work.path(), "echo", "echo", "max-body-bytes = 1024\nqueue-depth = 1024", limits);
    let batched = http_function(
        work.path(),
        "echo-batched",
        "echo",
        "mode = \"batched\"\nqueue-depth = 1024",
        &format!("[batching]\nmax-events = 16\nmax-wait-ms = 20\n{limits}"),
    );
    let slow = http_function(
        work.path(),
        "slow",
        "echo",
        "queue-depth = 1",
        "[config]\nspin = \"400000000\"\n[limits]\ninstances = 1\ntimeout-ms = 20000\n",
    );
    let failing = http_function(work.path(), "failing", "misbehave", "", "[limits]\ntimeout-ms = 1000\nmemory-mb = 64\n");
    let port = free_port();
    let serve = Serve::start(&[&echo, &batched, &slow, &failing], &work.path().join("data"), port, work.path().join("serve.log"));
    wait_for_port(port, Duration::from_secs(60));

    for path in ["/functions/echo", "/functions/echo-batched"] {
        let answers = load(port, path, 200, 3, |id| format!("{{\"id\":{id}}}"));
        assert_eq!(answers.len(), 600);
        for (id, status, _, body) in &answers {
            assert_eq!(*status, 200, "{path} request {id}: {}", String::from_utf8_lossy(body));
            assert_eq!(String::from_utf8_lossy(body), format!("{{\"id\":{id}}}"), "{path}: each request gets its own reply");
        }
    }

    let (status, _, body) = http_request(port, "POST", "/functions/echo", &vec![b' '; 4096]).unwrap();
    assert_eq!(status, 413);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("1024 bytes"), "{error}");

    let answers = load(port, "/functions/slow", 12, 1, |id| format!("{{\"id\":{id}}}"));
    let busy: Vec<_> = answers.iter().filter(|(_, status, _, _)| *status == 429).collect();
    assert!(!busy.is_empty(), "a queue of one took twelve requests at once");
    assert!(busy.iter().all(|(_, _, head, _)| head.to_ascii_lowercase().contains("retry-after: 1")));
    assert!(answers.iter().all(|(_, status, _, _)| *status == 200 || *status == 429));

    let (status, _, body) = http_request(port, "POST", "/functions/failing", br#"{"action":"loop"}"#).unwrap();
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["cause"], "timeout");
    let (status, _, body) = http_request(port, "POST", "/functions/failing", br#"{"action":"error"}"#).unwrap();
    assert_eq!(status, 500);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("asked to fail"), "{error}");
    let (status, _, _) = http_request(port, "POST", "/functions/nobody", b"{}").unwrap();
    assert_eq!(status, 404);

    assert!(serve.terminate(Duration::from_secs(30)), "serve did not exit 0 on SIGTERM");
}
