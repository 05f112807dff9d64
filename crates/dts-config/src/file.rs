//! Reading a configuration file: pick the format by extension (`.toml` is
//! TOML, anything else is Java properties) and turn it into flat entries.

use std::path::Path;

use crate::error::ConfigError;
use crate::layers::RawValue;
use crate::{properties, toml_file};

/// One `key = value` from a file, with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileEntry {
    pub key: String,
    pub value: RawValue,
    pub line: usize,
}

/// A parse failure inside one file; [`read`] adds the path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

/// Whether `path` is read as TOML rather than properties.
pub(crate) fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("toml"))
}

/// Read and parse the file at `path`.
pub(crate) fn read(path: &Path) -> Result<Vec<FileEntry>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let syntax = |error: SyntaxError| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: error.line,
        message: error.message,
    };
    if is_toml(path) {
        let text = String::from_utf8(bytes).map_err(|_| {
            syntax(SyntaxError {
                line: None,
                message: "a TOML file must be UTF-8".to_string(),
            })
        })?;
        toml_file::parse(text.strip_prefix('\u{feff}').unwrap_or(&text)).map_err(syntax)
    } else {
        let text = decode_properties(bytes);
        properties::parse(text.strip_prefix('\u{feff}').unwrap_or(&text)).map_err(syntax)
    }
}

/// Properties files are UTF-8 in practice but ISO-8859-1 by Java's original
/// definition; accept both rather than fail on an old file.
fn decode_properties(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => error.into_bytes().iter().map(|b| char::from(*b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_toml_extension_selects_toml() {
        assert!(is_toml(Path::new("dts.toml")));
        assert!(is_toml(Path::new("/etc/dts/DTS.TOML")));
        assert!(!is_toml(Path::new("application.properties")));
        assert!(!is_toml(Path::new("dts.conf")));
        assert!(!is_toml(Path::new("toml")));
    }

    #[test]
    fn a_latin1_properties_file_still_loads() {
        assert_eq!(decode_properties(b"name=caf\xe9".to_vec()), "name=café");
    }
}
