//! Services and privileges (spec section 3.1 to 3.3).
//!
//! A [`Service`] is a privilege map plus a type-specific payload. Strings are
//! kept as raw bytes: the format carries opaque byte strings and a parsed
//! token may hold bytes that are not UTF-8 (python3, Node.js and Go keep
//! them, and so do we, so a parsed token re-packs to the same bytes).

use crate::error::{BuildError, ParseError};
use crate::pack::{Reader, Writer};

/// Service type numbers.
pub mod service_type {
    /// Real-time communication (audio / video channel).
    pub const RTC: u16 = 1;
    /// Real-time messaging (Signaling) login.
    pub const RTM: u16 = 2;
    /// Media streaming (no official builder).
    pub const STREAMING: u16 = 3;
    /// Fast packet acceleration.
    pub const FPA: u16 = 4;
    /// Chat.
    pub const CHAT: u16 = 5;
    /// Fusion CDN (no official builder).
    pub const FCDN: u16 = 6;
    /// APaaS / Flexible Classroom (Education).
    pub const APAAS: u16 = 7;
    /// RTM with resource permissions.
    pub const RTM2: u16 = 8;
}

/// Privilege ids, per service.
pub mod privilege {
    /// RTC: join the channel.
    pub const RTC_JOIN_CHANNEL: u16 = 1;
    /// RTC: publish audio.
    pub const RTC_PUBLISH_AUDIO_STREAM: u16 = 2;
    /// RTC: publish video.
    pub const RTC_PUBLISH_VIDEO_STREAM: u16 = 3;
    /// RTC: publish data streams.
    pub const RTC_PUBLISH_DATA_STREAM: u16 = 4;
    /// RTM: log in.
    pub const RTM_LOGIN: u16 = 1;
    /// Streaming: publish a mixed stream.
    pub const STREAMING_PUBLISH_MIX_STREAM: u16 = 1;
    /// Streaming: publish a raw stream.
    pub const STREAMING_PUBLISH_RAW_STREAM: u16 = 2;
    /// FPA: log in.
    pub const FPA_LOGIN: u16 = 1;
    /// Chat: user.
    pub const CHAT_USER: u16 = 1;
    /// Chat: app.
    pub const CHAT_APP: u16 = 2;
    /// FCDN: publish.
    pub const FCDN_PUBLISH: u16 = 1;
    /// FCDN: play.
    pub const FCDN_PLAY: u16 = 2;
    /// APaaS: room user.
    pub const APAAS_ROOM_USER: u16 = 1;
    /// APaaS: user.
    pub const APAAS_USER: u16 = 2;
    /// APaaS: app.
    pub const APAAS_APP: u16 = 3;
    /// RTM2: log in.
    pub const RTM2_LOGIN: u16 = 1;
}

/// The name of a service type, as `parse.py` prints it (`UNKNOWN` otherwise).
pub fn service_name(service_type: u16) -> &'static str {
    match service_type {
        1 => "RTC",
        2 => "RTM",
        3 => "STREAMING",
        4 => "FPA",
        5 => "CHAT",
        6 => "FCDN",
        7 => "APAAS",
        8 => "RTM2",
        _ => "UNKNOWN",
    }
}

/// The name of a privilege id within a service type, if it has one.
pub fn privilege_name(service_type: u16, id: u16) -> Option<&'static str> {
    Some(match (service_type, id) {
        (1, 1) => "joinChannel",
        (1, 2) => "publishAudioStream",
        (1, 3) => "publishVideoStream",
        (1, 4) => "publishDataStream",
        (2, 1) | (4, 1) | (8, 1) => "login",
        (3, 1) => "publishMixStream",
        (3, 2) => "publishRawStream",
        (5, 1) => "user",
        (5, 2) => "app",
        (6, 1) => "publish",
        (6, 2) => "play",
        (7, 1) => "roomUser",
        (7, 2) => "user",
        (7, 3) => "app",
        _ => return None,
    })
}

/// A privilege map: ids to expiry seconds relative to the token's issue time,
/// kept sorted by id with unique ids (adding an id again keeps the last value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges(Vec<(u16, u32)>);

impl Privileges {
    /// An empty map.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Sets privilege `id` to `expire` seconds, replacing an earlier value.
    pub fn set(&mut self, id: u16, expire: u32) {
        match self.0.binary_search_by_key(&id, |&(k, _)| k) {
            Ok(i) => self.0[i].1 = expire,
            Err(i) => self.0.insert(i, (id, expire)),
        }
    }

