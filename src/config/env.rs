//! App credentials from the environment (DESIGN section 5).
//!
//! `SHENGWANG_APP_ID` / `SHENGWANG_APP_CERTIFICATE`, with `AGORA_APP_ID` /
//! `AGORA_APP_CERTIFICATE` as fallbacks; every variable also has a `*_FILE`
//! variant naming a file to read it from (one trailing newline trimmed), for
//! Docker and Kubernetes secrets. The secondary certificate
//! (`*_CERTIFICATE_SECONDARY_FILE`) may name a file that does not exist: that
//! means "no secondary certificate", so a Kubernetes Secret key can come and
//! go during a rotation; every other `*_FILE` must exist.
//! `.env` in the working directory fills in
//! variables that are not set (it never overrides one that is). Values are
//! read through the [`Env`] trait, so tests use a map instead of the process
//! environment. Errors say what is wrong and where to get the values; they
//! never contain the certificate.

use std::collections::HashMap;
use std::path::Path;

use agora_token::{AppCertificate, AppId};

use crate::domain::AppCredentials;

/// Primary app id variable.
pub const APP_ID: &str = "SHENGWANG_APP_ID";
/// Primary app certificate variable.
pub const APP_CERTIFICATE: &str = "SHENGWANG_APP_CERTIFICATE";
/// Secondary certificate (accepted when verifying; for rotation).
pub const APP_CERTIFICATE_SECONDARY: &str = "SHENGWANG_APP_CERTIFICATE_SECONDARY";
/// Fallback app id variable.
pub const AGORA_APP_ID: &str = "AGORA_APP_ID";
/// Fallback app certificate variable.
pub const AGORA_APP_CERTIFICATE: &str = "AGORA_APP_CERTIFICATE";
/// Fallback secondary certificate variable.
pub const AGORA_APP_CERTIFICATE_SECONDARY: &str = "AGORA_APP_CERTIFICATE_SECONDARY";

const WHERE: &str =
    "find the App ID and App Certificate in the Agora / Shengwang console, project settings";

