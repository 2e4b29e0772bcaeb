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
//! variables that are not set (it never overrides one that is); the process
//! environment itself is never modified. Values are
//! read through the [`Env`] trait, so tests use a map instead of the process
//! environment. Errors say what is wrong and where to get the values; they
//! never contain the certificate.
//!
//! # `.env` syntax
//!
//! The file is read with [`dotenvy`]'s parser (never its loader, which
//! would set process variables):
//!
//! - `KEY=VALUE`, one per line, optionally preceded by `export `; spaces
//!   around `=` are allowed. A key starts with a letter or `_` and holds
//!   letters, digits, `_` and `.`.
//! - Blank lines and lines starting with `#` are ignored. A `#` after
//!   whitespace starts a comment (`KEY=value # note` is `value`); without
//!   whitespace it is part of the value (`KEY=a#b` is `a#b`).
//! - `'single quotes'` keep everything literally; `"double quotes"` allow
//!   `\"`, `\\`, `\$` and `\n` escapes and may span several lines. An
//!   unquoted value may not contain unescaped whitespace (`KEY=a b` is an
//!   error: quote it).
//! - `${NAME}` in unquoted or double-quoted values is replaced by the
//!   process variable, else by an earlier line of the file, else by nothing
//!   (`$NAME` too, but it ends at the first character that is not a letter
//!   or digit: `$A_B` is `${A}_B`); use single quotes or `\$` for a
//!   literal `$`.
//! - A key given twice: the last line wins.
//!
//! A line that does not parse is skipped with a warning on stderr naming the
//! file and line number, never the line's content (it may hold a secret);
//! the other lines are still used. An unclosed quote swallows the rest of
//! the file, and the warning says so. A missing `.env` is not an error.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Read;
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
    /// Lines that do not parse, and a file that exists but cannot be read,
    /// are reported on stderr (line numbers only, never values).
    pub fn with_dotenv(path: &Path) -> Self {
        let dotenv = match std::fs::read_to_string(path) {
            Ok(text) => {
                let parsed = parse_dotenv(&text);
                for bad in &parsed.bad_lines {
                    eprintln!("warning: {}: {bad}", path.display());
                }
                parsed.vars
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                eprintln!("warning: {}: not read: {e}", path.display());
                HashMap::new()
            }
        };
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

/// A parsed `.env` file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dotenv {
    /// The variables (for a key given twice, the last value).
    pub vars: HashMap<String, String>,
    /// One message per line that did not parse, naming its line number
    /// (1-based) but not its content.
    pub bad_lines: Vec<String>,
}

/// Parses a `.env` file's text with dotenvy (see the module docs for the
/// syntax), without touching the process environment.
pub fn parse_dotenv(text: &str) -> Dotenv {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let consumed = Cell::new(0);
    let reader = LineByLine {
        rest: text.as_bytes(),
        consumed: &consumed,
    };
    // Line number (1-based) of the last line dotenvy has read.
    let line_at = |offset: usize| {
        let read = &text.as_bytes()[..offset];
        read.iter().filter(|&&b| b == b'\n').count() + usize::from(!read.ends_with(b"\n"))
    };
    let mut out = Dotenv::default();
    let mut last_line = 0;
    for item in dotenvy::from_read_iter(reader) {
        let end = consumed.get();
        let line = line_at(end);
        match item {
            Ok((k, v)) => {
                out.vars.insert(k, v);
            }
            Err(_) => {
                // The entry starts at the first line after the previous one
                // that is not blank or a comment (dotenvy skips those).
                let first = text
                    .lines()
                    .enumerate()
                    .skip(last_line)
                    .find(|(_, l)| {
                        let l = l.trim_start();
                        !l.is_empty() && !l.starts_with('#')
                    })
                    .map_or(line, |(i, _)| (i + 1).min(line));
                out.bad_lines.push(if first == line {
                    format!("line {line}: does not parse (see the .env syntax in docs/CONFIGURATION.md); skipped")
                } else if end == text.len() {
                    format!(
                        "lines {first} to {line} (the end of the file): does not parse (an unclosed quote?); skipped"
                    )
                } else {
                    format!("lines {first} to {line}: does not parse (see the .env syntax in docs/CONFIGURATION.md); skipped")
                });
            }
        }
        last_line = line;
    }
    out
}

/// Hands dotenvy one line per `read`, so that the bytes it has read (and so
/// the line it has reached) are known whenever it yields an entry: its
/// buffered reader never gets ahead of the line it is parsing.
struct LineByLine<'a> {
    rest: &'a [u8],
    consumed: &'a Cell<usize>,
}

