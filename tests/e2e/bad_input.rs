//! Every bad input of the foundation issue, through the real host and real components:
//! each gets an error naming what was wrong, and nothing already accepted is lost.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_e2e::{component, manifest, read_parquet, repo_root, row_count, runtime, sluice_bin, temp_files};
use sluice_manifest::{BadLines, Batching, FileMode, Manifest};
use sluice_runtime::{InvokeError, LoadError, RuntimeConfig};
use sluice_triggers::{FileRunError, FileTrigger};

fn write_lines(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn trigger(manifest: &Manifest, mode: FileMode, bad_lines: BadLines) -> FileTrigger {
    FileTrigger { mode, bad_lines, batching: Batching { max_events: 1, ..manifest.batching.clone() } }
}

fn dead_letter_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    for entry in std::fs::read_dir(dir.join(sluice_runtime::DEAD_LETTER_DIR)).unwrap().flatten() {
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            records.push(serde_json::from_str(line).unwrap());
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_line_with_policy_fail_names_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_lines(dir.path(), "events.jsonl", &[r#"{"action":"ok","n":1}"#, r#"{"action":"ok","n":2}"#, r#"{"action":"ok","n":"#]);
    let manifest = manifest("misbehave");
    let data = dir.path().join("data");
    let function = runtime().load_function(&manifest, &data).unwrap();

    let error = trigger(&manifest, FileMode::Whole, BadLines::Fail)
        .run(&function, &[input.clone()], &())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, FileRunError::Stopped { .. }), "{message}");
    assert!(message.contains(&input.display().to_string()), "names the file: {message}");
    assert!(message.contains("line 3"), "names the line: {message}");
    assert!(read_parquet(&data).is_empty(), "nothing of the batch may be written");
    assert!(temp_files(&data).is_empty(), "no temporary files left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_lines_with_policy_skip_go_to_the_dead_letter_file_and_the_rest_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_lines(
        dir.path(),
        "events.jsonl",
        &[r#"{"action":"ok","n":1}"#, "not json", r#"{"action":"ok","n":3}"#, r#"{"action":"ok","n":}"#, r#"{"action":"ok","n":5}"#],
    );
    let manifest = manifest("misbehave");
    let data = dir.path().join("data");
    let function = runtime().load_function(&manifest, &data).unwrap();

    let run = trigger(&manifest, FileMode::Whole, BadLines::Skip).run(&function, &[input], &()).await.unwrap();
    assert_eq!(run.skipped_lines, 2);
    assert!(run.failed.is_empty());
    assert_eq!(row_count(&read_parquet(&data.join("events"))), 3);
    let dead: Vec<(u64, String)> = dead_letter_lines(&data)
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["text"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(dead, vec![(2, "not json".to_string()), (4, r#"{"action":"ok","n":}"#.to_string())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn traps_timeouts_and_memory_growth_fail_their_batch_only() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_lines(
        dir.path(),
        "events.jsonl",
        &[
            r#"{"action":"ok","n":1}"#,
            r#"{"action":"panic","n":2}"#,
            r#"{"action":"ok","n":3}"#,
            r#"{"action":"loop","n":4}"#,
            r#"{"action":"ok","n":5}"#,
            r#"{"action":"grow","n":6}"#,
            r#"{"action":"ok","n":7}"#,
        ],
    );
    let manifest = manifest("misbehave");
    let data = dir.path().join("data");
    let function = runtime().load_function(&manifest, &data).unwrap();

    let run = trigger(&manifest, FileMode::Chunked, BadLines::Fail).run(&function, &[input], &()).await.unwrap();
    assert_eq!(run.batches, 7);
    let errors: Vec<&InvokeError> = run.failed.iter().map(|f| &f.error).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        matches!(errors[0], InvokeError::Trap { stderr, .. } if stderr.contains("handler was asked to panic")),
        "the panic message is reported: {}",
        errors[0]
    );
    assert!(matches!(errors[1], InvokeError::Timeout { limit_ms: 2000 }), "{}", errors[1]);
    assert!(matches!(errors[2], InvokeError::MemoryLimit { limit_mb: 64 }), "{}", errors[2]);

    let written = read_parquet(&data.join("events"));
    assert_eq!(row_count(&written), 4, "every ok batch ran and was written");
    let failed_lines: Vec<u64> = dead_letter_lines(&data).iter().map(|r| r["line"].as_u64().unwrap()).collect();
    let mut failed_lines = failed_lines;
    failed_lines.sort();
    assert_eq!(failed_lines, vec![2, 4, 6], "the failed batches' events are dead-lettered");
    assert!(temp_files(&data).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn host_errors_name_the_column_the_types_and_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_lines(
        dir.path(),
        "events.jsonl",
        &[r#"{"action":"missing-column"}"#, r#"{"action":"type-mismatch"}"#, r#"{"action":"unknown-sink"}"#, r#"{"action":"ok"}"#],
    );
    let manifest = manifest("misbehave");
    let data = dir.path().join("data");
    let function = runtime().load_function(&manifest, &data).unwrap();

    let run = trigger(&manifest, FileMode::Chunked, BadLines::Fail).run(&function, &[input], &()).await.unwrap();
    let messages: Vec<(String, String)> = run
        .failed
        .iter()
        .map(|f| match &f.error {
            InvokeError::Handler { code, message } => (code.clone(), message.clone()),
            other => panic!("expected a handler error, got {other}"),
        })
        .collect();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0].0, "column-not-found");
    assert!(messages[0].1.contains("no_such_column") && messages[0].1.contains("action"), "{}", messages[0].1);
    assert_eq!(messages[1].0, "type-mismatch");
    assert!(messages[1].1.contains("utf8") && messages[1].1.contains("+"), "{}", messages[1].1);
    assert_eq!(messages[2].0, "invalid-argument");
    assert!(messages[2].1.contains("no-such-sink") && messages[2].1.contains("events"), "{}", messages[2].1);
    assert_eq!(row_count(&read_parquet(&data.join("events"))), 1, "the ok batch after them ran");
}

#[test]
fn non_components_and_other_worlds_are_refused_with_the_reason() {
    let runtime = runtime();
    let core_module = b"\0asm\x01\0\0\0";
    assert!(matches!(runtime.load_component(core_module), Err(LoadError::CoreModule)));
    assert!(matches!(runtime.load_component(b"#!/bin/sh\necho hi\n"), Err(LoadError::NotWasm)));

    let command = std::fs::read(component("wrong-world")).unwrap();
    let error = runtime.load_component(&command).err().expect("a wasi:cli command must be refused");
    let message = error.to_string();
    assert!(matches!(error, LoadError::WrongWorld(_)), "{message}");
    assert!(message.contains("wasi:cli/run"), "names what it exports instead: {message}");

    let mut truncated = std::fs::read(component("misbehave")).unwrap();
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(runtime.load_component(&truncated), Err(LoadError::Compile(_))));
}

#[test]
fn sluice_run_refuses_a_core_module_naming_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("module.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.path().join("sluice.toml"), "name = \"core\"\ncomponent = \"module.wasm\"\n").unwrap();
    let input = write_lines(dir.path(), "in.jsonl", &["{}"]);
    let output = Command::new(sluice_bin())
        .arg("run")
        .arg(dir.path())
        .arg("--input")
        .arg(&input)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("core WebAssembly module, not a component"), "{stderr}");
}

#[test]
fn compiled_components_are_cached_by_content_hash() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig { cache_dir: Some(cache.path().to_path_buf()), ..RuntimeConfig::default() };
    let bytes = std::fs::read(component("misbehave")).unwrap();
    let first = sluice_runtime::Runtime::new(config.clone()).unwrap().load_component(&bytes).unwrap();
    assert!(!first.cached);
    let second = sluice_runtime::Runtime::new(config).unwrap().load_component(&bytes).unwrap();
    assert!(second.cached, "a second host loads the compiled artifact from disk");
    assert_eq!(first.hash, sluice_runtime::content_hash(&bytes));
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
}
