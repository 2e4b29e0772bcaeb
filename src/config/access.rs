//! What a new configuration changes about who may get which tokens: the
//! summary a reload logs at WARN (callers added, removed or changed, open
//! mode turned on or off, the anonymous policy added, removed or changed).

use std::fmt;

use crate::policy::{AnonymousConfig, CallerConfig, PolicyConfig};

/// The access-relevant part of a configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Access {
    /// `[[callers]]` (empty: open mode).
    pub callers: Vec<CallerConfig>,
    /// `[anonymous]`.
    pub anonymous: Option<AnonymousConfig>,
    /// `[[jwt_issuers]]`.
    pub jwt_issuers: Vec<crate::policy::jwt::JwtIssuerConfig>,
}

impl Access {
    /// Whether the service runs open (no callers and no JWT issuers: every
    /// request is allowed).
    pub fn is_open(&self) -> bool {
        self.callers.is_empty() && self.jwt_issuers.is_empty()
    }
}

/// How the anonymous policy changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnonymousChange {
    /// `[anonymous]` appeared.
    Added,
    /// `[anonymous]` disappeared.
    Removed,
    /// `[anonymous]` has other values.
    Changed,
}

/// The difference in access between two configurations. Empty when only
/// certificates, apps or restart-only settings changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessChange {
    /// Callers (by name) in the new configuration only.
    pub callers_added: Vec<String>,
    /// Callers (by name) in the old configuration only.
    pub callers_removed: Vec<String>,
    /// Callers in both whose entry differs, with the keys that differ.
    pub callers_changed: Vec<(String, Vec<&'static str>)>,
    /// `Some(true)`: open mode turned on; `Some(false)`: turned off.
    pub open_mode: Option<bool>,
    /// The anonymous policy's change.
    pub anonymous: Option<AnonymousChange>,
    /// `[[jwt_issuers]]` entries added, removed or changed (`added NAME`, ...).
    pub jwt_issuers: Vec<String>,
}

impl AccessChange {
    /// The change from `old` to `new`. Caller names are unique (checked
    /// when the policies are compiled), so callers are matched by name.
    pub fn between(old: &Access, new: &Access) -> Self {
        let find = |list: &[CallerConfig], name: &str| list.iter().position(|c| c.name == name);
        let callers_added = new
            .callers
            .iter()
            .filter(|c| find(&old.callers, &c.name).is_none())
            .map(|c| c.name.clone())
            .collect();
        let callers_removed = old
            .callers
            .iter()
            .filter(|c| find(&new.callers, &c.name).is_none())
            .map(|c| c.name.clone())
            .collect();
        let callers_changed = new
            .callers
            .iter()
            .filter_map(|n| {
                let o = &old.callers[find(&old.callers, &n.name)?];
                let keys = caller_keys_changed(o, n);
                (!keys.is_empty()).then(|| (n.name.clone(), keys))
            })
            .collect();
        let open_mode = (old.is_open() != new.is_open()).then_some(new.is_open());
        let anonymous = match (&old.anonymous, &new.anonymous) {
            (None, Some(_)) => Some(AnonymousChange::Added),
            (Some(_), None) => Some(AnonymousChange::Removed),
            (Some(a), Some(b)) if a != b => Some(AnonymousChange::Changed),
            _ => None,
        };
        let mut jwt_issuers = Vec::new();
        for n in &new.jwt_issuers {
            match old.jwt_issuers.iter().find(|o| o.name == n.name) {
                None => jwt_issuers.push(format!("added {}", n.name)),
                Some(o) if o != n => jwt_issuers.push(format!("changed {}", n.name)),
                Some(_) => {}
            }
        }
        for o in &old.jwt_issuers {
            if !new.jwt_issuers.iter().any(|n| n.name == o.name) {
                jwt_issuers.push(format!("removed {}", o.name));
            }
        }
        Self {
            callers_added,
            callers_removed,
            callers_changed,
            open_mode,
            anonymous,
            jwt_issuers,
        }
    }

