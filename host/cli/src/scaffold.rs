//! `sluice new`: a handler crate that builds and runs as it is — Cargo.toml on the guest SDK,
//! a handler, a manifest with a file and an HTTP trigger, the wasm32-wasip2 build config and a
//! sample input. The files are templates under `host/cli/templates/handler/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct NewArgs {
    /// The function's name (a letter, then letters, digits, `-` and `_`); also the crate's.
    name: String,
    /// Directory to create (default: ./<name>).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The guest SDK crate (default: the `guest-sdk` of the sluice checkout this binary was built from).
    #[arg(long)]
    sdk_path: Option<PathBuf>,
    /// Cargo's target directory for the crate (default: `target` inside it); one shared by
    /// several handlers compiles the SDK once.
    #[arg(long)]
    target_dir: Option<PathBuf>,
}

/// Each scaffolded file: its path in the new crate and its template.
const TEMPLATES: [(&str, &str); 6] = [
    ("Cargo.toml", include_str!("../templates/handler/Cargo.toml.tmpl")),
    (".cargo/config.toml", include_str!("../templates/handler/config.toml.tmpl")),
    ("sluice.toml", include_str!("../templates/handler/sluice.toml.tmpl")),
    ("src/lib.rs", include_str!("../templates/handler/lib.rs.tmpl")),
    ("sample.jsonl", include_str!("../templates/handler/sample.jsonl")),
    (".gitignore", include_str!("../templates/handler/gitignore.tmpl")),
];

/// The guest SDK next to this binary's sources, known when it was compiled.
const CHECKOUT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest-sdk");

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("function name `{0}` must start with a letter and use only letters, digits, `-` and `_`")]
    BadName(String),
    #[error("{0} already exists and is not empty; choose another name or --dir")]
    NotEmpty(PathBuf),
    #[error("no guest SDK at {0} (no Cargo.toml there): pass --sdk-path to the sluice checkout's guest-sdk")]
    NoSdk(PathBuf),
}

/// What the templates are filled with.
struct Scaffold {
    name: String,
    sdk_path: PathBuf,
    target_dir: PathBuf,
}

impl Scaffold {
    /// The component cargo builds, as the manifest names it (relative to the crate, or absolute
    /// under a shared target directory).
    fn component(&self) -> PathBuf {
        self.target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", self.name.replace('-', "_")))
    }

