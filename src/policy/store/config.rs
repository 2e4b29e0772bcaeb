//! The store's settings: the URL (one server, Sentinel, Cluster), its
//! validation (errors never show it: it may hold a password), TLS, and
//! the connection each topology gets.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, StoreFailure,
};

/// How the store is deployed (the URL's scheme).
#[derive(Clone, PartialEq)]
pub(super) enum Topology {
    /// `redis://` / `rediss://`: one server.
    Single,
    /// `redis+sentinel://`: the master of `master`, found by asking the
    /// sentinels (`redis://HOST:PORT` each); `data` is a `redis://` URL
    /// with the credentials and database for the master.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        data: String,
    },
    /// `redis+cluster://` / `rediss+cluster://`: the seed nodes
    /// (`redis[s]://[CREDENTIALS@]HOST:PORT` each).
    Cluster { nodes: Vec<String> },
}

/// Most hosts in a Sentinel or Cluster URL.
const MAX_HOSTS: usize = 16;

/// The URL forms, for errors.
const URL_FORMS: &str = "must be redis://[:PASSWORD@]HOST:PORT/DB, rediss://... (TLS), \
     redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB] or \
     redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...] (rediss+cluster:// for TLS)";

/// Parses a store URL: its topology, the connection info of its (first)
/// data node (with the URL's credentials) and the address to show in
/// logs (no credentials). Errors never contain the URL.
fn parse_url(url: &str) -> Result<(Topology, redis::ConnectionInfo, String), String> {
    use redis::IntoConnectionInfo;
    let invalid = |what: &str| {
        format!("{what}; {URL_FORMS} (the value is not shown, it may hold a password)")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(URL_FORMS.to_owned());
    };
    match scheme {
        "redis" | "rediss" => {
            let info = url
                .into_connection_info()
                .map_err(|_| invalid("is not a valid Redis URL"))?;
            let shown = format!("{scheme}://{}/{}", info.addr(), info.redis_settings().db());
            return Ok((Topology::Single, info, shown));
        }
        "redis+sentinel" | "redis+cluster" | "rediss+cluster" => {}
        _ => return Err(URL_FORMS.to_owned()),
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.iter().any(|h| h.is_empty()) || hosts.len() > MAX_HOSTS {
        return Err(invalid(&format!(
            "needs 1 to {MAX_HOSTS} HOST:PORT separated by commas"
        )));
    }
    let creds = userinfo.map_or(String::new(), |u| format!("{u}@"));
    let node_scheme = if scheme == "rediss+cluster" {
        "rediss"
    } else {
        "redis"
    };
    let mut addrs = Vec::with_capacity(hosts.len());
    let mut node_urls = Vec::with_capacity(hosts.len());
    for h in &hosts {
        let node = if scheme == "redis+sentinel" {
            format!("redis://{h}")
        } else {
            format!("{node_scheme}://{creds}{h}")
        };
        let info = node
            .as_str()
            .into_connection_info()
            .map_err(|_| invalid("holds a HOST:PORT that is not valid"))?;
        if !h.contains(':') {
            return Err(invalid("needs a port with every host"));
        }
        addrs.push(info.addr().to_string());
        node_urls.push(node);
    }
    let hosts_shown = addrs.join(",");
    if scheme == "redis+sentinel" {
        let (master, db) = match path.split_once('/') {
            Some((m, d)) => (m, d),
            None => (path, "0"),
        };
        let db: u32 = if db.is_empty() {
            0
        } else {
            db.parse()
                .map_err(|_| invalid("has a database that is not a number"))?
        };
        if master.is_empty()
            || master.len() > 128
            || !master.bytes().all(|b| b.is_ascii_graphic() && b != b'%')
        {
            return Err(invalid(
                "needs the master's name (what the sentinels monitor) after the hosts",
            ));
        }
        let data = format!("redis://{creds}{}/{db}", hosts[0]);
        let info = data
            .as_str()
            .into_connection_info()
            .map_err(|_| invalid("holds credentials that are not valid"))?;
        let shown = format!("{scheme}://{hosts_shown}/{master}/{db}");
        let topology = Topology::Sentinel {
            sentinels: node_urls,
            master: master.to_owned(),
            data,
        };
        return Ok((topology, info, shown));
    }
    if !matches!(path, "" | "0") {
        return Err(invalid("a Redis Cluster has database 0 only"));
    }
    let info = node_urls[0]
        .as_str()
        .into_connection_info()
        .map_err(|_| invalid("is not a valid Redis URL"))?;
    let shown = format!("{scheme}://{hosts_shown}");
    Ok((Topology::Cluster { nodes: node_urls }, info, shown))
}

/// A connection to the store: one server (standalone, or the master found
/// through Sentinel), kept by a [`ConnectionManager`]; or a Redis Cluster,
/// whose client follows the slots itself.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The validated store settings. The URL and the password are secrets:
/// `Debug` shows the address without them.
#[derive(Clone, PartialEq)]
pub struct StoreConfig {
    url: String,
    pub(super) topology: Topology,
    password: Option<String>,
    shown: String,
    /// Longest wait for the store's answer on a request.
    pub timeout: Duration,
    /// What to do while the store is down.
    pub failure: StoreFailure,
    /// The namespace of every key.
    pub key_prefix: String,
    /// Whether refused keys are refused locally until their retry time.
    pub local_cache: bool,
    /// PEM certificates to trust for `rediss://` instead of the system's
    /// roots (`rate_limit_store_ca_file`).
    ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("address", &self.shown)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .field("key_prefix", &self.key_prefix)
            .field("local_cache", &self.local_cache)
            .field("ca_file", &self.ca_pem.is_some())
            .finish()
    }
}

