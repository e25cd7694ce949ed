//! Building a function's component with the command its manifest names, when its sources
//! are newer than the component (or it does not exist yet).

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, bail};
use sluice_manifest::Manifest;

/// The target every handler is built for; rustup does not add it by itself here.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Builds the component if it is missing or older than any source in the function's directory.
pub fn build_if_needed(manifest: &Manifest, force: bool) -> anyhow::Result<bool> {
    let component = manifest.component_path();
    if !force && is_fresh(&component, &manifest.dir) {
        return Ok(false);
    }
    let Some(command) = &manifest.build else {
        if component.is_file() {
            return Ok(false);
        }
        bail!("component {} does not exist and the manifest has no `build` command", component.display());
    };
    ensure_wasm_target();
    eprintln!("building {} ({command})", manifest.name);
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(&manifest.dir)
        .status()
        .with_context(|| format!("cannot run build command `{command}`"))?;
    if !status.success() {
        bail!("build command `{command}` failed ({status}) in {}", manifest.dir.display());
    }
    if !component.is_file() {
        bail!("build command `{command}` succeeded but {} does not exist", component.display());
    }
    Ok(true)
}

/// Adds the wasm target through rustup when rustup is present; a toolchain without rustup
/// is assumed to have it.
fn ensure_wasm_target() {
    let added = Command::new("rustup").args(["target", "add", WASM_TARGET]).output();
    if let Ok(output) = added
        && !output.status.success()
    {
        tracing::warn!(stderr = %String::from_utf8_lossy(&output.stderr), "rustup target add {WASM_TARGET} failed");
    }
}

fn is_fresh(component: &Path, dir: &Path) -> bool {
    let Ok(built) = component.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    newest_source(dir).is_none_or(|newest| newest <= built)
}

/// The newest modification time among the function's sources (skipping build output).
fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_older_than_its_sources_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("target/f.wasm");
        std::fs::create_dir_all(component.parent().unwrap()).unwrap();
        std::fs::write(dir.path().join("lib.rs"), "").unwrap();
        assert!(!is_fresh(&component, dir.path()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&component, "").unwrap();
        assert!(is_fresh(&component, dir.path()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("lib.rs"), "// changed").unwrap();
        assert!(!is_fresh(&component, dir.path()));
    }
}
