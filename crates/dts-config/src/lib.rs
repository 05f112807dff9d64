//! Configuration of dts: one layered set of settings, keyed by the seed's
//! property names (`server.port`, `pubsub.topic`, `spring.redis.host`, ...).
//!
//! Layers, later winning: built-in defaults < a config file (Java properties,
//! or TOML when the name ends in `.toml`) < `DTS_*` environment variables <
//! command-line flags. Every value remembers its [`Source`], and every
//! [`ConfigError`] names the key, the value and that source, so a bad value
//! can be traced to the layer that set it. The CLI calls [`load`] once and
//! hands the typed [`Settings`] sections to the roles it starts.
//!
//! The keys are declared once, in [`keys::KEYS`]; `docs/configuration.md`
//! lists them and a test keeps the two in sync.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod build;
mod checks;
mod error;
mod file;
pub mod keys;
pub mod labels;
mod layers;
mod properties;
mod settings;
mod source;
mod token;
mod toml_file;
mod value;

use std::collections::HashMap;
use std::path::Path;

pub use checks::SHARD_ENVELOPE_BYTES;
pub use error::ConfigError;
pub use keys::{KeySpec, Kind, env_var_name};
pub use settings::{
    Containment, ExecutorSettings, LimitsSettings, PubsubSettings, RedisSettings,
    SchedulerSettings, SentinelSettings, ServerSettings, Settings, StoreSettings, WorkerSettings,
};
pub use source::Source;
pub use token::token_in_file;

/// Load the configuration.
///
/// - `file`: a properties or `.toml` file; missing or unreadable is an error.
///   Unknown keys in it become [`Settings::warnings`].
/// - `env`: the environment as a map (pass `std::env::vars().collect()`), so
///   tests need not touch the process. `DTS_` + the key upper-cased with `.`
///   and `-` as `_`; unknown `DTS_*` names are ignored.
/// - `flags`: `(key, value)` pairs the CLI built from its options, e.g.
///   `("server.port", "0")`, applied in order; an unknown key is an error.
pub fn load(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    flags: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let mut layers = layers::Layers::defaults();
    if let Some(path) = file {
        let entries = file::read(path)?;
        layers.apply_file(path, entries);
    }
    layers.apply_env(env);
    layers.apply_flags(flags)?;
    build::build(layers)
}