    /// Builder-style [`Privileges::set`].
    #[must_use]
    pub fn with(mut self, id: u16, expire: u32) -> Self {
        self.set(id, expire);
        self
    }

    /// The value of privilege `id`.
    pub fn get(&self, id: u16) -> Option<u32> {
        self.0
            .binary_search_by_key(&id, |&(k, _)| k)
            .ok()
            .map(|i| self.0[i].1)
    }

    /// The entries in ascending id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u16, u32)> + '_ {
        self.0.iter().copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn pack(&self, w: &mut Writer<'_>) -> Result<(), BuildError> {
        w.count("privileges", self.0.len())?;
        for &(k, v) in &self.0 {
            w.u16(k);
            w.u32(v);
        }
        Ok(())
    }

    pub(crate) fn unpack(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let n = r.u16("privilege count")?;
        let mut p = Self(Vec::with_capacity(
            usize::from(n).min(r.remaining().len() / 6),
        ));
        for _ in 0..n {
            let k = r.u16("privilege id")?;
            let v = r.u32("privilege value")?;
            p.set(k, v);
        }
        Ok(p)
    }
}

impl FromIterator<(u16, u32)> for Privileges {
    fn from_iter<I: IntoIterator<Item = (u16, u32)>>(iter: I) -> Self {
        let mut p = Self::new();
        for (k, v) in iter {
            p.set(k, v);
        }
        p
    }
}

/// RTM2 resource types (spec 3.3).
pub mod resource_type {
    /// Message channels.
    pub const MESSAGE_CHANNELS: u16 = 0;
    /// Stream channels.
    pub const STREAM_CHANNELS: u16 = 1;
    /// Group channels.
    pub const GROUP_CHANNELS: u16 = 2;
    /// Server groups.
    pub const SERVER_GROUPS: u16 = 3;
    /// Users.
    pub const USERS: u16 = 4;
}

/// RTM2 permission types (spec 3.3).
pub mod permission_type {
    /// Read.
    pub const READ: u16 = 0;
    /// Write.
    pub const WRITE: u16 = 1;
}

/// The spec's name of an RTM2 resource type.
pub fn resource_type_name(t: u16) -> Option<&'static str> {
    Some(match t {
        0 => "messageChannels",
        1 => "streamChannels",
        2 => "groupChannels",
        3 => "serverGroups",
        4 => "users",
        _ => return None,
    })
}

/// The spec's name of an RTM2 permission type.
pub fn permission_type_name(t: u16) -> Option<&'static str> {
    Some(match t {
        0 => "read",
        1 => "write",
        _ => return None,
    })
}

/// One RTM2 grant: a permission on a list of resources of one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtm2Grant {
    /// Resource type (see [`resource_type`]).
    pub resource_type: u16,
    /// Permission type (see [`permission_type`]).
    pub permission_type: u16,
    /// Resource names, in the caller's order (not sorted).
    pub resources: Vec<Vec<u8>>,
}

/// RTM2 permissions: grants sorted by (resource type, permission type);
/// adding the same pair again replaces the earlier resource list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rtm2Permissions(Vec<Rtm2Grant>);

impl Rtm2Permissions {
    /// No permissions.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Grants `permission_type` on `resources` of `resource_type`, replacing
    /// an earlier list for the same pair.
    pub fn add<I, S>(&mut self, resource_type: u16, permission_type: u16, resources: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<Vec<u8>>,
    {
        let grant = Rtm2Grant {
            resource_type,
            permission_type,
            resources: resources.into_iter().map(Into::into).collect(),
        };
        let key = (resource_type, permission_type);
        match self
            .0
            .binary_search_by_key(&key, |g| (g.resource_type, g.permission_type))
        {
            Ok(i) => self.0[i] = grant,
            Err(i) => self.0.insert(i, grant),
        }
    }

    /// The grants in packing order.
    pub fn grants(&self) -> &[Rtm2Grant] {
        &self.0
    }

    /// Whether there are no grants.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn pack(&self, w: &mut Writer<'_>) -> Result<(), BuildError> {
        // Group the sorted grants by resource type.
        let groups: Vec<&[Rtm2Grant]> = self
            .0
            .chunk_by(|a, b| a.resource_type == b.resource_type)
            .collect();
        w.count("rtm2 resource types", groups.len())?;
        for group in groups {
            w.u16(group[0].resource_type);
            w.count("rtm2 permission types", group.len())?;
            for g in group {
                w.u16(g.permission_type);
                w.count("rtm2 resources", g.resources.len())?;
                for r in &g.resources {
                    w.bytes("rtm2 resource", r)?;
                }
            }
        }
        Ok(())
    }

