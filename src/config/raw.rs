//! `RawConfig`: config.toml exactly as written, with serde defaults in one place.
//!
//! Nothing here is trusted yet; `Config::parse` validates it into typed, checked values.

use super::units::{Dur, Size};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub log: Option<Spanned<RawLog>>,
    pub cache: Option<Spanned<RawCache>>,
}

/// `[cache]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default = "d_256m")]
    pub max_bytes: Spanned<Size>,
    pub max_object_bytes: Option<Spanned<Size>>,
    pub default_ttl: Option<Dur>,
    pub key: Option<Spanned<Vec<String>>>,
    pub stale_while_revalidate: Option<Dur>,
    pub stale_if_error: Option<Dur>,
    pub lock_timeout: Option<Dur>,
}

/// A route's `cache`: `true`, or a table overriding `[cache]` for it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRouteCache {
    /// `cache = true` (or `false`).
    On(bool),
    /// `cache = { default_ttl = "10s", key = [...], allow_set_cookie = true }`
    Table(RawRouteCacheTable),
}

/// The table form of a route's `cache`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCacheTable {
    pub default_ttl: Option<Dur>,
    pub key: Option<Vec<String>>,
    #[serde(default)]
    pub allow_set_cookie: bool,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub access: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Spanned<String>,
    pub token: Option<Spanned<String>>,
    #[serde(default = "yes")]
    pub metrics: bool,
}

/// A value that may be written as one item or an array of items.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// `listen = "127.0.0.1:8080"`
    One(T),
    /// `listen = ["127.0.0.1:8080", "[::1]:8080"]`
    Many(Vec<T>),
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: Spanned<OneOrMany<RawListen>>,
    pub workers: Option<Spanned<i64>>,
    #[serde(default = "d_10s")]
    pub header_timeout: Dur,
    #[serde(default = "d_60s")]
    pub keepalive_timeout: Dur,
    #[serde(default = "d_60s")]
    pub body_timeout: Dur,
    #[serde(default = "d_16k")]
    pub max_header_bytes: Spanned<Size>,
    #[serde(default = "d_100")]
    pub max_headers: Spanned<i64>,
    #[serde(default = "d_8k")]
    pub max_request_line: Spanned<Size>,
    pub request_headers: Option<Spanned<RawHeaderEdits>>,
    pub response_headers: Option<Spanned<RawHeaderEdits>>,
    pub error_format: Option<Spanned<String>>,
    #[serde(default = "d_30s")]
    pub shutdown_timeout: Dur,
    pub redirect_https: Option<Spanned<String>>,
    pub upgrade_protocols: Option<Spanned<Vec<String>>>,
    #[serde(default = "d_1h")]
    pub tunnel_idle_timeout: Dur,
    #[serde(default = "d_1g")]
    pub max_body_bytes: Spanned<Size>,
    pub max_connections: Option<Spanned<i64>>,
    pub allow: Option<Spanned<Vec<String>>>,
    pub deny: Option<Spanned<Vec<String>>>,
    pub trusted_proxies: Option<Spanned<Vec<String>>>,
}

/// One `listen` entry: `"ADDR"` or `{ addr = "ADDR", tls = { ... } }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawListen {
    /// A plain HTTP address.
    Addr(String),
    /// An address with options.
    Table(RawListenTable),
}

/// The table form of a `listen` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTable {
    pub addr: String,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// A listener's `tls`: `{ cert, key }` or `{ certs = [{ cert, key }, ...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub certs: Option<Vec<RawCertPair>>,
}

/// One certificate and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: String,
    pub key: String,
}

/// An upstream group's `tls`: `true`, or `{ sni, ca, verify }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUpstreamTls {
    /// `tls = true` (or `false`).
    On(bool),
    /// `tls = { sni = "name", ca = "PATH", verify = true }`
    Table(RawUpstreamTlsTable),
}

/// The table form of an upstream group's `tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTlsTable {
    pub sni: Option<String>,
    pub ca: Option<String>,
    #[serde(default = "yes")]
    pub verify: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            workers: None,
            header_timeout: d_10s(),
            keepalive_timeout: d_60s(),
            body_timeout: d_60s(),
            max_header_bytes: d_16k(),
            max_headers: d_100(),
            max_request_line: d_8k(),
            request_headers: None,
            response_headers: None,
            error_format: None,
            shutdown_timeout: d_30s(),
            redirect_https: None,
            upgrade_protocols: None,
            tunnel_idle_timeout: d_1h(),
            max_body_bytes: d_1g(),
            max_connections: None,
            allow: None,
            deny: None,
            trusted_proxies: None,
        }
    }
}

/// One server entry: `"127.0.0.1:9001"` or `{ addr = "...", weight = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawServerEntry {
    /// Address only, weight 1.
    Addr(String),
    /// Address with options.
    Table(RawServerTable),
}

/// The table form of a server entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTable {
    pub addr: String,
    #[serde(default = "one")]
    pub weight: i64,
    pub max_connections: Option<i64>,
    #[serde(default)]
    pub backup: bool,
}

