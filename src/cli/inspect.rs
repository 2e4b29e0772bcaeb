//! `inspect`: decodes any token and, with credentials, verifies it.

use super::CliError;
use super::*;
use crate::config::env::{self, ProcessEnv};
use crate::domain::{Inspection, Issuer, RtcUser, SignatureStatus, TokenVersion};
use agora_token::Payload;
use agora_token::service::{permission_type_name, resource_type_name};
use clap::Args;
use std::io::{Read, Write};

/// `inspect` options.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The token, or `-` to read it from stdin (keeps it out of shell history).
    pub token: String,
    /// Print JSON (the service's InspectToken response) instead of text.
    #[arg(long)]
    pub json: bool,
    /// For a legacy 006 token: the channel name it was made for (needed to verify it).
    #[arg(long, value_name = "C")]
    pub channel: Option<String>,
    #[command(flatten)]
    pub user: UserArgs,
}

/// Runs `inspect`: exit 0 when the token parses and its signature is not
/// INVALID, 1 when it is rejected or INVALID, 2 for usage errors.
pub fn inspect_main(args: &InspectArgs) -> Result<(), CliError> {
    let token = if args.token == "-" {
        let mut s = String::new();
        // Cap what we read: a token is at most MAX_TOKEN_LEN characters.
        let cap = u64::try_from(agora_token::MAX_TOKEN_LEN + 2).unwrap_or(u64::MAX);
        if let Err(e) = std::io::stdin().take(cap).read_to_string(&mut s) {
            return fail(2, format!("cannot read the token from stdin: {e}"));
        }
        s
    } else {
        args.token.clone()
    };
    let env = ProcessEnv::load();
    // Verification is optional: without credentials, report NOT_CHECKED.
    let apps = match env::credentials(&env) {
        Ok(c) => vec![c],
        Err(env::EnvError::Missing(..)) => Vec::new(),
        Err(e) => {
            eprintln!("warning: not verifying: {e}");
            Vec::new()
        }
    };
    let issuer = Issuer::new(apps);
    let uid = args.user.user();
    let uid_string = match &uid {
        RtcUser::Uid(u) => agora_token::service::uid_string(*u),
        RtcUser::Account(a) => a.clone(),
    };
    let identity = args.channel.as_deref().map(|c| (c, uid_string.as_str()));
    let ins = match issuer.inspect(&token, identity) {
        Ok(i) => i,
        Err(e) => {
            let hint = if token.trim().starts_with("007") || token.trim().starts_with("006") {
                ""
            } else {
                " (an AccessToken2 starts with 007; a legacy v1 token with 006)"
            };
            return fail(1, format!("{e}{hint}"));
        }
    };
    let text = if args.json {
        crate::api::inspection_json(&ins)
    } else {
        inspection_text(&ins)
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
        return Err(CliError::silent(1));
    }
    if ins.signature == SignatureStatus::Invalid {
        Err(CliError::silent(1))
    } else {
        Ok(())
    }
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn time(ts: u64) -> String {
    format!("{ts} ({})", rfc3339(ts))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds (proleptic Gregorian, UTC).
pub fn rfc3339(ts: u64) -> String {
    let days = ts / 86_400;
    let secs = ts % 86_400;
    let (year, month, day) = crate::domain::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A human-readable report of an inspection.
pub fn inspection_text(ins: &Inspection) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let status = match ins.signature {
        SignatureStatus::Valid => "VALID".to_owned(),
        SignatureStatus::Invalid => "INVALID".to_owned(),
        SignatureStatus::NotChecked => format!(
            "NOT_CHECKED ({})",
            ins.not_checked.unwrap_or(crate::domain::NO_CERTIFICATE)
        ),
    };
    // Writing to a String cannot fail; the results are ignored.
    match ins.version {
        TokenVersion::V007 => {
            let _ = writeln!(s, "version:    007 (AccessToken2)");
            let _ = writeln!(s, "app id:     {}", ins.app_id);
            let _ = writeln!(s, "issued at:  {}", time(u64::from(ins.issued_at)));
            let _ = writeln!(
                s,
                "expires at: {}  (lifetime {} s){}",
                time(ins.expires_at),
                ins.expire,
                if ins.expired { "  EXPIRED" } else { "" }
            );
            let _ = writeln!(s, "salt:       {}", ins.salt);
        }
        TokenVersion::V006 => {
            let _ = writeln!(
                s,
                "version:    006 (legacy AccessToken v1, not AccessToken2)"
            );
            let _ = writeln!(s, "app id:     {}", ins.app_id);
            let _ = writeln!(
                s,
                "expires at: {}{}",
                time(ins.expires_at),
                if ins.expired { "  EXPIRED" } else { "" }
            );
            let _ = writeln!(s, "salt:       {}", ins.salt);
            if let Some((c, u)) = ins.v1_crc {
                let _ = writeln!(s, "crc32:      channel {c:#010x}, uid {u:#010x}");
            }
        }
    }
    let _ = writeln!(s, "signature:  {status}");
    for svc in &ins.services {
        if ins.version == TokenVersion::V006 {
            let _ = writeln!(s, "privileges (absolute times):");
        } else {
            let _ = writeln!(s, "service {} ({}):", svc.service_type, svc.name);
        }
        match &svc.payload {
            Payload::Rtc { channel_name, uid } => {
                let _ = writeln!(
                    s,
                    "  channel:  {:?}{}",
                    lossy(channel_name),
                    if channel_name.is_empty() {
                        " (any channel)"
                    } else {
                        ""
                    }
                );
                let _ = writeln!(
                    s,
                    "  uid:      {:?}{}",
                    lossy(uid),
                    if uid.is_empty() { " (any user)" } else { "" }
                );
            }
            Payload::Rtm { user_id } | Payload::Chat { user_id } => {
                let _ = writeln!(s, "  user id:  {:?}", lossy(user_id));
            }
            Payload::Streaming {
                channel_name,
                account,
            }
            | Payload::Fcdn {
                channel_name,
                account,
            } => {
                let _ = writeln!(s, "  channel:  {:?}", lossy(channel_name));
                let _ = writeln!(s, "  account:  {:?}", lossy(account));
            }
            Payload::Apaas {
                room_uuid,
                user_uuid,
                role,
            } => {
                let _ = writeln!(s, "  room:     {:?}", lossy(room_uuid));
                let _ = writeln!(s, "  user:     {:?}", lossy(user_uuid));
                let _ = writeln!(s, "  role:     {role}");
            }
            Payload::Rtm2 {
                user_id,
                permissions,
            } => {
                let _ = writeln!(s, "  user id:  {:?}", lossy(user_id));
                for g in permissions.grants() {
                    let list: Vec<String> = g.resources.iter().map(|r| lossy(r)).collect();
                    let _ = writeln!(
                        s,
                        "  {} {}: {:?}",
                        resource_type_name(g.resource_type).unwrap_or("?"),
                        permission_type_name(g.permission_type).unwrap_or("?"),
                        list
                    );
                }
            }
            Payload::Fpa | Payload::Other(_) => {}
        }
        for p in &svc.privileges {
            let name = p
                .name
                .map_or_else(|| format!("unknown ({})", p.id), str::to_owned);
            let when = match ins.version {
                TokenVersion::V006 if p.expire == 0 => "never expires".to_owned(),
                TokenVersion::V006 => time(p.expires_at),
                TokenVersion::V007 if p.expire == 0 => {
                    "0 (no separate limit: the token expiry applies)".to_owned()
                }
                TokenVersion::V007 => format!("+{} s = {}", p.expire, time(p.expires_at)),
            };
            let _ = writeln!(s, "  {name:<20} {when}");
        }
    }
    // The reason a signature was not checked is on the signature line.
    for n in ins
        .notes
        .iter()
        .filter(|n| !n.starts_with("not verified: "))
    {
        let _ = writeln!(s, "note: {n}");
    }
    s.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(u64::from(u32::MAX)), "2106-02-07T06:28:15Z");
    }
}