    fn unpack(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let mut p = Self::new();
        let types = r.u16("rtm2 resource type count")?;
        for _ in 0..types {
            let rt = r.u16("rtm2 resource type")?;
            let perms = r.u16("rtm2 permission type count")?;
            for _ in 0..perms {
                let pt = r.u16("rtm2 permission type")?;
                let n = r.u16("rtm2 resource count")?;
                let mut resources = Vec::with_capacity(usize::from(n).min(r.remaining().len() / 2));
                for _ in 0..n {
                    resources.push(r.bytes("rtm2 resource")?.to_vec());
                }
                p.add(rt, pt, resources);
            }
        }
        Ok(p)
    }
}

/// The type-specific part of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Type 1: channel name and uid string (`""` = any uid).
    Rtc {
        /// Channel name (`""` = any channel).
        channel_name: Vec<u8>,
        /// The uid as a string: decimal for numeric uids, `""` for uid 0.
        uid: Vec<u8>,
    },
    /// Type 2: RTM user id.
    Rtm {
        /// User id.
        user_id: Vec<u8>,
    },
    /// Type 3: channel name and account.
    Streaming {
        /// Channel name.
        channel_name: Vec<u8>,
        /// Account (uid string).
        account: Vec<u8>,
    },
    /// Type 4: no payload.
    Fpa,
    /// Type 5: Chat user id (`""` for an app token).
    Chat {
        /// User id.
        user_id: Vec<u8>,
    },
    /// Type 6: channel name and account.
    Fcdn {
        /// Channel name.
        channel_name: Vec<u8>,
        /// Account (uid string).
        account: Vec<u8>,
    },
    /// Type 7: APaaS / Education room, user and role.
    Apaas {
        /// Room uuid (`""` for user and app tokens).
        room_uuid: Vec<u8>,
        /// User uuid (`""` for app tokens).
        user_uuid: Vec<u8>,
        /// Role (−1 for user and app tokens).
        role: i16,
    },
    /// Type 8: RTM user id with resource permissions.
    Rtm2 {
        /// User id.
        user_id: Vec<u8>,
        /// Resource permissions.
        permissions: Rtm2Permissions,
    },
    /// Any other type: packed as type and privileges only. The official
    /// object model can build one; no official builder does, and parsers stop
    /// at it because its length is not self-describing.
    Other(u16),
}

impl Payload {
    /// The channel name the service carries (RTC, streaming and FCDN; `""`
    /// means any channel), or `None` for a service without one. An APaaS
    /// room uuid is not a channel name: `None`.
    pub fn channel_name(&self) -> Option<&[u8]> {
        match self {
            Payload::Rtc { channel_name, .. }
            | Payload::Streaming { channel_name, .. }
            | Payload::Fcdn { channel_name, .. } => Some(channel_name),
            Payload::Rtm { .. }
            | Payload::Fpa
            | Payload::Chat { .. }
            | Payload::Apaas { .. }
            | Payload::Rtm2 { .. }
            | Payload::Other(_) => None,
        }
    }

    /// The user the service carries, whichever field names it: the RTC
    /// uid string, the RTM / RTM2 / Chat user id, the streaming / FCDN
    /// account, or the APaaS user uuid (possibly `""`: any uid, an app
    /// token). `None` for FPA and unknown types, which carry no user.
    pub fn user(&self) -> Option<&[u8]> {
        match self {
            Payload::Rtc { uid, .. } => Some(uid),
            Payload::Rtm { user_id }
            | Payload::Chat { user_id }
            | Payload::Rtm2 { user_id, .. } => Some(user_id),
            Payload::Streaming { account, .. } | Payload::Fcdn { account, .. } => Some(account),
            Payload::Apaas { user_uuid, .. } => Some(user_uuid),
            Payload::Fpa | Payload::Other(_) => None,
        }
    }
}

/// One service of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The privilege map.
    pub privileges: Privileges,
    /// The type-specific payload.
    pub payload: Payload,
}

/// The uid string rule of every `*_with_uid` builder: 0 is `""` (any uid),
/// anything else its decimal representation.
pub fn uid_string(uid: u32) -> String {
    if uid == 0 {
        String::new()
    } else {
        uid.to_string()
    }
}

impl Service {
    /// A service with a payload and privileges.
    pub fn new(payload: Payload, privileges: Privileges) -> Self {
        Self {
            privileges,
            payload,
        }
    }

