//! The environment scripts get, computed once per executor from the worker's.
//!
//! Scripts start from an empty environment; only allow-listed variables are
//! copied in, so the worker's own secrets never reach a script. The per-item
//! `DTS_*` variables are added by the executor.

use std::ffi::{OsStr, OsString};

/// `PATH` for scripts when the worker has none (or it is not allow-listed),
/// so that `bash` and common tools are still found.
pub(crate) const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Keeps the variables of `base` named in `allow` (the first occurrence of a
/// name wins) and makes sure `PATH` is set.
pub(crate) fn filter_env(
    allow: &[String],
    base: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut kept: Vec<(OsString, OsString)> = Vec::with_capacity(allow.len() + 1);
    for (name, value) in base {
        let allowed = allow.iter().any(|a| OsStr::new(a) == name);
        if allowed && !kept.iter().any(|(k, _)| *k == name) {
            kept.push((name, value));
        }
    }
    if !kept.iter().any(|(k, _)| k == "PATH") {
        kept.push(("PATH".into(), FALLBACK_PATH.into()));
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn allow(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn only_allow_listed_variables_are_kept() {
        let base = pairs(&[
            ("PATH", "/p"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("HOME", "/h"),
        ]);
        let env = filter_env(&allow(&["PATH", "HOME", "TZ"]), base);
        assert_eq!(env, pairs(&[("PATH", "/p"), ("HOME", "/h")]));
    }

    #[test]
    fn path_falls_back_to_the_system_directories_when_missing() {
        let env = filter_env(&allow(&["PATH", "HOME"]), pairs(&[("HOME", "/h")]));
        assert_eq!(env, pairs(&[("HOME", "/h"), ("PATH", FALLBACK_PATH)]));
    }

    #[test]
    fn path_falls_back_when_it_is_not_allow_listed() {
        let env = filter_env(&allow(&["HOME"]), pairs(&[("PATH", "/secret/bin")]));
        assert_eq!(env, pairs(&[("PATH", FALLBACK_PATH)]));
    }

    #[test]
    fn names_match_exactly_and_case_sensitively() {
        let base = pairs(&[("path", "/lower"), ("PATHX", "/x"), ("PATH", "/p")]);
        let env = filter_env(&allow(&["PATH"]), base);
        assert_eq!(env, pairs(&[("PATH", "/p")]));
    }
}