    fn render(&self, template: &str) -> String {
        template
            .replace("{{name}}", &self.name)
            .replace("{{sdk_path}}", &toml_string(&self.sdk_path))
            .replace("{{target_dir}}", &toml_string(&self.target_dir))
            .replace("{{component}}", &toml_string(&self.component()))
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        for (relative, template) in TEMPLATES {
            let path = dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, self.render(template)).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Starts the crate's lockfile from the SDK's, so it builds with the dependency versions the
/// SDK was tested with (and without a registry lookup when those are already downloaded).
fn pin_sdk_dependencies(sdk_path: &Path, dir: &Path) -> anyhow::Result<()> {
    let sdk_lock = sdk_path.join("Cargo.lock");
    if sdk_lock.is_file() {
        std::fs::copy(&sdk_lock, dir.join("Cargo.lock")).with_context(|| format!("copying {}", sdk_lock.display()))?;
    }
    Ok(())
}

/// A TOML basic string holding `path`.
fn toml_string(path: &Path) -> String {
    format!("\"{}\"", path.display().to_string().replace('\\', "\\\\").replace('"', "\\\""))
}

fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if starts_with_letter && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(())
    } else {
        Err(ScaffoldError::BadName(name.to_string()))
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    let occupied = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied || dir.is_file() {
        return Err(ScaffoldError::NotEmpty(dir).into());
    }
    let sdk = args.sdk_path.clone().unwrap_or_else(|| PathBuf::from(CHECKOUT_SDK));
    let sdk_path = sdk.canonicalize().ok().filter(|sdk| sdk.join("Cargo.toml").is_file()).ok_or(ScaffoldError::NoSdk(sdk))?;
    let target_dir = match &args.target_dir {
        Some(shared) => absolute(shared)?,
        None => PathBuf::from("target"),
    };
    let scaffold = Scaffold { name: args.name.clone(), sdk_path, target_dir };
    scaffold.write(&dir)?;
    pin_sdk_dependencies(&scaffold.sdk_path, &dir)?;
    let shown = dir.display();
    println!("created {shown}: handler crate `{}` on the guest SDK at {}", args.name, scaffold.sdk_path.display());
    println!("  sluice run {shown} --input {shown}/sample.jsonl   # build it and run it over the sample");
    println!("  sluice dev {shown}                                # serve its HTTP trigger, rebuild and swap on save");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use sluice_manifest::{Manifest, TriggerSpec};

    use super::*;

    fn scaffold(target_dir: &str) -> Scaffold {
        Scaffold { name: "my-fn".into(), sdk_path: PathBuf::from("/opt/sluice/guest-sdk"), target_dir: target_dir.into() }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for (relative, template) in TEMPLATES {
            let text = scaffold("target").render(template);
            assert!(!text.contains("{{"), "{relative} keeps a placeholder:\n{text}");
        }
    }

    #[test]
    fn the_manifest_names_a_file_and_an_http_trigger_and_the_built_component() {
        let dir = tempfile::tempdir().unwrap();
        scaffold("target").write(dir.path()).unwrap();
        let manifest = Manifest::load(dir.path()).unwrap();
        assert_eq!(manifest.name, "my-fn");
        assert_eq!(manifest.component_path(), dir.path().join("target/wasm32-wasip2/release/my_fn.wasm"));
        assert!(matches!(manifest.triggers[..], [TriggerSpec::File { .. }, TriggerSpec::Http(_)]));
        let cargo = std::fs::read_to_string(dir.path().join("Cargo.toml")).unwrap();
        assert!(cargo.contains("sluice-sdk = { path = \"/opt/sluice/guest-sdk\" }"), "{cargo}");

        let shared = tempfile::tempdir().unwrap();
        scaffold(shared.path().to_str().unwrap()).write(&dir.path().join("other")).unwrap();
        let manifest = Manifest::load(&dir.path().join("other")).unwrap();
        assert_eq!(manifest.component_path(), shared.path().join("wasm32-wasip2/release/my_fn.wasm"));
    }

    #[test]
    fn the_crate_starts_from_the_sdks_lockfile() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = dir.path().join("sdk");
        std::fs::create_dir_all(&sdk).unwrap();
        std::fs::write(sdk.join("Cargo.toml"), "[package]\nname = \"sluice-sdk\"\n").unwrap();
        std::fs::write(sdk.join("Cargo.lock"), "version = 4\n").unwrap();
        let crate_dir = dir.path().join("made");
        let args = NewArgs { name: "made".into(), dir: Some(crate_dir.clone()), sdk_path: Some(sdk), target_dir: None };
        new(args).unwrap();
        assert_eq!(std::fs::read_to_string(crate_dir.join("Cargo.lock")).unwrap(), "version = 4\n");
        assert!(crate_dir.join("src/lib.rs").is_file() && crate_dir.join(".cargo/config.toml").is_file());
    }

    #[test]
    fn bad_names_and_occupied_directories_are_refused() {
        for bad in ["", "1st", "-x", "a b", "a/b", "ü"] {
            assert!(matches!(check_name(bad), Err(ScaffoldError::BadName(_))), "{bad:?}");
        }
        check_name("hello_World-2").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let args = NewArgs { name: "x".into(), dir: Some(dir.path().to_path_buf()), sdk_path: None, target_dir: None };
        let error = new(args).unwrap_err();
        assert!(error.to_string().contains("already exists and is not empty"), "{error}");
        assert_eq!(std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(), "mine");
    }

    #[test]
    fn a_missing_sdk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = dir.path().join("no-sdk");
        let args = NewArgs { name: "x".into(), dir: Some(dir.path().join("x")), sdk_path: Some(sdk), target_dir: None };
        let error = new(args).unwrap_err().to_string();
        assert!(error.contains("no-sdk") && error.contains("--sdk-path"), "{error}");
        assert!(!dir.path().join("x").exists(), "nothing is written when the SDK is missing");
    }
}
