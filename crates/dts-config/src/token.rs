//! The API's bearer token: given directly (`server.auth-token`) or read from
//! a file (`server.auth-token-file`, so it never shows in `ps`), and at
//! least [`MIN_TOKEN_BYTES`] long either way.

use std::path::Path;

use crate::error::ConfigError;
use crate::keys::MIN_TOKEN_BYTES;
use crate::layers::Layers;
use crate::settings::{MASK, ServerSettings};
use crate::source::Source;

/// Fills `server.auth_token` from the file when one is named, and checks
/// the token's length. Problems that do not stop loading (a file others
/// can read) go to `warnings`.
pub(crate) fn resolve(
    server: &mut ServerSettings,
    layers: &Layers,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let source = |key: &str| {
        layers
            .values
            .get(key)
            .map(|raw| raw.from.clone())
            .unwrap_or(Source::Default)
    };
    if let Some(path) = server.auth_token_file.clone() {
        let from = source("server.auth-token-file");
        if server.auth_token.is_some() {
            return Err(ConfigError::Inconsistent {
                keys: vec![
                    "server.auth-token".to_string(),
                    "server.auth-token-file".to_string(),
                ],
                message: format!(
                    "server.auth-token (from {}) and server.auth-token-file = {} (from {from}) are both set: \
                     give the token one way only",
                    source("server.auth-token"),
                    path.display()
                ),
            });
        }
        let token = read_token_file(&path, &from, warnings)?;
        check_length("server.auth-token-file", &token, from)?;
        server.auth_token = Some(token);
    } else if let Some(token) = &server.auth_token {
        let from = source("server.auth-token");
        check_length("server.auth-token", token, from.clone())?;
        if matches!(from, Source::Flag(_)) {
            warnings.push(
                "server.auth-token was given as a command-line flag, which every user of this \
                 machine can read with ps; use server.auth-token-file or DTS_AUTH_TOKEN instead"
                    .to_string(),
            );
        }
    }
    Ok(())
}

/// The file's contents without one trailing newline (`\n` or `\r\n`).
fn read_token_file(
    path: &Path,
    from: &Source,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let unreadable = |source| ConfigError::ReadSecretFile {
        key: "server.auth-token-file".to_string(),
        path: path.to_path_buf(),
        from: from.clone(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    if let Some(warning) = readable_by_others(path) {
        warnings.push(warning);
    }
    Ok(token_in_file(&text).to_string())
}

/// The token a token file holds: its text without one trailing newline (LF
/// or CRLF), as `echo` and editors leave it. The client commands'
/// `--token-file` reads files the same way.
pub fn token_in_file(text: &str) -> &str {
    text.strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(text)
}

/// A warning when the token file's group or other users may read it.
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "the token file {} (server.auth-token-file) can be read by other users (mode {:o}); \
             chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

/// Refuses a token shorter than [`MIN_TOKEN_BYTES`], naming `key` and its
/// source (never the token).
fn check_length(key: &str, token: &str, from: Source) -> Result<(), ConfigError> {
    if token.len() >= MIN_TOKEN_BYTES {
        return Ok(());
    }
    Err(ConfigError::InvalidValue {
        key: key.to_string(),
        value: MASK.to_string(),
        from,
        expected: format!(
            "a token of at least {MIN_TOKEN_BYTES} bytes, not {} (a short token can be guessed)",
            token.len()
        ),
    })
}