    /// An RTC service for `channel_name` and the uid string `uid` (see [`uid_string`]).
    pub fn rtc(channel_name: impl Into<Vec<u8>>, uid: impl Into<Vec<u8>>) -> Self {
        Self::new(
            Payload::Rtc {
                channel_name: channel_name.into(),
                uid: uid.into(),
            },
            Privileges::new(),
        )
    }

    /// An RTM service.
    pub fn rtm(user_id: impl Into<Vec<u8>>) -> Self {
        Self::new(
            Payload::Rtm {
                user_id: user_id.into(),
            },
            Privileges::new(),
        )
    }

    /// A Streaming service.
    pub fn streaming(channel_name: impl Into<Vec<u8>>, account: impl Into<Vec<u8>>) -> Self {
        Self::new(
            Payload::Streaming {
                channel_name: channel_name.into(),
                account: account.into(),
            },
            Privileges::new(),
        )
    }

    /// An FPA service.
    pub fn fpa() -> Self {
        Self::new(Payload::Fpa, Privileges::new())
    }

    /// A Chat service.
    pub fn chat(user_id: impl Into<Vec<u8>>) -> Self {
        Self::new(
            Payload::Chat {
                user_id: user_id.into(),
            },
            Privileges::new(),
        )
    }

    /// An FCDN service.
    pub fn fcdn(channel_name: impl Into<Vec<u8>>, account: impl Into<Vec<u8>>) -> Self {
        Self::new(
            Payload::Fcdn {
                channel_name: channel_name.into(),
                account: account.into(),
            },
            Privileges::new(),
        )
    }

    /// An APaaS service.
    pub fn apaas(room_uuid: impl Into<Vec<u8>>, user_uuid: impl Into<Vec<u8>>, role: i16) -> Self {
        Self::new(
            Payload::Apaas {
                room_uuid: room_uuid.into(),
                user_uuid: user_uuid.into(),
                role,
            },
            Privileges::new(),
        )
    }

    /// An RTM2 service.
    pub fn rtm2(user_id: impl Into<Vec<u8>>, permissions: Rtm2Permissions) -> Self {
        Self::new(
            Payload::Rtm2 {
                user_id: user_id.into(),
                permissions,
            },
            Privileges::new(),
        )
    }

    /// Builder-style: sets privilege `id` to `expire`.
    #[must_use]
    pub fn with_privilege(mut self, id: u16, expire: u32) -> Self {
        self.privileges.set(id, expire);
        self
    }

    /// The service type number.
    pub fn service_type(&self) -> u16 {
        match self.payload {
            Payload::Rtc { .. } => service_type::RTC,
            Payload::Rtm { .. } => service_type::RTM,
            Payload::Streaming { .. } => service_type::STREAMING,
            Payload::Fpa => service_type::FPA,
            Payload::Chat { .. } => service_type::CHAT,
            Payload::Fcdn { .. } => service_type::FCDN,
            Payload::Apaas { .. } => service_type::APAAS,
            Payload::Rtm2 { .. } => service_type::RTM2,
            Payload::Other(t) => t,
        }
    }

    /// Packs `u16(type) privmap payload`.
    pub(crate) fn pack(&self, w: &mut Writer<'_>) -> Result<(), BuildError> {
        w.u16(self.service_type());
        self.privileges.pack(w)?;
        match &self.payload {
            Payload::Rtc { channel_name, uid } => {
                w.bytes("channel_name", channel_name)?;
                w.bytes("uid", uid)?;
            }
            Payload::Rtm { user_id } | Payload::Chat { user_id } => {
                w.bytes("user_id", user_id)?;
            }
            Payload::Streaming {
                channel_name,
                account,
            }
            | Payload::Fcdn {
                channel_name,
                account,
            } => {
                w.bytes("channel_name", channel_name)?;
                w.bytes("account", account)?;
            }
            Payload::Fpa | Payload::Other(_) => {}
            Payload::Apaas {
                room_uuid,
                user_uuid,
                role,
            } => {
                w.bytes("room_uuid", room_uuid)?;
                w.bytes("user_uuid", user_uuid)?;
                w.i16(*role);
            }
            Payload::Rtm2 {
                user_id,
                permissions,
            } => {
                w.bytes("user_id", user_id)?;
                permissions.pack(w)?;
            }
        }
        Ok(())
    }