/// A source of variables.
pub trait Env {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment, completed by a `.env` file (which never
/// overrides a variable already set).
#[derive(Debug, Default)]
pub struct ProcessEnv {
    dotenv: HashMap<String, String>,
}

impl ProcessEnv {
    /// The process environment plus `.env` in the working directory, if any.
    pub fn load() -> Self {
        Self::with_dotenv(Path::new(".env"))
    }

    /// The process environment plus the given dotenv file, if it exists.
    pub fn with_dotenv(path: &Path) -> Self {
        let dotenv = std::fs::read_to_string(path)
            .map(|s| parse_dotenv(&s))
            .unwrap_or_default();
        Self { dotenv }
    }
}

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.dotenv.get(name).cloned())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Parses `KEY=VALUE` lines (`export ` prefix, `#` comments, single or
/// double quotes around the value).
pub fn parse_dotenv(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        map.insert(k.trim().to_owned(), v.to_owned());
    }
    map
}

/// Why credentials could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// Nothing set.
    #[error("{0} is not set (also looked for {0}_FILE, {1}, {1}_FILE and .env); {WHERE}")]
    Missing(&'static str, &'static str),
    /// The value is malformed.
    #[error("{name} {problem}; {WHERE}")]
    Malformed {
        /// The variable (or file) it came from.
        name: String,
        /// What is wrong (never the value of a certificate).
        problem: String,
    },
    /// A `*_FILE` could not be read.
    #[error("{name}: cannot read {path}: {reason}")]
    File {
        /// The variable.
        name: String,
        /// The path it names.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

/// Reads a secret file, trimming one trailing newline (`\n` or `\r\n`).
pub fn read_secret_file(name: &str, path: &str) -> Result<String, EnvError> {
    let mut s = std::fs::read_to_string(path).map_err(|e| EnvError::File {
        name: name.to_owned(),
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// Whether a `*_FILE` naming a file that does not exist counts as "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingFile {
    /// It is an error (required values and the primary certificate).
    Error,
    /// It is skipped (the secondary certificate).
    Unset,
}

/// The first of `names` (each also as `NAME_FILE`) that is set, with the
/// name it came from.
fn lookup(
    env: &impl Env,
    names: &[&str],
    missing: MissingFile,
) -> Result<Option<(String, String)>, EnvError> {
    for name in names {
        if let Some(v) = env.var(name) {
            return Ok(Some(((*name).to_owned(), v)));
        }
        let file_var = format!("{name}_FILE");
        if let Some(path) = env.var(&file_var) {
            if missing == MissingFile::Unset && !Path::new(&path).try_exists().unwrap_or(true) {
                continue;
            }
            let v = read_secret_file(&file_var, &path)?;
            return Ok(Some((file_var, v)));
        }
    }
    Ok(None)
}

/// The files named by the credential `*_FILE` variables that are set
/// (existing or not), for change detection.
pub fn credential_files(env: &impl Env) -> Vec<std::path::PathBuf> {
    [
        APP_ID,
        AGORA_APP_ID,
        APP_CERTIFICATE,
        AGORA_APP_CERTIFICATE,
        APP_CERTIFICATE_SECONDARY,
        AGORA_APP_CERTIFICATE_SECONDARY,
    ]
    .iter()
    .filter_map(|name| env.var(&format!("{name}_FILE")))
    .map(std::path::PathBuf::from)
    .collect()
}

/// The app id from the environment, if set.
pub fn app_id(env: &impl Env) -> Result<Option<AppId>, EnvError> {
    lookup(env, &[APP_ID, AGORA_APP_ID], MissingFile::Error)?
        .map(|(name, v)| {
            AppId::new(v.trim()).map_err(|e| EnvError::Malformed {
                name,
                problem: e.to_string(),
            })
        })
        .transpose()
}

fn load_certificate(
    env: &impl Env,
    names: &[&str],
    missing: MissingFile,
) -> Result<Option<AppCertificate>, EnvError> {
    lookup(env, names, missing)?
        .map(|(name, v)| {
            AppCertificate::new(v.trim()).map_err(|e| EnvError::Malformed {
                name,
                problem: e.to_string(),
            })
        })
        .transpose()
}

/// The app configured by the environment: id, certificate and optional
/// secondary certificate. Both id and certificate are required; a
/// secondary `*_FILE` that does not exist means no secondary certificate.
pub fn credentials(env: &impl Env) -> Result<AppCredentials, EnvError> {
    let app_id = app_id(env)?.ok_or(EnvError::Missing(APP_ID, AGORA_APP_ID))?;
    let certificate = load_certificate(
        env,
        &[APP_CERTIFICATE, AGORA_APP_CERTIFICATE],
        MissingFile::Error,
    )?
    .ok_or(EnvError::Missing(APP_CERTIFICATE, AGORA_APP_CERTIFICATE))?;
    let secondary = load_certificate(
        env,
        &[APP_CERTIFICATE_SECONDARY, AGORA_APP_CERTIFICATE_SECONDARY],
        MissingFile::Unset,
    )?;
    Ok(AppCredentials {
        app_id,
        certificate,
        secondary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const ID: &str = "970CA35de60c44645bbae8a215061b33";
    const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

    #[test]
    fn primary_names_win_over_fallbacks() {
        let e = env(&[(APP_ID, ID), (APP_CERTIFICATE, CERT), (AGORA_APP_ID, "bad")]);
        let c = credentials(&e).unwrap();
        assert_eq!(c.app_id.as_str(), ID);
        assert!(c.secondary.is_none());
        let e = env(&[(AGORA_APP_ID, ID), (AGORA_APP_CERTIFICATE, CERT)]);
        assert!(credentials(&e).is_ok());
    }

    #[test]
    fn missing_and_malformed_are_explained_without_the_secret() {
        let e = env(&[(APP_ID, ID)]);
        let err = credentials(&e).unwrap_err().to_string();
        assert!(err.contains(APP_CERTIFICATE), "{err}");
        let bad = "5CFd2fd1755d40ecb72977518be15d3!";
        let e = env(&[(APP_ID, ID), (APP_CERTIFICATE, bad)]);
        let err = credentials(&e).unwrap_err().to_string();
        assert!(
            err.contains(APP_CERTIFICATE) && err.contains("hexadecimal"),
            "{err}"
        );
        assert!(!err.contains(bad), "{err}");
    }

    #[test]
    fn file_variant_trims_one_newline() {
        let dir = std::env::temp_dir().join(format!("ta-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cert");
        std::fs::write(&path, format!("{CERT}\n")).unwrap();
        let p = path.to_string_lossy().into_owned();
        let e = env(&[(APP_ID, ID), ("SHENGWANG_APP_CERTIFICATE_FILE", &p)]);
        assert!(credentials(&e).is_ok());
        let e = env(&[
            (APP_ID, ID),
            ("SHENGWANG_APP_CERTIFICATE_FILE", "/nonexistent/x"),
        ]);
        assert!(matches!(credentials(&e), Err(EnvError::File { .. })));
    }

    #[test]
    fn secondary_file_may_be_missing_but_primary_may_not() {
        const OLD: &str = "0123456789abcdef0123456789abcdef";
        let dir = std::env::temp_dir().join(format!("ta-env-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let primary = dir.join("certificate");
        std::fs::write(&primary, format!("{CERT}\n")).unwrap();
        let secondary = dir.join("certificate-secondary");
        let _ = std::fs::remove_file(&secondary);
        let p = primary.to_string_lossy().into_owned();
        let s = secondary.to_string_lossy().into_owned();
        let e = env(&[
            (APP_ID, ID),
            ("SHENGWANG_APP_CERTIFICATE_FILE", &p),
            ("SHENGWANG_APP_CERTIFICATE_SECONDARY_FILE", &s),
        ]);
        // Missing: no secondary, and the fallback name is still consulted.
        assert!(credentials(&e).unwrap().secondary.is_none());
        let mut with_fallback = e.clone();
        with_fallback.insert(AGORA_APP_CERTIFICATE_SECONDARY.to_owned(), OLD.to_owned());
        assert!(credentials(&with_fallback).unwrap().secondary.is_some());
        // Present: loaded; malformed: an error that does not echo it.
        std::fs::write(&secondary, format!("{OLD}\n")).unwrap();
        assert!(credentials(&e).unwrap().secondary.is_some());
        std::fs::write(&secondary, "not-a-certificate\n").unwrap();
        let err = credentials(&e).unwrap_err().to_string();
        assert!(
            err.contains("SHENGWANG_APP_CERTIFICATE_SECONDARY_FILE"),
            "{err}"
        );
        assert!(!err.contains("not-a-certificate"), "{err}");
        // The primary's missing file stays an error.
        std::fs::remove_file(&primary).unwrap();
        assert!(matches!(credentials(&e), Err(EnvError::File { .. })));
        assert_eq!(credential_files(&e), vec![primary, secondary]);
    }

    #[test]
    fn dotenv_syntax() {
        let m = parse_dotenv("# c\nexport A=1\nB=\"two words\"\nC='x'\nnoise\n");
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "x");
    }
}
