//! The function store on disk, the control plane's only durable state:
//!
//! ```text
//! <state-dir>/blobs/<sha256>.wasm                        component bytes, by content hash
//! <state-dir>/tenants/<tenant>/tenant.json               name, token hash, quotas
//! <state-dir>/tenants/<tenant>/functions/<f>/function.json   versions and the active one
//! <state-dir>/tenants/<tenant>/functions/<f>/v<N>.toml   the manifest of version N
//! ```
//!
//! Every file is written to a temporary name, fsynced and renamed, so a crash leaves either
//! the old or the new state. Versions are never rewritten; a blob is shared by every version
//! (of any tenant) with the same bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_runtime::content_hash;

use crate::quotas::Quotas;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("function store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("function store {path}: unreadable record: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// A tenant as stored: the token only as its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    pub token_sha256: String,
    pub quotas: Quotas,
}

/// One immutable version of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    /// Hex SHA-256 of the component bytes.
    pub hash: String,
    pub size_bytes: u64,
    /// RFC 3339, UTC.
    pub deployed_at: String,
}

/// A function's history and which version serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    pub active_version: u64,
    pub versions: Vec<VersionRecord>,
}

impl FunctionRecord {
    pub fn version(&self, version: u64) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for dir in [root.join("blobs"), root.join("tenants")] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.root.join("tenants").join(tenant)
    }

    fn function_dir(&self, tenant: &str, function: &str) -> PathBuf {
        self.tenant_dir(tenant).join("functions").join(function)
    }

    fn blob_path(&self, hash: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{hash}.wasm"))
    }

    /// Every tenant, sorted by name.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let mut tenants = Vec::new();
        for dir in sorted_dirs(&self.root.join("tenants"))? {
            tenants.push(read_json(&dir.join("tenant.json"))?);
        }
        Ok(tenants)
    }

    pub fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError> {
        let dir = self.tenant_dir(&tenant.name);
        std::fs::create_dir_all(dir.join("functions")).map_err(io(&dir))?;
        write_json(&dir.join("tenant.json"), tenant)
    }

    /// Removes the tenant and every function record of it (blobs stay: other versions may share them).
    pub fn delete_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        remove_dir(&self.tenant_dir(tenant))
    }

    /// Every function of a tenant, sorted by name.
    pub fn functions(&self, tenant: &str) -> Result<Vec<FunctionRecord>, StoreError> {
        let mut functions = Vec::new();
        for dir in sorted_dirs(&self.tenant_dir(tenant).join("functions"))? {
            functions.push(read_json(&dir.join("function.json"))?);
        }
        Ok(functions)
    }

    /// Stores a new version's component and manifest; the caller then records it with
    /// [`Store::put_function`]. Returns the version record.
    pub fn add_version(
        &self,
        tenant: &str,
        function: &str,
        version: u64,
        manifest_text: &str,
        component: &[u8],
    ) -> Result<VersionRecord, StoreError> {
        let hash = content_hash(component);
        let blob = self.blob_path(&hash);
        if !blob.is_file() {
            write_atomically(&blob, component)?;
        }
        let dir = self.function_dir(tenant, function);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_atomically(&dir.join(format!("v{version}.toml")), manifest_text.as_bytes())?;
        Ok(VersionRecord {
            version,
            hash,
            size_bytes: component.len() as u64,
            deployed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    pub fn put_function(&self, tenant: &str, record: &FunctionRecord) -> Result<(), StoreError> {
        write_json(&self.function_dir(tenant, &record.name).join("function.json"), record)
    }

    pub fn delete_function(&self, tenant: &str, function: &str) -> Result<(), StoreError> {
        remove_dir(&self.function_dir(tenant, function))
    }

    /// The manifest text and component bytes of one stored version.
    pub fn load_version(&self, tenant: &str, function: &str, version: &VersionRecord) -> Result<(String, Vec<u8>), StoreError> {
        let manifest = self.function_dir(tenant, function).join(format!("v{}.toml", version.version));
        let text = std::fs::read_to_string(&manifest).map_err(io(&manifest))?;
        let blob = self.blob_path(&version.hash);
        let bytes = std::fs::read(&blob).map_err(io(&blob))?;
        Ok((text, bytes))
    }
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path: path.to_path_buf(), source })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).expect("store records serialize");
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary sibling, fsyncs it, renames it over `path` and fsyncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("store paths have a parent");
    let temp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().expect("store paths name a file").to_string_lossy(),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
    file.write_all(bytes).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    std::fs::rename(&temp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io { path: dir.to_path_buf(), source: error }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_functions_and_versions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tenant = TenantRecord { name: "acme".into(), token_sha256: "ab".into(), quotas: Quotas::default() };
        store.put_tenant(&tenant).unwrap();
        let v1 = store.add_version("acme", "f", 1, "name = \"f\"", b"bytes-1").unwrap();
        let v2 = store.add_version("acme", "f", 2, "name = \"f\" # 2", b"bytes-1").unwrap();
        assert_eq!(v1.hash, v2.hash, "same bytes, same blob");
        let record = FunctionRecord { name: "f".into(), active_version: 2, versions: vec![v1.clone(), v2] };
        store.put_function("acme", &record).unwrap();

        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.tenants().unwrap()[0].name, "acme");
        let functions = reopened.functions("acme").unwrap();
        assert_eq!((functions.len(), functions[0].active_version), (1, 2));
        let (text, bytes) = reopened.load_version("acme", "f", &v1).unwrap();
        assert_eq!((text.as_str(), bytes.as_slice()), ("name = \"f\"", b"bytes-1".as_slice()));

        reopened.delete_function("acme", "f").unwrap();
        assert!(reopened.functions("acme").unwrap().is_empty());
        reopened.delete_tenant("acme").unwrap();
        assert!(reopened.tenants().unwrap().is_empty());
    }
}
