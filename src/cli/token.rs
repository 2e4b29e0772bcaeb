//! `token <kind>`: builds a token locally from the credentials in the
//! environment, through the same [`Issuer`] rules as the service
//! (`--unchecked` skips them, for testing).

use super::CliError;
use crate::config::env::{self, ProcessEnv};
use crate::domain::{
    ApaasRoomUserRequest, ChatUserRequest, Checks, Common, Fixed, Issuer, Limits, Permit,
    PrivilegeExpires, RtcPrivilegesRequest, RtcRequest, RtcRtmRequest, RtcUser, RtmRequest,
};
use agora_token::Role;
use agora_token::service::{permission_type_name, resource_type_name};
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;

/// Options every `token` kind takes.
#[derive(Debug, Clone, Args)]
pub struct StampArgs {
    /// Issue time in unix seconds (default: now). For reproducible output.
    #[arg(long, value_name = "N")]
    pub issue_ts: Option<u32>,
    /// Salt (default: random in 1..=99999999). For reproducible output.
    #[arg(long, value_name = "N")]
    pub salt: Option<u32>,
    /// Skip the service's input rules and build anything the token format
    /// can pack (lengths up to 65535 bytes, any expiry). For testing only.
    #[arg(long)]
    pub unchecked: bool,
}

/// RTC role on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum RoleArg {
    /// Join and publish audio, video and data.
    #[default]
    Publisher,
    /// Join only.
    Subscriber,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Publisher => Role::Publisher,
            RoleArg::Subscriber => Role::Subscriber,
        }
    }
}

/// The RTC user: `--uid N` (0 = any user, the default) or `--account S`.
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
pub struct UserArgs {
    /// Numeric uid, 0..=4294967295 (0 = any user).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub uid: Option<u32>,
    /// String user account ("0" is the account "0", not a wildcard).
    #[arg(long, value_name = "S")]
    pub account: Option<String>,
}

impl UserArgs {
    pub(crate) fn user(&self) -> RtcUser {
        match (&self.account, self.uid) {
            (Some(a), _) => RtcUser::Account(a.clone()),
            (None, uid) => RtcUser::Uid(uid.unwrap_or(0)),
        }
    }
}

/// The four RTC privilege expiries.
#[derive(Debug, Clone, Args)]
pub struct PrivilegeArgs {
    /// joinChannel expiry, seconds.
    #[arg(long, value_name = "S")]
    pub join: Option<u32>,
    /// publishAudioStream expiry, seconds.
    #[arg(long, value_name = "S")]
    pub publish_audio: Option<u32>,
    /// publishVideoStream expiry, seconds.
    #[arg(long, value_name = "S")]
    pub publish_video: Option<u32>,
    /// publishDataStream expiry, seconds.
    #[arg(long, value_name = "S")]
    pub publish_data: Option<u32>,
}

impl PrivilegeArgs {
    /// `None` when none is given; an error when only some are.
    fn all_or_none(&self) -> Result<Option<PrivilegeExpires>, String> {
        let v = [
            self.join,
            self.publish_audio,
            self.publish_video,
            self.publish_data,
        ];
        match v.iter().filter(|x| x.is_some()).count() {
            0 => Ok(None),
            4 => Ok(Some(PrivilegeExpires {
                join_channel: self.join,
                publish_audio: self.publish_audio,
                publish_video: self.publish_video,
                publish_data: self.publish_data,
            })),
            _ => Err(
                "--join, --publish-audio, --publish-video and --publish-data go together: give all four or none"
                    .to_owned(),
            ),
        }
    }
}

