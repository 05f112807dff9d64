//! Typed parsing of raw values: one small impl per Rust type a setting can
//! have. Each knows its [`Kind`] (so the reader can check it matches the key
//! table), how to parse trimmed text, and how to print itself for
//! `describe()`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::keys::Kind;
use crate::layers::RawValue;

/// A type a configuration key can be read as.
pub(crate) trait ConfigValue: Sized {
    /// The kind the key table must declare for keys read as this type.
    const KIND: Kind;

    /// Parse trailing-whitespace-trimmed text; `None` if it does not fit.
    fn parse(text: &str) -> Option<Self>;

    /// Parse a TOML array. Only list settings accept one.
    fn parse_list(_items: &[String]) -> Option<Self> {
        None
    }

    /// The value as `describe()` shows it.
    fn render(&self) -> String;

    /// The value as a number, for the key table's minimum.
    fn number(&self) -> Option<u64> {
        None
    }

    /// Parse either shape of raw value.
    fn from_raw(raw: &RawValue) -> Option<Self> {
        match raw {
            RawValue::Text(text) => Self::parse(text.trim()),
            RawValue::List(items) => Self::parse_list(items),
        }
    }
}

macro_rules! whole_number {
    ($type:ty, $kind:expr) => {
        impl ConfigValue for $type {
            const KIND: Kind = $kind;

            fn parse(text: &str) -> Option<Self> {
                // Digits only: no sign, no underscores, no units.
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                text.parse().ok()
            }

            fn render(&self) -> String {
                self.to_string()
            }

            fn number(&self) -> Option<u64> {
                u64::try_from(*self).ok()
            }
        }
    };
}

whole_number!(u16, Kind::Port);
whole_number!(u32, Kind::U32);
whole_number!(u64, Kind::U64);
whole_number!(usize, Kind::Usize);

impl ConfigValue for bool {
    const KIND: Kind = Kind::Bool;

    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        }
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for IpAddr {
    const KIND: Kind = Kind::IpAddr;

    fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("localhost") {
            return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        // Accept the bracketed form people copy from URLs: [::1].
        let text = text
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(text);
        text.parse().ok()
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for String {
    const KIND: Kind = Kind::Text;

    fn parse(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| text.to_string())
    }

    fn render(&self) -> String {
        self.clone()
    }
}

impl ConfigValue for crate::settings::Containment {
    const KIND: Kind = Kind::Choice(crate::keys::CONTAINMENTS);

    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    fn render(&self) -> String {
        match self {
            crate::settings::Containment::Auto => "auto",
            crate::settings::Containment::Cgroup => "cgroup",
            crate::settings::Containment::Subreaper => "subreaper",
        }
        .to_string()
    }
}

impl ConfigValue for Option<String> {
    const KIND: Kind = Kind::OptionalText;

    fn parse(text: &str) -> Option<Self> {
        Some((!text.is_empty()).then(|| text.to_string()))
    }

    fn render(&self) -> String {
        self.clone().unwrap_or_default()
    }
}

impl ConfigValue for PathBuf {
    const KIND: Kind = Kind::Path;

    fn parse(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl ConfigValue for Option<PathBuf> {
    const KIND: Kind = Kind::OptionalPath;

    fn parse(text: &str) -> Option<Self> {
        Some((!text.is_empty()).then(|| PathBuf::from(text)))
    }

    fn render(&self) -> String {
        self.as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default()
    }
}

impl ConfigValue for Vec<String> {
    const KIND: Kind = Kind::List;

    /// Comma-separated; blanks around names and empty entries are dropped,
    /// so `"PATH, HOME,"` is `[PATH, HOME]` and `""` is the empty list.
    fn parse(text: &str) -> Option<Self> {
        let items: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect();
        Self::parse_list(&items)
    }

    fn parse_list(items: &[String]) -> Option<Self> {
        let valid = |name: &String| {
            !name.is_empty() && !name.contains(['=', '\0']) && !name.contains(char::is_whitespace)
        };
        items.iter().all(valid).then(|| items.to_vec())
    }

    fn render(&self) -> String {
        self.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_true_false_yes_no_one_zero_in_any_case() {
        for yes in ["true", "TRUE", "Yes", "1"] {
            assert_eq!(bool::parse(yes), Some(true), "{yes}");
        }
        for no in ["false", "False", "NO", "0"] {
            assert_eq!(bool::parse(no), Some(false), "{no}");
        }
        assert_eq!(bool::parse("maybe"), None);
        assert_eq!(bool::parse(""), None);
    }

    #[test]
    fn numbers_are_plain_digits_without_signs_units_or_separators() {
        assert_eq!(u32::parse("42"), Some(42));
        assert_eq!(u32::parse("+42"), None);
        assert_eq!(u32::parse("-1"), None);
        assert_eq!(usize::parse("64KB"), None);
        assert_eq!(u64::parse("1_000"), None);
        assert_eq!(u16::parse("65536"), None);
        assert_eq!(u16::parse("65535"), Some(65535));
    }

    #[test]
    fn text_values_have_trailing_whitespace_trimmed_before_parsing() {
        assert_eq!(
            u16::from_raw(&RawValue::Text("30000  \t".to_string())),
            Some(30000)
        );
    }

    #[test]
    fn lists_split_on_commas_and_reject_names_that_cannot_be_env_vars() {
        assert_eq!(
            Vec::<String>::parse("PATH, HOME,,"),
            Some(vec!["PATH".to_string(), "HOME".to_string()])
        );
        assert_eq!(Vec::<String>::parse(""), Some(vec![]));
        assert_eq!(Vec::<String>::parse("A=B"), None);
        assert_eq!(Vec::<String>::parse_list(&["TWO WORDS".to_string()]), None);
    }

    #[test]
    fn scalars_refuse_a_toml_list() {
        assert_eq!(
            String::from_raw(&RawValue::List(vec!["a".to_string()])),
            None
        );
    }

    #[test]
    fn bind_addresses_accept_localhost_and_bracketed_ipv6() {
        assert_eq!(
            IpAddr::parse("localhost"),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            IpAddr::parse("[::1]").map(|ip| ip.is_loopback()),
            Some(true)
        );
        assert_eq!(IpAddr::parse("example.com"), None);
    }

    #[test]
    fn empty_optional_values_mean_not_set() {
        assert_eq!(Option::<String>::parse(""), Some(None));
        assert_eq!(Option::<PathBuf>::parse(""), Some(None));
        assert_eq!(String::parse(""), None);
    }
}