    /// Reads the privilege map and payload of a known service type
    /// (`service_type` already read). `None` for an unknown type: the
    /// caller stops there, as the reference parsers do.
    pub(crate) fn unpack(
        service_type: u16,
        r: &mut Reader<'_>,
    ) -> Result<Option<Self>, ParseError> {
        if !(1..=8).contains(&service_type) {
            return Ok(None);
        }
        let privileges = Privileges::unpack(r)?;
        let mut s = |field| r.bytes(field).map(<[u8]>::to_vec);
        let payload = match service_type {
            1 => Payload::Rtc {
                channel_name: s("channel_name")?,
                uid: s("uid")?,
            },
            2 => Payload::Rtm {
                user_id: s("user_id")?,
            },
            3 => Payload::Streaming {
                channel_name: s("channel_name")?,
                account: s("account")?,
            },
            4 => Payload::Fpa,
            5 => Payload::Chat {
                user_id: s("user_id")?,
            },
            6 => Payload::Fcdn {
                channel_name: s("channel_name")?,
                account: s("account")?,
            },
            7 => {
                let room_uuid = s("room_uuid")?;
                let user_uuid = s("user_uuid")?;
                Payload::Apaas {
                    room_uuid,
                    user_uuid,
                    role: r.i16("role")?,
                }
            }
            _ => {
                let user_id = s("user_id")?;
                Payload::Rtm2 {
                    user_id,
                    permissions: Rtm2Permissions::unpack(r)?,
                }
            }
        };
        Ok(Some(Self {
            privileges,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &Service) {
        let mut buf = Vec::new();
        s.pack(&mut Writer::new(&mut buf)).unwrap();
        let mut r = Reader::new(&buf);
        let t = r.u16("type").unwrap();
        let back = Service::unpack(t, &mut r).unwrap().unwrap();
        assert_eq!(&back, s);
        assert!(r.remaining().is_empty());
    }

    #[test]
    fn every_service_type_round_trips() {
        let mut perms = Rtm2Permissions::new();
        perms.add(4, 1, ["user-z", "user-a"]);
        perms.add(0, 0, ["chat.*"]);
        perms.add(0, 1, Vec::<String>::new());
        for s in [
            Service::rtc("ch", "42")
                .with_privilege(1, 600)
                .with_privilege(4, 1),
            Service::rtm("u").with_privilege(1, 5),
            Service::streaming("ch", "acct").with_privilege(2, 9),
            Service::fpa().with_privilege(1, 0),
            Service::chat("").with_privilege(2, 60),
            Service::fcdn("ch", "")
                .with_privilege(1, 1)
                .with_privilege(2, 2),
            Service::apaas("room", "user", -1).with_privilege(3, 7),
            Service::rtm2("u", perms),
            Service::rtm2("u", Rtm2Permissions::new()),
        ] {
            roundtrip(&s);
        }
    }

    #[test]
    fn privileges_sort_and_replace() {
        let p: Privileges = [(4, 10), (1, 40), (4, 11)].into_iter().collect();
        assert_eq!(p.iter().collect::<Vec<_>>(), [(1, 40), (4, 11)]);
    }

    #[test]
    fn unknown_type_is_not_read() {
        let mut r = Reader::new(&[1, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(Service::unpack(999, &mut r), Ok(None));
        assert_eq!(Service::unpack(0, &mut r), Ok(None));
    }

    #[test]
    fn uid_zero_is_wildcard() {
        assert_eq!(uid_string(0), "");
        assert_eq!(uid_string(4_294_967_295), "4294967295");
    }

    #[test]
    fn payload_channel_and_user() {
        let check = |s: Service, channel: Option<&str>, user: Option<&str>| {
            assert_eq!(
                s.payload.channel_name(),
                channel.map(str::as_bytes),
                "{s:?}"
            );
            assert_eq!(s.payload.user(), user.map(str::as_bytes), "{s:?}");
        };
        check(Service::rtc("ch", "42"), Some("ch"), Some("42"));
        check(Service::rtc("", ""), Some(""), Some(""));
        check(Service::rtm("u1"), None, Some("u1"));
        check(Service::streaming("ch", "acc"), Some("ch"), Some("acc"));
        check(Service::fpa(), None, None);
        check(Service::chat("u2"), None, Some("u2"));
        check(Service::fcdn("ch", "acc"), Some("ch"), Some("acc"));
        check(Service::apaas("room", "u3", 1), None, Some("u3"));
        check(
            Service::rtm2("u4", Rtm2Permissions::new()),
            None,
            Some("u4"),
        );
        assert_eq!(Payload::Other(9).channel_name(), None);
        assert_eq!(Payload::Other(9).user(), None);
    }
}