/// `[upstreams.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub servers: Spanned<Vec<Spanned<RawServerEntry>>>,
    #[serde(default = "default_balance")]
    pub balance: Spanned<String>,
    pub hash_key: Option<Spanned<String>>,
    #[serde(default = "d_3s")]
    pub connect_timeout: Dur,
    #[serde(default = "d_60s")]
    pub response_header_timeout: Dur,
    #[serde(default = "d_60s")]
    pub read_timeout: Dur,
    #[serde(default = "d_64")]
    pub keepalive: Spanned<i64>,
    #[serde(default = "d_60s")]
    pub keepalive_timeout: Dur,
    #[serde(default = "d_1")]
    pub max_fails: Spanned<i64>,
    #[serde(default = "d_10s")]
    pub fail_window: Dur,
    pub fail_timeout: Option<Dur>,
    pub backoff: Option<Spanned<Vec<Dur>>>,
    pub fail_on_status: Option<Spanned<Vec<i64>>>,
    #[serde(default = "d_2")]
    pub retries: Spanned<i64>,
    pub retry_on: Option<Spanned<Vec<String>>>,
    #[serde(default = "d_64k")]
    pub retry_body_max: Spanned<Size>,
    pub idempotent_methods: Option<Spanned<Vec<String>>>,
    pub retry_budget: Option<Spanned<f64>>,
    pub request_timeout: Option<Dur>,
    pub slow_start: Option<Dur>,
    pub health: Option<Spanned<RawHealth>>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

/// `[upstreams.NAME.health]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default = "default_health_path")]
    pub path: String,
    pub host: Option<String>,
    #[serde(default = "d_2s")]
    pub interval: Dur,
    #[serde(default = "d_1s")]
    pub timeout: Dur,
    #[serde(default = "d_2")]
    pub rise: Spanned<i64>,
    #[serde(default = "d_3")]
    pub fall: Spanned<i64>,
    pub expect_status: Option<Spanned<StatusSpec>>,
    pub start: Option<Spanned<String>>,
}

/// `expect_status = "200-399"`, `= 204` or `= [200, "300-302"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    /// One status or range.
    One(StatusItem),
    /// A list of statuses or ranges.
    Many(Vec<StatusItem>),
}

/// One status (`200`) or range (`"200-299"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StatusItem {
    /// A number.
    Num(i64),
    /// A number or range as text.
    Text(String),
}

impl std::fmt::Display for StatusItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusItem::Num(n) => write!(f, "{n}"),
            StatusItem::Text(t) => f.write_str(t),
        }
    }
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<OneOrMany<String>>>,
    pub path_prefix: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub path_regex: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<String>>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub query: Option<Spanned<BTreeMap<String, String>>>,
    pub upstream: Option<Spanned<String>>,
    pub respond: Option<Spanned<RawRespond>>,
    pub redirect: Option<Spanned<RawRedirect>>,
    pub allow: Option<Spanned<Vec<String>>>,
    pub deny: Option<Spanned<Vec<String>>>,
    pub limit: Option<Spanned<RawLimit>>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub rewrite_prefix: Option<Spanned<String>>,
    pub request_headers: Option<Spanned<RawHeaderEdits>>,
    pub response_headers: Option<Spanned<RawHeaderEdits>>,
    pub cache: Option<Spanned<RawRouteCache>>,
    pub max_body_bytes: Option<Spanned<Size>>,
}

/// A route's `respond = { status = 200, body = "ok", headers = { ... } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    #[serde(default = "d_200")]
    pub status: i64,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A route's `limit = { rate = "100/s", burst = 50, key = "$remote_addr" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub rate: String,
    pub burst: Option<i64>,
    pub key: Option<String>,
}

/// A route's `redirect = { to = "https://$host$request_uri", status = 308 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub to: String,
    #[serde(default = "d_308")]
    pub status: i64,
}

/// `request_headers = { set = {...}, add = {...}, remove = [...] }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderEdits {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

fn default_listen() -> Spanned<OneOrMany<RawListen>> {
    Spanned::new(
        0..0,
        OneOrMany::One(RawListen::Addr("127.0.0.1:8080".to_string())),
    )
}
fn default_balance() -> Spanned<String> {
    Spanned::new(0..0, "round_robin".to_string())
}
fn default_health_path() -> String {
    "/".to_string()
}
fn d_2() -> Spanned<i64> {
    Spanned::new(0..0, 2)
}
fn d_3() -> Spanned<i64> {
    Spanned::new(0..0, 3)
}
fn d_1s() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn d_2s() -> Dur {
    Dur(std::time::Duration::from_secs(2))
}
fn d_64k() -> Spanned<Size> {
    Spanned::new(0..0, Size(64 * 1024))
}
fn yes() -> bool {
    true
}
fn one() -> i64 {
    1
}
fn d_1() -> Spanned<i64> {
    Spanned::new(0..0, 1)
}
fn d_64() -> Spanned<i64> {
    Spanned::new(0..0, 64)
}
fn d_100() -> Spanned<i64> {
    Spanned::new(0..0, 100)
}
fn d_3s() -> Dur {
    Dur(std::time::Duration::from_secs(3))
}
fn d_10s() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}
fn d_30s() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn d_60s() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn d_1h() -> Dur {
    Dur(std::time::Duration::from_secs(3600))
}
fn d_16k() -> Spanned<Size> {
    Spanned::new(0..0, Size(16 * 1024))
}
fn d_256m() -> Spanned<Size> {
    Spanned::new(0..0, Size(256 << 20))
}
fn d_200() -> i64 {
    200
}
fn d_308() -> i64 {
    308
}
fn d_1g() -> Spanned<Size> {
    Spanned::new(0..0, Size(1 << 30))
}
fn d_8k() -> Spanned<Size> {
    Spanned::new(0..0, Size(8 * 1024))
}
