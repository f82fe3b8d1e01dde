//! Finding the model files: on disk (checked against the manifest's sha256) or embedded.
//!
//! Search order: `--models-dir`, `[models] dir`, `$HARK_MODELS`, `/usr/share/hark/models`,
//! `./models`. A file found on disk wins over the embedded copy so a device can take a new model
//! without a new binary; a file that is there but corrupt is an error, never silently skipped.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ModelsConfig;

/// The command that fetches every model, named in errors.
pub const FETCH_COMMAND: &str = "python3 models/fetch.py   (in the hark source tree)";

/// The environment variable naming a models directory.
pub const ENV_MODELS: &str = "HARK_MODELS";

/// The on-device models hark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelId {
    /// Silero VAD v6, If-less opset-18 export.
    SileroVad,
    /// Smart Turn v3.2, int8.
    SmartTurn,
}

impl ModelId {
    /// Every model.
    pub const ALL: [ModelId; 2] = [ModelId::SileroVad, ModelId::SmartTurn];

    /// The name in `models/manifest.toml`.
    pub fn name(self) -> &'static str {
        match self {
            ModelId::SileroVad => "silero-vad",
            ModelId::SmartTurn => "smart-turn",
        }
    }

    /// The file name inside a models directory.
    pub fn file_name(self) -> &'static str {
        match self {
            ModelId::SileroVad => "silero_vad_op18_ifless.onnx",
            ModelId::SmartTurn => "smart-turn-v3.2-cpu.onnx",
        }
    }

    fn bundled(self) -> Option<&'static [u8]> {
        #[cfg(feature = "bundled-models")]
        {
            Some(match self {
                ModelId::SileroVad => include_bytes!("../../models/silero_vad_op18_ifless.onnx"),
                ModelId::SmartTurn => include_bytes!("../../models/smart-turn-v3.2-cpu.onnx"),
            })
        }
        #[cfg(not(feature = "bundled-models"))]
        {
            None
        }
    }

    /// The expected sha256, from the manifest compiled into the binary.
    pub fn sha256(self) -> &'static str {
        &manifest()
            .model
            .iter()
            .find(|m| m.name == self.name())
            .expect("models/manifest.toml lists every ModelId")
            .sha256
    }
}

/// The demo recording `hark listen` uses when given no file (real speech, MIT).
pub fn demo_speech() -> Option<&'static [u8]> {
    #[cfg(feature = "bundled-models")]
    {
        Some(include_bytes!("../../models/speech/beckett.wav"))
    }
    #[cfg(not(feature = "bundled-models"))]
    {
        None
    }
}

#[derive(Deserialize)]
struct Manifest {
    model: Vec<ManifestEntry>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    name: String,
    sha256: String,
}

fn manifest() -> &'static Manifest {
    static M: OnceLock<Manifest> = OnceLock::new();
    M.get_or_init(|| {
        toml::from_str(include_str!("../../models/manifest.toml"))
            .expect("models/manifest.toml is valid (checked by tests)")
    })
}

/// A model that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not on disk anywhere and not embedded.
    #[error(
        "model {name} ({file}) not found; looked in: {searched}. Fetch it with: {FETCH_COMMAND}, \
             or point --models-dir / $HARK_MODELS at a directory that has it"
    )]
    Missing {
        /// Manifest name.
        name: &'static str,
        /// File name.
        file: &'static str,
        /// The directories searched.
        searched: String,
    },
    /// On disk but not the file the manifest pins.
    #[error(
        "model file {path} is corrupt or not the expected version (sha256 {found}, expected \
             {expected}). Fetch it again with: {FETCH_COMMAND}"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its digest.
        found: String,
        /// The manifest's digest.
        expected: &'static str,
    },
    /// On disk but unreadable.
    #[error("model file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where a loaded model came from, for `hark check` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A verified file.
    File(PathBuf),
    /// The copy embedded in the binary.
    Bundled,
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::File(p) => write!(f, "{}", p.display()),
            ModelSource::Bundled => f.write_str("embedded in the binary"),
        }
    }
}

/// The model directories, in search order.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dirs: Vec<PathBuf>,
    onnxruntime: Option<PathBuf>,
    embedded: bool,
}