impl StoreConfig {
    /// Validates `url` (`redis://` or `rediss://`, TLS) and the other
    /// settings. `password` is the one from the environment (`*_FILE`),
    /// if any. Errors never contain the URL (it may hold a password).
    pub fn new(
        url: &str,
        password: Option<String>,
        timeout_ms: Option<u64>,
        failure: Option<StoreFailure>,
        key_prefix: Option<String>,
        local_cache: Option<bool>,
    ) -> Result<Self, (&'static str, String)> {
        const URL: &str = "limits.rate_limit_store";
        let url = url.trim();
        let (topology, info, shown) = parse_url(url).map_err(|why| (URL, why))?;
        if info.redis_settings().password().is_some() && password.is_some() {
            return Err((
                URL,
                "the URL holds a password and TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD(_FILE) \
                 is set too: give it in one place"
                    .to_owned(),
            ));
        }
        if password.as_deref().is_some_and(str::is_empty) {
            return Err((
                "TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD",
                "is empty".to_owned(),
            ));
        }
        let timeout_ms = timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err((
                "limits.rate_limit_store_timeout_ms",
                format!("must be 1 to {MAX_TIMEOUT_MS}"),
            ));
        }
        let key_prefix = key_prefix.unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || !key_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            return Err((
                "limits.rate_limit_store_key_prefix",
                "must be 1 to 64 printable ASCII characters without spaces or braces".to_owned(),
            ));
        }
        Ok(Self {
            url: url.to_owned(),
            topology,
            password,
            shown,
            timeout: Duration::from_millis(timeout_ms),
            failure: failure.unwrap_or_default(),
            key_prefix,
            local_cache: local_cache.unwrap_or(true),
            ca_pem: None,
        })
    }

    /// Trusts the PEM certificates `pem` (a private CA) for `rediss://`
    /// instead of the system's roots. `what` names the setting in errors.
    pub fn with_ca_pem(
        mut self,
        what: &'static str,
        pem: Vec<u8>,
    ) -> Result<Self, (&'static str, String)> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        if !self.tls() {
            return Err((
                what,
                "needs a rediss:// or rediss+cluster:// (TLS) rate_limit_store".to_owned(),
            ));
        }
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (what, format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err((what, "no certificate found".to_owned()));
        }
        self.ca_pem = Some(pem);
        Ok(self)
    }

    /// The store's address without credentials (for logs).
    pub fn address(&self) -> &str {
        &self.shown
    }

    /// Whether the store is reached over TLS.
    fn tls(&self) -> bool {
        self.url.starts_with("rediss://") || self.url.starts_with("rediss+cluster://")
    }

    /// The connection info of a data node's URL, with the password from
    /// the environment.
    fn node_info(&self, url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
        if let Some(p) = &self.password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        Ok(info)
    }

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }

    /// Connects to the store: the server, the master the sentinels name
    /// now (checked with `ROLE`), or the cluster (its slots fetched).
    pub(super) async fn connect(&self) -> redis::RedisResult<Conn> {
        let manager = |client| {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(CONNECT_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_with_config(client, cfg)
        };
        match &self.topology {
            Topology::Single => {
                let info = self.node_info(&self.url)?;
                let client = match self.certificates() {
                    Some(certs) => redis::Client::build_with_tls(info, certs)?,
                    None => redis::Client::open(info)?,
                };
                Ok(Conn::Single(manager(client).await?))
            }
            Topology::Sentinel {
                sentinels,
                master,
                data,
            } => {
                let data = self.node_info(data)?;
                let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(data.redis_settings().clone());
                let mut sentinel = redis::sentinel::Sentinel::build(sentinels.clone())?;
                let client = sentinel.async_master_for(master, Some(&node)).await?;
                Ok(Conn::Single(manager(client).await?))
            }
            Topology::Cluster { nodes } => {
                let infos = nodes
                    .iter()
                    .map(|n| self.node_info(n))
                    .collect::<redis::RedisResult<Vec<_>>>()?;
                let mut builder = redis::cluster::ClusterClient::builder(infos)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(CONNECT_TIMEOUT)
                    .retries(2);
                if let Some(certs) = self.certificates() {
                    builder = builder.certs(certs);
                }
                let conn = builder.build()?.get_async_connection().await?;
                Ok(Conn::Cluster(conn))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> Result<StoreConfig, (&'static str, String)> {
        StoreConfig::new(url, None, None, None, None, None)
    }

    #[test]
    fn urls_are_checked_and_never_shown() {
        let c = cfg("redis://:hunter2secret@127.0.0.1:6380/2").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:6380"), "{shown}");
        assert_eq!(c.timeout, Duration::from_millis(25));
        assert_eq!(c.failure, StoreFailure::Local);
        assert_eq!(c.key_prefix, DEFAULT_KEY_PREFIX);
        assert!(c.address().starts_with("redis://127.0.0.1:6380/2"));
        for bad in ["http://x", "", "redis://:pw@[::1", "pw@host"] {
            let (what, why) = cfg(bad).unwrap_err();
            assert_eq!(what, "limits.rate_limit_store");
            assert!(!why.contains("pw"), "{why}");
        }
        let with_env = StoreConfig::new(
            "redis://127.0.0.1:6379",
            Some("envsecret".into()),
            Some(50),
            Some(StoreFailure::Deny),
            Some("fleet-a".into()),
            Some(false),
        )
        .unwrap();
        assert!(!format!("{with_env:?}").contains("envsecret"));
        assert!(
            StoreConfig::new("redis://:a@h:1", Some("b".into()), None, None, None, None).is_err()
        );
        let bad = |t: Option<u64>, p: Option<&str>| {
            StoreConfig::new("redis://h:1", None, t, None, p.map(Into::into), None)
                .unwrap_err()
                .0
        };
        assert_eq!(bad(Some(0), None), "limits.rate_limit_store_timeout_ms");
        assert_eq!(
            bad(Some(10_001), None),
            "limits.rate_limit_store_timeout_ms"
        );
        assert_eq!(bad(None, Some("a b")), "limits.rate_limit_store_key_prefix");
        assert_eq!(bad(None, Some("{x}")), "limits.rate_limit_store_key_prefix");
        assert!(cfg("rediss://cache.example:6380/0").is_ok());
    }

    #[test]
    fn sentinel_and_cluster_urls() {
        let s =
            cfg("redis+sentinel://:pw-s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/3").unwrap();
        assert_eq!(
            s.address(),
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/3"
        );
        assert!(!format!("{s:?}").contains("pw-s3cret"));
        match &s.topology {
            Topology::Sentinel {
                sentinels, master, ..
            } => {
                assert_eq!(master, "mymaster");
                // The password is for the master, not the sentinels.
                assert!(sentinels.iter().all(|u| !u.contains("pw-s3cret")));
            }
            _ => panic!("not sentinel"),
        }
        assert_eq!(
            cfg("redis+sentinel://h:26379/m").unwrap().address(),
            "redis+sentinel://h:26379/m/0"
        );
        let c = cfg("redis+cluster://:pw-s3cret@a:7000,b:7001").unwrap();
        assert_eq!(c.address(), "redis+cluster://a:7000,b:7001");
        assert!(!c.tls());
        assert!(cfg("rediss+cluster://a:7000").unwrap().tls());
        // A password in the URL and from the environment: refused.
        assert!(
            StoreConfig::new(
                "redis+cluster://:a@h:1",
                Some("b".into()),
                None,
                None,
                None,
                None
            )
            .is_err()
        );
        for bad in [
            "redis+sentinel://:pw-s3cret@h:26379",
            "redis+sentinel://:pw-s3cret@h:26379/",
            "redis+sentinel://:pw-s3cret@h:26379/m/x",
            "redis+sentinel://:pw-s3cret@h/m",
            "redis+cluster://:pw-s3cret@a:1,,b:2",
            "redis+cluster://:pw-s3cret@a:1/2",
            "redis+cluster://:pw-s3cret@",
            "redis+unix://:pw-s3cret@a:1",
        ] {
            let (what, why) = cfg(bad).unwrap_err();
            assert_eq!(what, "limits.rate_limit_store", "{bad}");
            assert!(!why.contains("pw-s3cret"), "{why}");
        }
    }
}