    /// Nothing about access changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The keys of a `[[callers]]` entry that differ between `a` and `b`.
fn caller_keys_changed(a: &CallerConfig, b: &CallerConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key, differs: bool| {
        if differs {
            keys.push(key);
        }
    };
    check("api_key_sha256", a.api_key_sha256 != b.api_key_sha256);
    check("tls_client_names", a.tls_client_names != b.tls_client_names);
    check("revoked", a.revoked != b.revoked);
    let (p, q): (&PolicyConfig, &PolicyConfig) = (&a.policy, &b.policy);
    check("rpcs", p.rpcs != q.rpcs);
    check("kinds", p.kinds != q.kinds);
    check("apps", p.apps != q.apps);
    check("channels", p.channels != q.channels);
    check("allow_wildcard", p.allow_wildcard != q.allow_wildcard);
    check("uid_ranges", p.uid_ranges != q.uid_ranges);
    check("accounts", p.accounts != q.accounts);
    check("user_ids", p.user_ids != q.user_ids);
    check(
        "max_expire_seconds",
        p.max_expire_seconds != q.max_expire_seconds,
    );
    check("roles", p.roles != q.roles);
    check("rate_per_second", p.rate_per_second != q.rate_per_second);
    check("burst", p.burst != q.burst);
    if keys.is_empty() && a != b {
        // A key added to the structs but not to this list.
        keys.push("policy");
    }
    keys
}

/// `callers added: [a, b]; callers removed: [c]; callers changed: [d
/// (channels, revoked)]; open mode: on; anonymous policy: removed`, only
/// the parts that changed; `no access change` when empty.
impl fmt::Display for AccessChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(open) = self.open_mode {
            parts.push(format!(
                "open mode: {}",
                if open {
                    "ON (no callers: anyone who can reach the service gets tokens)"
                } else {
                    "off"
                }
            ));
        }
        if !self.callers_added.is_empty() {
            parts.push(format!(
                "callers added: [{}]",
                self.callers_added.join(", ")
            ));
        }
        if !self.callers_removed.is_empty() {
            parts.push(format!(
                "callers removed: [{}]",
                self.callers_removed.join(", ")
            ));
        }
        if !self.callers_changed.is_empty() {
            let changed: Vec<String> = self
                .callers_changed
                .iter()
                .map(|(name, keys)| format!("{name} ({})", keys.join(", ")))
                .collect();
            parts.push(format!("callers changed: [{}]", changed.join(", ")));
        }
        if let Some(a) = self.anonymous {
            parts.push(format!(
                "anonymous policy: {}",
                match a {
                    AnonymousChange::Added => "added",
                    AnonymousChange::Removed => "removed",
                    AnonymousChange::Changed => "changed",
                }
            ));
        }
        if !self.jwt_issuers.is_empty() {
            parts.push(format!("JWT issuers: [{}]", self.jwt_issuers.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("no access change")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, channels: &[&str]) -> CallerConfig {
        CallerConfig {
            name: name.to_owned(),
            api_key_sha256: Some("ab".repeat(32)),
            policy: PolicyConfig {
                kinds: Some(vec!["rtc".to_owned()]),
                channels: Some(channels.iter().map(|c| (*c).to_owned()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn access(callers: Vec<CallerConfig>, anonymous: Option<AnonymousConfig>) -> Access {
        Access {
            callers,
            anonymous,
            jwt_issuers: Vec::new(),
        }
    }

    #[test]
    fn added_removed_and_changed_callers_by_name_with_the_keys() {
        let old = access(vec![caller("a", &["x-*"]), caller("b", &["y-*"])], None);
        let mut revoked = caller("a", &["x-*", "z-*"]);
        revoked.revoked = true;
        let new = access(vec![revoked, caller("c", &["y-*"])], None);
        let d = AccessChange::between(&old, &new);
        assert_eq!(d.callers_added, vec!["c"]);
        assert_eq!(d.callers_removed, vec!["b"]);
        assert_eq!(
            d.callers_changed,
            vec![("a".to_owned(), vec!["revoked", "channels"])]
        );
        assert_eq!(d.open_mode, None);
        assert_eq!(
            d.to_string(),
            "callers added: [c]; callers removed: [b]; callers changed: [a (revoked, channels)]"
        );
    }

    #[test]
    fn open_mode_on_and_off_and_the_anonymous_policy() {
        let locked = access(
            vec![caller("a", &["x-*"])],
            Some(AnonymousConfig::default()),
        );
        let open = access(Vec::new(), None);
        let d = AccessChange::between(&locked, &open);
        assert_eq!(d.open_mode, Some(true));
        assert_eq!(d.callers_removed, vec!["a"]);
        assert_eq!(d.anonymous, Some(AnonymousChange::Removed));
        let s = d.to_string();
        assert!(
            s.starts_with("open mode: ON") && s.ends_with("anonymous policy: removed"),
            "{s}"
        );
        let back = AccessChange::between(&open, &locked);
        assert_eq!(back.open_mode, Some(false));
        assert_eq!(back.anonymous, Some(AnonymousChange::Added));
        assert!(
            back.to_string()
                .starts_with("open mode: off; callers added: [a]")
        );

        let anon = AnonymousConfig {
            channels: Some(vec!["public-*".to_owned()]),
            ..Default::default()
        };
        let changed = access(vec![caller("a", &["x-*"])], Some(anon));
        assert_eq!(
            AccessChange::between(&locked, &changed).to_string(),
            "anonymous policy: changed"
        );
    }

    #[test]
    fn same_access_is_empty() {
        let a = access(vec![caller("a", &["x-*"])], None);
        let d = AccessChange::between(&a, &a.clone());
        assert!(d.is_empty());
        assert_eq!(d.to_string(), "no access change");
        assert!(AccessChange::between(&Access::default(), &Access::default()).is_empty());
    }

    #[test]
    fn jwt_issuers_added_changed_removed() {
        let issuer = |name: &str, aud: &str| crate::policy::jwt::JwtIssuerConfig {
            name: name.to_owned(),
            audiences: vec![aud.to_owned()],
            ..Default::default()
        };
        let old = Access {
            jwt_issuers: vec![issuer("a", "x"), issuer("b", "x")],
            ..Default::default()
        };
        let new = Access {
            jwt_issuers: vec![issuer("a", "y"), issuer("c", "x")],
            ..Default::default()
        };
        let c = AccessChange::between(&old, &new);
        assert_eq!(
            c.to_string(),
            "JWT issuers: [changed a, added c, removed b]"
        );
        assert!(!old.is_open() && Access::default().is_open());
        assert_eq!(
            AccessChange::between(&Access::default(), &old).open_mode,
            Some(false)
        );
    }
}