impl ModelStore {
    /// The search path from the command line, the config and the environment.
    pub fn new(cli_dir: Option<&Path>, config: &ModelsConfig) -> Self {
        let mut dirs: Vec<PathBuf> = Vec::new();
        dirs.extend(cli_dir.map(Path::to_path_buf));
        dirs.extend(config.dir.clone());
        dirs.extend(
            std::env::var_os(ENV_MODELS)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        );
        dirs.push(PathBuf::from("/usr/share/hark/models"));
        dirs.push(PathBuf::from("models"));
        Self {
            dirs,
            onnxruntime: config.onnxruntime.clone(),
            embedded: true,
        }
    }

    /// Only these directories (tests, and devices that want no surprises).
    pub fn with_dirs(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            onnxruntime: None,
            embedded: true,
        }
    }

    /// Never fall back to the embedded copies: a model must be on disk.
    pub fn disk_only(mut self) -> Self {
        self.embedded = false;
        self
    }

    /// The directories searched, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The model's bytes: the first file found (verified), else the embedded copy.
    pub fn load(&self, id: ModelId) -> Result<(Cow<'static, [u8]>, ModelSource), ModelError> {
        for dir in &self.dirs {
            let path = dir.join(id.file_name());
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let found = hex(&Sha256::digest(&bytes));
                    if found != id.sha256() {
                        return Err(ModelError::Corrupt {
                            path,
                            found,
                            expected: id.sha256(),
                        });
                    }
                    return Ok((Cow::Owned(bytes), ModelSource::File(path)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ModelError::Read { path, source }),
            }
        }
        id.bundled()
            .filter(|_| self.embedded)
            .map(|b| (Cow::Borrowed(b), ModelSource::Bundled))
            .ok_or_else(|| ModelError::Missing {
                name: id.name(),
                file: id.file_name(),
                searched: self
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// `libonnxruntime.so`: `[models] onnxruntime`, else `lib/<arch>/` in a models directory,
    /// else next to the executable.
    pub fn onnxruntime_library(&self) -> Option<PathBuf> {
        if let Some(p) = &self.onnxruntime {
            return Some(p.clone());
        }
        let rel = Path::new("lib")
            .join(std::env::consts::ARCH)
            .join("libonnxruntime.so");
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf));
        self.dirs
            .iter()
            .map(|d| d.join(&rel))
            .chain(exe_dir.map(|d| d.join("libonnxruntime.so")))
            .find(|p| p.is_file())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hark-models-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn manifest_lists_every_model_with_a_checksum() {
        for id in ModelId::ALL {
            assert_eq!(id.sha256().len(), 64, "{}", id.name());
        }
    }

    #[test]
    fn corrupt_file_is_an_error_naming_path_and_fetch_command() {
        let dir = scratch("corrupt");
        std::fs::write(dir.join(ModelId::SmartTurn.file_name()), b"not a model").unwrap();
        let store = ModelStore::with_dirs(vec![dir.clone()]);
        let msg = store.load(ModelId::SmartTurn).unwrap_err().to_string();
        assert!(
            msg.contains(&dir.join("smart-turn-v3.2-cpu.onnx").display().to_string()),
            "{msg}"
        );
        assert!(
            msg.contains("corrupt") && msg.contains("models/fetch.py"),
            "{msg}"
        );
    }

    #[test]
    fn missing_model_names_the_search_path_and_the_fetch_command() {
        let dir = scratch("missing");
        let msg = ModelStore::with_dirs(vec![dir.clone()])
            .disk_only()
            .load(ModelId::SileroVad)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("model silero-vad (silero_vad_op18_ifless.onnx) not found"),
            "{msg}"
        );
        assert!(
            msg.contains(&dir.display().to_string()) && msg.contains("models/fetch.py"),
            "{msg}"
        );
    }

    #[test]
    fn verified_file_on_disk_wins_over_the_embedded_copy() {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
        let store = ModelStore::with_dirs(vec![scratch("empty"), repo.clone()]);
        let (bytes, source) = store.load(ModelId::SileroVad).unwrap();
        assert_eq!(
            source,
            ModelSource::File(repo.join(ModelId::SileroVad.file_name()))
        );
        assert!(bytes.len() > 1_000_000);
    }

    #[cfg(feature = "bundled-models")]
    #[test]
    fn embedded_copy_is_used_when_no_directory_has_the_model() {
        let store = ModelStore::with_dirs(vec![scratch("none")]);
        let (bytes, source) = store.load(ModelId::SmartTurn).unwrap();
        assert_eq!(source, ModelSource::Bundled);
        assert_eq!(hex(&Sha256::digest(&bytes)), ModelId::SmartTurn.sha256());
    }
}