/// `token <kind>`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// RTC token for a uid or account (official build_token_with_uid / _with_user_account).
    Rtc {
        /// Channel name ("" = any channel).
        #[arg(long, value_name = "C")]
        channel: String,
        #[command(flatten)]
        user: UserArgs,
        /// Role.
        #[arg(long, value_enum, default_value_t)]
        role: RoleArg,
        /// Token lifetime in seconds, 1..=86400.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        /// Privilege expiry in seconds, 0..=86400 (default: --expire; 0 is packed as 0).
        #[arg(long, value_name = "S")]
        privilege_expire: Option<u32>,
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// RTC token with a separate expiry per privilege (official _and_privilege builders).
    RtcPrivileges {
        /// Channel name.
        #[arg(long, value_name = "C")]
        channel: String,
        #[command(flatten)]
        user: UserArgs,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        /// joinChannel expiry, seconds.
        #[arg(long, value_name = "S")]
        join: u32,
        /// publishAudioStream expiry, seconds.
        #[arg(long, value_name = "S")]
        publish_audio: u32,
        /// publishVideoStream expiry, seconds.
        #[arg(long, value_name = "S")]
        publish_video: u32,
        /// publishDataStream expiry, seconds.
        #[arg(long, value_name = "S")]
        publish_data: u32,
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// RTC + RTM in one token (official build_token_with_rtm / _with_rtm2).
    RtcRtm {
        /// Channel name.
        #[arg(long, value_name = "C")]
        channel: String,
        #[command(flatten)]
        user: UserArgs,
        /// Role.
        #[arg(long, value_enum, default_value_t)]
        role: RoleArg,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        /// RTC privilege expiry (default: --expire), unless the four below are given.
        #[arg(long, value_name = "S")]
        privilege_expire: Option<u32>,
        #[command(flatten)]
        privileges: PrivilegeArgs,
        /// RTM user id (default: the RTC uid string).
        #[arg(long, value_name = "U")]
        rtm_user_id: Option<String>,
        /// RTM login expiry in seconds (default: --expire).
        #[arg(long, value_name = "S")]
        rtm_expire: Option<u32>,
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// RTM login token; RTM2 (service 8) with --rtm2 or any --permission.
    Rtm {
        /// RTM user id.
        #[arg(long, value_name = "U")]
        user_id: String,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        /// Build an RTM2 (service type 8) token even without permissions.
        #[arg(long)]
        rtm2: bool,
        /// RESOURCE:PERMISSION:R1,R2 — RESOURCE is message-channels, stream-channels,
        /// group-channels, server-groups or users (or the spec's name or number);
        /// PERMISSION is read or write (or 0/1); `\,` is a comma inside a name.
        /// Repeatable; a repeated RESOURCE:PERMISSION replaces the earlier list.
        #[arg(long, value_name = "SPEC", value_parser = parse_permission)]
        permission: Vec<(u16, u16, Vec<String>)>,
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// Chat user token.
    ChatUser {
        /// Chat user id.
        #[arg(long, value_name = "U")]
        user_id: String,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// Chat app token.
    ChatApp {
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// FPA token (24 hours, login privilege 0, as the official builder).
    Fpa {
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// APaaS / Education room-user token (APaaS + RTM + Chat).
    ApaasRoomUser {
        /// Room uuid.
        #[arg(long, value_name = "R")]
        room: String,
        /// User uuid.
        #[arg(long, value_name = "U")]
        user: String,
        /// Role (any 16-bit signed integer).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        role: i16,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// APaaS / Education user token.
    ApaasUser {
        /// User uuid.
        #[arg(long, value_name = "U")]
        user: String,
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        #[command(flatten)]
        stamp: StampArgs,
    },
    /// APaaS / Education app token.
    ApaasApp {
        /// Token lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        expire: u32,
        #[command(flatten)]
        stamp: StampArgs,
    },
}

/// Parses `RESOURCE:PERMISSION:R1,R2` (split at the first two colons).
pub fn parse_permission(spec: &str) -> Result<(u16, u16, Vec<String>), String> {
    let mut parts = spec.splitn(3, ':');
    let (Some(resource), Some(permission), Some(list)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected RESOURCE:PERMISSION:R1,R2 (the list may be empty)".to_owned());
    };
    let resource_type = match resource {
        "message-channels" | "messageChannels" => 0,
        "stream-channels" | "streamChannels" => 1,
        "group-channels" | "groupChannels" => 2,
        "server-groups" | "serverGroups" => 3,
        "users" => 4,
        n => match n.parse::<u16>() {
            Ok(v) if resource_type_name(v).is_some() => v,
            _ => {
                return Err(format!(
                    "unknown resource {n:?}: use message-channels, stream-channels, group-channels, server-groups, users or 0..=4"
                ));
            }
        },
    };
    let permission_type = match permission {
        "read" => 0,
        "write" => 1,
        n => match n.parse::<u16>() {
            Ok(v) if permission_type_name(v).is_some() => v,
            _ => return Err(format!("unknown permission {n:?}: use read, write, 0 or 1")),
        },
    };
    Ok((resource_type, permission_type, split_escaped(list)))
}

/// Splits at commas, `\,` standing for a comma inside a name (and `\\` for
/// a backslash). An empty string is an empty list.
pub(crate) fn split_escaped(list: &str) -> Vec<String> {
    if list.is_empty() {
        return Vec::new();
    }
    let mut out = vec![String::new()];
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ (',' | '\\')) => push_char(&mut out, n),
                Some(n) => {
                    push_char(&mut out, '\\');
                    push_char(&mut out, n);
                }
                None => push_char(&mut out, '\\'),
            },
            ',' => out.push(String::new()),
            c => push_char(&mut out, c),
        }
    }
    out
}

pub(crate) fn push_char(out: &mut Vec<String>, c: char) {
    match out.last_mut() {
        Some(last) => last.push(c),
        None => out.push(c.to_string()),
    }
}

pub(crate) fn fail(code: u8, msg: impl std::fmt::Display) -> Result<(), CliError> {
    Err(CliError::new(code, format!("error: {msg}")))
}

/// Runs `token <kind>`: prints the token and a newline on stdout.
pub fn token_main(cmd: TokenCommand) -> Result<(), CliError> {
    let creds = match env::credentials(&ProcessEnv::load()) {
        Ok(c) => c,
        Err(e) => return fail(1, e),
    };
    let stamp = stamp_of(&cmd);
    let mut issuer = Issuer::new(vec![creds]);
    if let Some(ts) = stamp.issue_ts {
        issuer = issuer.with_clock(Fixed(ts));
    }
    if let Some(salt) = stamp.salt {
        issuer = issuer.with_salt(Fixed(salt));
    }
    if stamp.unchecked {
        issuer = issuer.with_checks(Checks::FormatOnly);
    }
    let limits = Limits::default();
    let common = |expire: u32| Common {
        app_id: None,
        expire: Some(expire),
    };
    let result = match &cmd {
        TokenCommand::Rtc {
            channel,
            user,
            role,
            expire,
            privilege_expire,
            ..
        } => issuer.rtc(
            &RtcRequest {
                common: common(*expire),
                channel_name: channel.clone(),
                user: user.user(),
                role: (*role).into(),
                privilege_expire: *privilege_expire,
            },
            &limits,
        ),
        TokenCommand::RtcPrivileges {
            channel,
            user,
            expire,
            join,
            publish_audio,
            publish_video,
            publish_data,
            ..
        } => issuer.rtc_with_privileges(
            &RtcPrivilegesRequest {
                common: common(*expire),
                channel_name: channel.clone(),
                user: user.user(),
                privileges: PrivilegeExpires {
                    join_channel: Some(*join),
                    publish_audio: Some(*publish_audio),
                    publish_video: Some(*publish_video),
                    publish_data: Some(*publish_data),
                },
            },
            &limits,
        ),
        TokenCommand::RtcRtm {
            channel,
            user,
            role,
            expire,
            privilege_expire,
            privileges,
            rtm_user_id,
            rtm_expire,
            ..
        } => {
            let privileges = match privileges.all_or_none() {
                Ok(p) => p,
                Err(e) => return fail(2, e),
            };
            issuer.rtc_rtm(
                &RtcRtmRequest {
                    common: common(*expire),
                    channel_name: channel.clone(),
                    user: user.user(),
                    role: (*role).into(),
                    privilege_expire: *privilege_expire,
                    privileges,
                    rtm_user_id: rtm_user_id.clone(),
                    rtm_expire: *rtm_expire,
                },
                &limits,
            )
        }
        TokenCommand::Rtm {
            user_id,
            expire,
            rtm2,
            permission,
            ..
        } => issuer.rtm(
            &RtmRequest {
                common: common(*expire),
                user_id: user_id.clone(),
                rtm2: *rtm2,
                permissions: permission.clone(),
            },
            &limits,
        ),
        TokenCommand::ChatUser {
            user_id, expire, ..
        } => issuer.chat_user(
            &ChatUserRequest {
                common: common(*expire),
                user_id: user_id.clone(),
            },
            &limits,
        ),
        TokenCommand::ChatApp { expire, .. } => issuer.chat_app(&common(*expire), &limits),
        TokenCommand::Fpa { .. } => issuer.fpa(&Common::default(), &limits),
        TokenCommand::ApaasRoomUser {
            room,
            user,
            role,
            expire,
            ..
        } => issuer.apaas_room_user(
            &ApaasRoomUserRequest {
                common: common(*expire),
                room_uuid: room.clone(),
                user_uuid: user.clone(),
                role: *role,
            },
            &limits,
        ),
        TokenCommand::ApaasUser { user, expire, .. } => {
            issuer.apaas_user(&common(*expire), user, &limits)
        }
        TokenCommand::ApaasApp { expire, .. } => issuer.apaas_app(&common(*expire), &limits),
    };
    // The operator holds the certificate: no caller policy applies.
    match result.and_then(|draft| issuer.sign(&draft, &Permit::local())) {
        Ok(issued) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{}", issued.token)
                .and_then(|()| out.flush())
                .is_err()
            {
                return Err(CliError::silent(1));
            }
            Ok(())
        }
        Err(e) => fail(2, cli_names(&e.to_string())),
    }
}

/// Rewrites the service's field names in a rule violation into the CLI's flags.
pub(crate) fn cli_names(msg: &str) -> String {
    const NAMES: [(&str, &str); 9] = [
        ("channel_name:", "--channel:"),
        ("privilege_expire_seconds:", "--privilege-expire:"),
        ("expire_seconds:", "--expire:"),
        ("join_channel_expire_seconds:", "--join:"),
        ("publish_audio_expire_seconds:", "--publish-audio:"),
        ("publish_video_expire_seconds:", "--publish-video:"),
        ("publish_data_expire_seconds:", "--publish-data:"),
        ("rtm_user_id", "--rtm-user-id"),
        ("rtm_expire_seconds:", "--rtm-expire:"),
    ];
    for (from, to) in NAMES {
        if let Some(rest) = msg.strip_prefix(from) {
            return format!("{to}{rest}").replace("give rtm_user_id", "give --rtm-user-id");
        }
    }
    for (from, to) in [
        ("account:", "--account:"),
        ("user_id:", "--user-id:"),
        ("room_uuid:", "--room:"),
        ("user_uuid:", "--user:"),
        ("permissions", "--permission "),
    ] {
        if let Some(rest) = msg.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    msg.to_owned()
}

pub(crate) fn stamp_of(cmd: &TokenCommand) -> &StampArgs {
    match cmd {
        TokenCommand::Rtc { stamp, .. }
        | TokenCommand::RtcPrivileges { stamp, .. }
        | TokenCommand::RtcRtm { stamp, .. }
        | TokenCommand::Rtm { stamp, .. }
        | TokenCommand::ChatUser { stamp, .. }
        | TokenCommand::ChatApp { stamp, .. }
        | TokenCommand::Fpa { stamp }
        | TokenCommand::ApaasRoomUser { stamp, .. }
        | TokenCommand::ApaasUser { stamp, .. }
        | TokenCommand::ApaasApp { stamp, .. } => stamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_specs() {
        assert_eq!(
            parse_permission("message-channels:read:a,b").unwrap(),
            (0, 0, vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(parse_permission("users:write:").unwrap(), (4, 1, vec![]));
        assert_eq!(
            parse_permission("streamChannels:1:x\\,y,z:w").unwrap(),
            (1, 1, vec!["x,y".to_owned(), "z:w".to_owned()])
        );
        assert_eq!(parse_permission("3:0:g").unwrap().0, 3);
        assert!(parse_permission("nope:read:a").is_err());
        assert!(parse_permission("users:admin:a").is_err());
        assert!(parse_permission("users:read").is_err());
    }

    #[test]
    fn violations_name_flags() {
        assert_eq!(cli_names("channel_name: too long"), "--channel: too long");
        assert_eq!(cli_names("expire_seconds: x"), "--expire: x");
        assert_eq!(
            cli_names("privilege_expire_seconds: x"),
            "--privilege-expire: x"
        );
    }
}