impl Read for LineByLine<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let line = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |i| i + 1);
        let n = line.min(buf.len());
        let (now, rest) = self.rest.split_at(n);
        buf[..n].copy_from_slice(now);
        self.rest = rest;
        self.consumed.set(self.consumed.get() + n);
        Ok(n)
    }
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
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
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
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
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
        let d = parse_dotenv("# c\nexport A=1\nB=\"two words\"\nC='x'\nnoise\n");
        let m = &d.vars;
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "x");
        assert_eq!(m.len(), 3);
        assert_eq!(d.bad_lines.len(), 1);
        assert!(d.bad_lines[0].starts_with("line 5: "), "{:?}", d.bad_lines);
    }

    #[test]
    fn dotenv_inline_comments() {
        let d = parse_dotenv(concat!(
            "A=value # comment\n",
            "B=value\t# tab before the comment\n",
            "C=a#b\n",
            "D=\"quoted # not a comment\" # comment\n",
            "E='single # too'\n",
            "F= # nothing but a comment\n",
            "  # indented comment\n",
            "G = spaced\n",
        ));
        assert!(d.bad_lines.is_empty(), "{:?}", d.bad_lines);
        let m = &d.vars;
        assert_eq!(m["A"], "value");
        assert_eq!(m["B"], "value");
        assert_eq!(m["C"], "a#b");
        assert_eq!(m["D"], "quoted # not a comment");
        assert_eq!(m["E"], "single # too");
        assert_eq!(m["F"], "");
        assert_eq!(m["G"], "spaced");
        assert_eq!(m.len(), 7);
    }

    #[test]
    fn dotenv_quotes_escapes_substitution_and_line_endings() {
        let d = parse_dotenv(concat!(
            "\u{feff}A=1\r\n",
            "B=${A}x\r\n",
            "C='$A literal'\n",
            "D=\"$A \\$A \\\"q\\\" a\\nb\"\n",
            "E=\"two\n",
            "lines\"\n",
            "A=2\n",
            "F=$A\n",
        ));
        assert!(d.bad_lines.is_empty(), "{:?}", d.bad_lines);
        let m = &d.vars;
        assert_eq!(m["A"], "2", "the last line wins");
        assert_eq!(m["B"], "1x");
        assert_eq!(m["C"], "$A literal");
        assert_eq!(m["D"], "1 $A \"q\" a\nb");
        assert_eq!(m["E"], "two\nlines");
        assert_eq!(m["F"], "2");
    }

    #[test]
    fn dotenv_bad_lines_are_numbered_and_never_echoed() {
        const SECRET: &str = "5CFd2fd1755d40ecb72977518be15d3b";
        let text = format!(
            "# header\n\nOK1=1\nKEY={SECRET} trailing\n{SECRET}\n1KEY={SECRET}\nKEY-DASH={SECRET}\n\n# c\nOK2=2\nBAD=\\q{SECRET}\nOK3=3"
        );
        let d = parse_dotenv(&text);
        assert_eq!(d.vars.len(), 3, "{:?}", d.vars.keys());
        assert_eq!(
            (&d.vars["OK1"][..], &d.vars["OK2"][..], &d.vars["OK3"][..]),
            ("1", "2", "3")
        );
        let lines: Vec<&str> = d
            .bad_lines
            .iter()
            .map(|m| m.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(lines, ["line 4", "line 5", "line 6", "line 7", "line 11"]);
        for m in &d.bad_lines {
            assert!(!m.contains(SECRET) && !m.contains("5CF"), "{m}");
        }
    }

    #[test]
    fn dotenv_unclosed_quote_is_reported_with_the_lines_it_swallowed() {
        let d = parse_dotenv("A=1\n# c\nB=\"open\nC=3\nD=4\n");
        assert_eq!(d.vars.len(), 1);
        assert_eq!(d.bad_lines.len(), 1);
        assert!(
            d.bad_lines[0].starts_with("lines 3 to 5 (the end of the file)"),
            "{:?}",
            d.bad_lines
        );
        // Spanning lines but closed before the end: the range is given.
        let d = parse_dotenv("B=\"x\ny\" junk\nC=3\n");
        assert_eq!(d.vars["C"], "3");
        assert!(
            d.bad_lines[0].starts_with("lines 1 to 2: "),
            "{:?}",
            d.bad_lines
        );
    }

    #[test]
    fn dotenv_never_overrides_or_sets_process_variables() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join(".env");
        let fresh = format!("TA_DOTENV_TEST_{}", std::process::id());
        std::fs::write(&path, format!("PATH=/nowhere\n{fresh}=from-file # c\n")).unwrap();
        let e = ProcessEnv::with_dotenv(&path);
        assert_ne!(e.var("PATH").as_deref(), Some("/nowhere"));
        assert_eq!(e.var(&fresh).as_deref(), Some("from-file"));
        assert!(
            std::env::var(&fresh).is_err(),
            "the process environment is untouched"
        );
        assert!(
            ProcessEnv::with_dotenv(&dir.join("missing"))
                .dotenv
                .is_empty()
        );
    }
}
