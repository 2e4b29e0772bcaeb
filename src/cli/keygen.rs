//! `keygen`: a new caller API key and its SHA-256 for the config.

use super::CliError;
use super::*;
use std::io::Write;

/// Runs `keygen`: a new API key (give it to the caller, once) and its hash
/// (put it in the config as `api_key_sha256`).
pub fn keygen_main() -> Result<(), CliError> {
    let (key, hash) = match crate::policy::generate_key() {
        Ok(k) => k,
        Err(e) => {
            return fail(
                1,
                format!("the operating system's random source failed: {e}"),
            );
        }
    };
    let mut out = std::io::stdout().lock();
    let text = format!(
        "api_key = \"{key}\"\napi_key_sha256 = \"{}\"\n\n\
         # Give the api_key to the caller (it sends `authorization: Bearer <api_key>`);\n\
         # keep only api_key_sha256 in the [[callers]] entry of the config.\n",
        hash.to_hex()
    );
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return Err(CliError::silent(1));
    }
    Ok(())
}
