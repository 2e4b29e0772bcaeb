//! Input rules shared by every transport and the CLI (spec section 10 and
//! DESIGN 4.1): channel names, accounts, user ids and expiries. Each
//! violation names the field and the rule.

use std::fmt;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 64;
/// Longest user account (string uid), in bytes.
pub const MAX_ACCOUNT_LEN: usize = 255;
/// Longest RTM / RTM2 / Chat user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 64;
/// Longest APaaS room or user uuid, in bytes.
pub const MAX_UUID_LEN: usize = 64;
/// Longest RTM2 resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 128;
/// Most resources in one RTM2 grant.
pub const MAX_RESOURCES: usize = 256;
/// Most services in one generic token.
pub const MAX_SERVICES: usize = 16;
/// Longest token lifetime and privilege expiry, in seconds (24 h).
pub const MAX_EXPIRE: u32 = 86_400;
/// Token lifetime when the request gives none.
pub const DEFAULT_EXPIRE: u32 = 3_600;

/// A request field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, as named in the request (proto field name).
    pub field: String,
    /// The rule it breaks.
    pub rule: String,
}

impl Violation {
    /// A violation of `rule` by `field`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

impl std::error::Error for Violation {}

/// Whether `b` is in the Agora channel-name / account character set:
/// a-z, A-Z, 0-9, space and `! # $ % & ( ) + - : ; < = . > ? @ [ ] ^ _ { } | ~ ,`.
pub fn is_agora_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" !#$%&()+-:;<=.>?@[]^_{}|~,".contains(&b)
}

const CHARSET_RULE: &str =
    "letters, digits, space and ! # $ % & ( ) + - : ; < = . > ? @ [ ] ^ _ { } | ~ ,";

fn check_charset(field: &str, s: &str) -> Result<(), Violation> {
    match s.bytes().position(|b| !is_agora_char(b)) {
        None => Ok(()),
        Some(i) => Err(Violation::new(
            field,
            format!("character at byte {i} is not allowed; use only {CHARSET_RULE}"),
        )),
    }
}

/// Channel name: `""` (any channel) or 1..=64 bytes of the Agora set.
pub fn channel_name(field: &str, s: &str) -> Result<(), Violation> {
    if s.len() > MAX_CHANNEL_LEN {
        return Err(Violation::new(
            field,
            format!("must be at most {MAX_CHANNEL_LEN} bytes, got {}", s.len()),
        ));
    }
    check_charset(field, s)
}

/// User account (string uid): 1..=255 bytes of the Agora set.
pub fn account(field: &str, s: &str) -> Result<(), Violation> {
    if s.is_empty() {
        return Err(Violation::new(
            field,
            "must not be empty (use uid 0 for any user)",
        ));
    }
    if s.len() > MAX_ACCOUNT_LEN {
        return Err(Violation::new(
            field,
            format!("must be at most {MAX_ACCOUNT_LEN} bytes, got {}", s.len()),
        ));
    }
    check_charset(field, s)
}

/// RTM / RTM2 / Chat user id: 1..=64 bytes, no control characters.
pub fn user_id(field: &str, s: &str) -> Result<(), Violation> {
    bounded_text(field, s, MAX_USER_ID_LEN)
}

/// Non-empty text of at most `max` bytes without control characters.
pub fn bounded_text(field: &str, s: &str, max: usize) -> Result<(), Violation> {
    if s.is_empty() {
        return Err(Violation::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(Violation::new(
            field,
            format!("must be at most {max} bytes, got {}", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Violation::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Token lifetime: 1..=86400 seconds.
pub fn token_expire(field: &str, v: u32) -> Result<u32, Violation> {
    if (1..=MAX_EXPIRE).contains(&v) {
        Ok(v)
    } else {
        Err(Violation::new(
            field,
            format!("must be 1..={MAX_EXPIRE} seconds, got {v}"),
        ))
    }
}

/// Privilege expiry: 0..=86400 seconds (0 is packed as 0).
pub fn privilege_expire(field: &str, v: u32) -> Result<u32, Violation> {
    if v <= MAX_EXPIRE {
        Ok(v)
    } else {
        Err(Violation::new(
            field,
            format!("must be 0..={MAX_EXPIRE} seconds, got {v}"),
        ))
    }
}

/// A uid given as text: decimal digits only, 0..=4294967295.
pub fn parse_uid(field: &str, s: &str) -> Result<u32, Violation> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Violation::new(
            field,
            "must be a decimal integer 0..=4294967295 (digits only)",
        ));
    }
    s.parse::<u32>()
        .map_err(|_| Violation::new(field, "must be at most 4294967295"))
}

/// A uid given as a string where the decimal form is the identity (the
/// agent and user of a session): [`parse_uid`], and no leading zeros, so
/// the string is exactly what the token packs (`"01001"` would be packed
/// as `1001`, a different identity).
pub fn canonical_uid(field: &str, s: &str) -> Result<u32, Violation> {
    let n = parse_uid(field, s)?;
    if s.len() > 1 && s.starts_with('0') {
        return Err(Violation::new(
            field,
            "must be a decimal uid without leading zeros (for a string account set string_uid)",
        ));
    }
    Ok(n)
}

/// A value from a request that may be a secret (an app id field holding a
/// certificate, a key pasted into a field name) as errors and logs may
/// show it: at most 8 characters, escaped, with `…` when cut.
pub fn redact(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 8 {
            out.push('…');
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rules() {
        assert!(channel_name("c", "").is_ok());
        assert!(channel_name("c", "a Z 9 !#$%&()+-:;<=.>?@[]^_{}|~,").is_ok());
        assert!(channel_name("c", &"x".repeat(64)).is_ok());
        assert!(channel_name("c", &"x".repeat(65)).is_err());
        for bad in ["a/b", "a\"b", "a'b", "a*b", "a\\b", "a`b", "café", "a\nb"] {
            let e = channel_name("channel_name", bad).unwrap_err();
            assert_eq!(e.field, "channel_name");
        }
    }

    #[test]
    fn uid_and_expiry_rules() {
        assert_eq!(parse_uid("uid", "4294967295"), Ok(u32::MAX));
        assert!(parse_uid("uid", "4294967296").is_err());
        assert!(parse_uid("uid", "-1").is_err());
        assert!(parse_uid("uid", "+1").is_err());
        assert!(parse_uid("uid", "").is_err());
        assert!(token_expire("e", 0).is_err());
        assert!(token_expire("e", 86_401).is_err());
        assert_eq!(privilege_expire("p", 0), Ok(0));
        assert!(account("a", "").is_err());
        assert!(account("a", &"a".repeat(256)).is_err());
        assert!(user_id("u", &"u".repeat(65)).is_err());
    }

    #[test]
    fn redacted_values_keep_eight_characters() {
        assert_eq!(redact("970CA35de60c44645bbae8a215061b33"), "970CA35d…");
        assert_eq!(redact("short"), "short");
        assert_eq!(redact("a\nb"), "a\\nb");
        assert_eq!(redact(""), "");
    }
}
