//! Who may call the API: the `Host` a request names, the `Origin` a
//! browser stamps on it, and the bearer token.
//!
//! Loopback is not a boundary against the local user's own browser: any
//! page it visits can send a form to `http://127.0.0.1:30000`, and a name
//! the attacker controls can be re-pointed at 127.0.0.1 (DNS rebinding) so
//! the page can read the answers too. So:
//!
//! - a request with an `Origin` header (every cross-site request a browser
//!   sends has one) is refused with 403 unless the origin is the server's
//!   own or listed in `server.allowed-origins`. Clients that send no
//!   `Origin` (curl, the seed's Java client, `dts` itself) are unaffected;
//!   `Origin: null` (sandboxed pages, files) is foreign.
//! - a request whose `Host` is not an address of this server is refused
//!   with 421 (Misdirected Request). Accepted: the bound address; when
//!   bound to loopback, every loopback name and address; when bound to
//!   every interface (0.0.0.0 or ::), `localhost` and any IP address — an
//!   address typed in a browser cannot be rebound; each with the server's
//!   port. Names the server is reached by (through a proxy, say) are listed
//!   in `server.allowed-hosts` (`name` for any port, `name:port` for one);
//!   `*` there accepts any Host, which the configuration allows only with a
//!   token.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The allow-lists from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLists {
    /// `server.allowed-origins`: origins such as `https://dash.example.com`.
    pub allowed_origins: Vec<String>,
    /// `server.allowed-hosts`: `name`, `name:port` or `*`.
    pub allowed_hosts: Vec<String>,
}

/// The lists with the address the server is bound to: what the checks
/// compare against.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    bound: SocketAddr,
    origins: Vec<String>,
    hosts: Vec<(String, Option<u16>)>,
    any_host: bool,
}

impl Policy {
    pub(crate) fn new(lists: &AccessLists, bound: SocketAddr) -> Policy {
        let origins = lists
            .allowed_origins
            .iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|origin| !origin.is_empty() && origin != "null")
            .collect();
        let any_host = lists.allowed_hosts.iter().any(|host| host.trim() == "*");
        let hosts = lists
            .allowed_hosts
            .iter()
            .filter(|host| host.trim() != "*")
            .filter_map(|host| Authority::parse(host.trim()))
            .map(|authority| (authority.host, authority.port))
            .collect();
        Policy {
            bound,
            origins,
            hosts,
            any_host,
        }
    }

    /// Whether `host` (a Host header's value) names this server.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        self.any_host || self.names_this_server(host, 80)
    }

    /// The Host rules without `*`; `default_port` is the port a `host`
    /// without one means.
    fn names_this_server(&self, host: &str, default_port: u16) -> bool {
        let Some(authority) = Authority::parse(host) else {
            return false;
        };
        let port = authority.port.unwrap_or(default_port);
        let listed = self.hosts.iter().any(|(name, listed_port)| {
            *name == authority.host && listed_port.is_none_or(|p| p == port)
        });
        if listed {
            return true;
        }
        if port != self.bound.port() {
            return false;
        }
        let ip = authority.ip();
        let bound = self.bound.ip();
        if bound.is_unspecified() {
            ip.is_some() || authority.host == "localhost"
        } else if bound.is_loopback() {
            ip.is_some_and(|ip| ip.is_loopback()) || authority.host == "localhost"
        } else {
            ip == Some(bound)
        }
    }

    /// Whether a request from a page of `origin` (with `host` as its Host)
    /// may be served.
    pub(crate) fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if origin == "null" {
            return false;
        }
        if self.origins.contains(&origin) {
            return true;
        }
        let (authority, default_port) = if let Some(rest) = origin.strip_prefix("http://") {
            (rest, 80)
        } else if let Some(rest) = origin.strip_prefix("https://") {
            (rest, 443)
        } else {
            return false;
        };
        // The server's own pages: an origin that names this server.
        if self.names_this_server(authority, default_port) {
            return true;
        }
        // With any Host accepted (and a token required), a page served
        // under the Host it calls is the server's own too.
        self.any_host && host.is_some_and(|host| host.trim().eq_ignore_ascii_case(authority))
    }
}

/// A Host value split into a lower-case host (brackets kept off IPv6) and
/// its port.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(text: &str) -> Option<Authority> {
        let text = text.trim();
        if text.is_empty() || text.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?.parse().ok()?),
            };
            (inside.to_string(), port)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => {
                    if host.contains(':') {
                        // A bare IPv6 address is not valid in Host.
                        return None;
                    }
                    (host.to_string(), Some(port.parse().ok()?))
                }
                None => (text.to_string(), None),
            }
        };
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        if host.is_empty() {
            return None;
        }
        Some(Authority { host, port })
    }

    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// Refuses a foreign Host (421) or Origin (403) before anything else runs.
