//! Stacking the four layers: defaults, then the file, then the environment,
//! then flags. Each step overwrites the raw text of the keys it sets and
//! records where it came from; typing and checking happen afterwards
//! (`build.rs`), so an error can always name the layer that won.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use crate::error::ConfigError;
use crate::file::FileEntry;
use crate::keys::{self, KAFKA_PREFIX, KEYS, KeySpec, Kind};
use crate::source::Source;

/// A value before typing: text from properties, env and flags; TOML arrays
/// arrive as lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawValue {
    Text(String),
    List(Vec<String>),
}

impl fmt::Display for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Text(text) => f.write_str(text),
            RawValue::List(items) => write!(f, "[{}]", items.join(", ")),
        }
    }
}

/// The winning raw value of one key and its source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Raw {
    pub value: RawValue,
    pub from: Source,
}

/// All layers applied so far.
#[derive(Debug)]
pub(crate) struct Layers {
    /// Every known key; starts with the defaults so lookups never miss.
    pub values: BTreeMap<&'static str, Raw>,
    /// Every value set for a key of kind [`Kind::Labels`], lowest layer
    /// first: such keys merge across layers instead of the top one winning.
    pub stacked: BTreeMap<&'static str, Vec<Raw>>,
    /// `pubsub.kafka.*` pass-through keys, prefix removed.
    pub kafka: BTreeMap<String, Raw>,
    pub warnings: Vec<String>,
}

impl Layers {
    /// The bottom layer: every key at its built-in default.
    pub fn defaults() -> Self {
        let values = KEYS
            .iter()
            .map(|spec| {
                let raw = Raw {
                    value: RawValue::Text(spec.default.to_string()),
                    from: Source::Default,
                };
                (spec.key, raw)
            })
            .collect();
        Layers {
            values,
            stacked: BTreeMap::new(),
            kafka: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Apply a file's entries in order. Unknown keys become warnings rather
    /// than errors, so a file shared with other tools (or an older dts) still
    /// loads.
    pub fn apply_file(&mut self, path: &Path, entries: Vec<FileEntry>) {
        for entry in entries {
            let from = Source::File {
                path: path.to_path_buf(),
                line: Some(entry.line),
            };
            if !self.set(&entry.key, entry.value, from) {
                let mut warning = format!(
                    "unknown key `{}` in {} line {}",
                    entry.key,
                    path.display(),
                    entry.line
                );
                if let Some(known) = keys::suggest(&entry.key) {
                    warning.push_str(&format!("; did you mean `{known}`?"));
                }
                self.warnings.push(warning);
            }
        }
    }

    /// Apply `DTS_*` variables of known keys. Others are ignored silently:
    /// scripts run by dts see `DTS_ITEM` and friends, and a nested dts must
    /// not choke on them. Kafka pass-through keys cannot be spelt as variable
    /// names (their dots would be ambiguous), so such variables only warn.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) {
        for spec in KEYS.iter().filter(|spec| spec.kind != Kind::Ignored) {
            // The alias goes first so that the regular name wins if both exist.
            let names = spec
                .env_alias
                .into_iter()
                .map(str::to_string)
                .chain([spec.env_var()]);
            for name in names {
                if let Some(value) = env.get(&name) {
                    let raw = Raw {
                        value: RawValue::Text(value.clone()),
                        from: Source::Env(name),
                    };
                    self.put(spec, raw);
                }
            }
        }
        let kafka_env_prefix = keys::env_var_name(KAFKA_PREFIX);
        let mut kafka_vars: Vec<&String> = env
            .keys()
            .filter(|name| name.starts_with(&kafka_env_prefix))
            .collect();
        kafka_vars.sort();
        for name in kafka_vars {
            self.warnings.push(format!(
                "environment variable {name} ignored: `{KAFKA_PREFIX}*` keys can only be set in \
                 the config file or with flags"
            ));
        }
    }

    /// Apply flags in order. The CLI builds these from its options, so an
    /// unknown key is a mistake worth stopping for.
    pub fn apply_flags(&mut self, flags: &[(String, String)]) -> Result<(), ConfigError> {
        for (key, value) in flags {
            let from = Source::Flag(key.clone());
            if !self.set(key, RawValue::Text(value.clone()), from.clone()) {
                return Err(ConfigError::UnknownKey {
                    key: key.clone(),
                    from,
                    suggestion: keys::suggest(key).map(str::to_string),
                });
            }
        }
        Ok(())
    }

    /// Set a known key: the value replaces the one below, and for labels is
    /// also kept to be merged with them.
    fn put(&mut self, spec: &'static KeySpec, raw: Raw) {
        if spec.kind == Kind::Labels {
            self.stacked.entry(spec.key).or_default().push(raw.clone());
        }
        self.values.insert(spec.key, raw);
    }

    /// Set a known or pass-through key; false when the key is unknown.
    fn set(&mut self, key: &str, value: RawValue, from: Source) -> bool {
        if let Some(spec) = keys::spec(key) {
            self.put(spec, Raw { value, from });
            true
        } else if let Some(kafka_key) = key.strip_prefix(KAFKA_PREFIX).filter(|k| !k.is_empty()) {
            self.kafka
                .insert(kafka_key.to_string(), Raw { value, from });
            true
        } else {
            false
        }
    }
}