pub(crate) async fn check_host_and_origin(
    State(policy): State<Arc<Policy>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let host = host_of(headers).or_else(|| request.uri().authority().map(|a| a.as_str()));
    if let Some(host) = host {
        if !policy.host_allowed(host) {
            return Err(ApiError::ForbiddenHost(shorten(host)));
        }
    }
    for origin in headers.get_all(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("(not text)");
        if !policy.origin_allowed(text, host) {
            return Err(ApiError::ForbiddenOrigin(shorten(text)));
        }
    }
    Ok(next.run(request).await)
}

fn host_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or("(not text)"))
}

/// A header value as an error message may quote it.
fn shorten(text: &str) -> String {
    let mut shown: String = text.chars().take(100).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// With a token configured, every route it guards needs
/// `Authorization: Bearer <token>` (the scheme in any case), or the
/// dashboard's login cookie (`dts_token`) holding it.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = &state.auth_token {
        if !holds_token(request.headers(), expected) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Whether the request carries `expected` as a bearer token or in the
/// dashboard's cookie. A browser sends the cookie with requests other
/// sites make it send too, but only same-site ones (`SameSite=Strict`),
/// and [`check_host_and_origin`] refuses foreign origins before this runs.
pub(crate) fn holds_token(headers: &HeaderMap, expected: &str) -> bool {
    bearer_matches(headers, expected)
        || crate::ui::token_cookie(headers)
            .is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
}

/// Whether `headers` carry `Authorization: Bearer <expected>`: the check of
/// a listener that has no [`AppState`] (a worker's `/metrics`).
pub(crate) fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), expected.as_bytes())
}

/// The token of a `Bearer` credential; the scheme is case-insensitive
/// (RFC 9110), so `bearer` and `BEARER` work too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Compares without stopping at the first difference, so response time does
/// not reveal how much of a guessed token was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bound: &str, origins: &[&str], hosts: &[&str]) -> Policy {
        let lists = AccessLists {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
        };
        Policy::new(&lists, bound.parse().unwrap())
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k", " Bearer t0k "] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic t0k", "Bearert0k", "t0k", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_loopback_bind_accepts_loopback_names_on_its_port_only() {
        let p = policy("127.0.0.1:30000", &[], &[]);
        for ok in [
            "127.0.0.1:30000",
            "localhost:30000",
            "LOCALHOST:30000",
            "localhost.:30000",
            "[::1]:30000",
            "127.0.0.2:30000",
        ] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for refused in [
            "attacker.example:30000",
            "attacker.example",
            "localhost:30001",
            "localhost",
            "10.0.0.5:30000",
            "::1",
            "",
            "127.0.0.1:30000/x",
            "user@127.0.0.1:30000",
        ] {
            assert!(!p.host_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn an_any_address_bind_accepts_ip_addresses_and_localhost_but_not_names() {
        let p = policy("0.0.0.0:8080", &[], &[]);
        for ok in [
            "0.0.0.0:8080",
            "10.1.2.3:8080",
            "[fe80::1]:8080",
            "localhost:8080",
        ] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for refused in [
            "myhost:8080",
            "10.1.2.3:9090",
            "rebind.attacker.example:8080",
        ] {
            assert!(!p.host_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn listed_hosts_match_any_port_or_their_own_and_a_star_matches_all() {
        let p = policy("127.0.0.1:30000", &[], &["dts", "front.example:443"]);
        assert!(p.host_allowed("dts"));
        assert!(p.host_allowed("DTS:1234"));
        assert!(p.host_allowed("front.example:443"));
        assert!(!p.host_allowed("front.example:80"));
        assert!(!p.host_allowed("front.example"));
        assert!(p.origin_allowed("https://front.example", Some("front.example:443")));
        assert!(!p.origin_allowed("http://front.example", Some("front.example:443")));
        let star = policy("0.0.0.0:30000", &[], &["*"]);
        assert!(star.host_allowed("anything.example:1"));
    }

    #[test]
    fn origins_are_the_servers_own_or_listed_and_null_is_foreign() {
        let p = policy("127.0.0.1:30000", &["https://dash.example.com/"], &[]);
        for ok in [
            "http://127.0.0.1:30000",
            "http://localhost:30000",
            "https://dash.example.com",
            "HTTPS://DASH.EXAMPLE.COM",
        ] {
            assert!(p.origin_allowed(ok, Some("127.0.0.1:30000")), "{ok}");
        }
        for refused in [
            "http://evil.example",
            "null",
            "http://localhost:30001",
            "file://",
            "http://127.0.0.1:30000.evil.example",
            "",
        ] {
            assert!(
                !p.origin_allowed(refused, Some("127.0.0.1:30000")),
                "{refused}"
            );
        }
    }

    #[test]
    fn with_any_host_a_page_may_call_the_host_it_came_from_and_no_other() {
        let p = policy("0.0.0.0:30000", &[], &["*"]);
        assert!(p.origin_allowed("https://dts.corp.example", Some("dts.corp.example")));
        assert!(!p.origin_allowed("https://evil.example", Some("dts.corp.example")));
    }
}
