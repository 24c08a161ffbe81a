//! Conversions between generated protobuf types and domain types, and the
//! request-parsing helpers the handlers share.

use data_encoding::BASE64URL_NOPAD;
use prost_types::Timestamp;
use uuid::Uuid;

use super::timestamp;
use crate::{
    domain::{
        account::{parse_id, parse_request_id, AccountCode},
        key::KeyMeta,
        request::RequestKey,
        rights::{Grant, RawGrant, RightDef, Scope},
        role::{RoleDef, RoleGrant},
        user::{Link, RawProfile, User, UserKind, UserStatus},
        Error, Violations,
    },
    pb,
};

pub const DEFAULT_PAGE_SIZE: i64 = 100;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// `page_size` as a limit: 0 means the default.
pub fn page_size(n: i32, v: &mut Violations) -> i64 {
    match i64::from(n) {
        0 => DEFAULT_PAGE_SIZE,
        n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        n => {
            v.add(
                "page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}, got {n}"),
            );
            DEFAULT_PAGE_SIZE
        }
    }
}

/// An opaque page token carrying the sort key of the last item returned.
pub fn encode_token(parts: &[&str]) -> String {
    BASE64URL_NOPAD.encode(parts.join("\u{0}").as_bytes())
}

/// The `n` parts of a page token, or a violation of `page_token`.
pub fn decode_token(token: &str, n: usize, v: &mut Violations) -> Option<Vec<String>> {
    if token.is_empty() {
        return None;
    }
    let parts = BASE64URL_NOPAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| s.split('\u{0}').map(str::to_owned).collect::<Vec<_>>())
        .filter(|p| p.len() == n);
    if parts.is_none() {
        v.add("page_token", "is not a token returned by this listing");
    }
    parts
}

/// Truncates a page fetched with one extra row; returns the next-page token
/// built from the last item kept.
pub fn paginate<T>(items: &mut Vec<T>, limit: i64, token: impl Fn(&T) -> String) -> String {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}

pub fn id(field: &str, s: &str, v: &mut Violations) -> Option<Uuid> {
    v.check(field, parse_id(s))
}

pub fn code(field: &str, s: &str, v: &mut Violations) -> Option<AccountCode> {
    v.check(field, AccountCode::parse(s))
}

/// Completes a validation: the violations, or the values when all parsed.
pub fn done<T>(v: Violations, value: Option<T>) -> Result<T, Error> {
    v.finish()?;
    value.ok_or_else(|| Error::Internal("validation inconsistency".into()))
}

pub fn datetime(t: &Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
}

pub fn scope_from_pb(s: i32, field: &str, v: &mut Violations) -> Option<Scope> {
    match pb::Scope::try_from(s) {
        Ok(pb::Scope::Unspecified) => None,
        Ok(pb::Scope::UserKey) => Some(Scope::UserKey),
        Ok(pb::Scope::UserTag) => Some(Scope::UserTag),
        Ok(pb::Scope::Consolidated) => Some(Scope::Consolidated),
        Err(_) => {
            v.add(field, format!("unknown scope {s}"));
            None
        }
    }
}

pub fn scope_to_pb(s: Option<Scope>) -> i32 {
    let scope = match s {
        None => pb::Scope::Unspecified,
        Some(Scope::UserKey) => pb::Scope::UserKey,
        Some(Scope::UserTag) => pb::Scope::UserTag,
        Some(Scope::Consolidated) => pb::Scope::Consolidated,
    };
    scope as i32
}

pub fn raw_grants(grants: &[pb::RightGrant], field: &str, v: &mut Violations) -> Vec<RawGrant> {
    grants
        .iter()
        .enumerate()
        .map(|(i, g)| RawGrant {
            right: g.right.trim().to_owned(),
            scope: scope_from_pb(g.scope, &format!("{field}[{i}].scope"), v),
            expires_at: g.expire_time.as_ref().and_then(|t| {
                let d = datetime(t);
                if d.is_none() {
                    v.add(format!("{field}[{i}].expire_time"), "is out of range");
                }
                d
            }),
        })
        .collect()
}

pub fn kind_from_pb(k: i32) -> Option<UserKind> {
    match pb::UserKind::try_from(k) {
        Ok(pb::UserKind::Standard) => Some(UserKind::Standard),
        Ok(pb::UserKind::Advanced) => Some(UserKind::Advanced),
        _ => None,
    }
}

pub fn status_from_pb(s: i32) -> Option<UserStatus> {
    match pb::UserStatus::try_from(s) {
        Ok(pb::UserStatus::Invited) => Some(UserStatus::Invited),
        Ok(pb::UserStatus::Active) => Some(UserStatus::Active),
        Ok(pb::UserStatus::Deactivated) => Some(UserStatus::Deactivated),
        Ok(pb::UserStatus::Archived) => Some(UserStatus::Archived),
        _ => None,
    }
}

pub fn raw_profile(u: &pb::User) -> RawProfile {
    RawProfile {
        last_name: u.last_name.clone(),
        first_name: u.first_name.clone(),
        job_title: u.job_title.clone(),
        email: u.email.clone(),
        phone: u.phone.clone(),
        address_lines: u.address_lines.clone(),
        postal_code: u.postal_code.clone(),
        city: u.city.clone(),
        country: u.country.clone(),
        civility: u.civility.clone(),
        language: u.language.clone(),
    }
}

pub fn user_to_pb(u: User) -> pb::User {
    let p = u.profile;
    pb::User {
        id: u.id.to_string(),
        kind: match u.kind {
            UserKind::Standard => pb::UserKind::Standard,
            UserKind::Advanced => pb::UserKind::Advanced,
        } as i32,
        status: status_to_pb(u.status) as i32,
        login: u.login,
        user_key: u.user_key.map(|k| k.to_string()).unwrap_or_default(),
        last_name: p.last_name,
        first_name: p.first_name,
        job_title: p.job_title.unwrap_or_default(),
        email: p.email.unwrap_or_default(),
        phone: p.phone.unwrap_or_default(),
        address_lines: p.address_lines,
        postal_code: p.postal_code.unwrap_or_default(),
        city: p.city.unwrap_or_default(),
        country: p.country.unwrap_or_default(),
        civility: p.civility.unwrap_or_default(),
        language: p.language,
        default_account_code: u.default_account.unwrap_or_default(),
        home_account_code: u.home_account.unwrap_or_default(),
        create_time: timestamp(u.created_at),
        update_time: timestamp(u.updated_at),
        revision: u.revision,
        password: None,
    }
}

pub fn status_to_pb(s: UserStatus) -> pb::UserStatus {
    match s {
        UserStatus::Invited => pb::UserStatus::Invited,
        UserStatus::Active => pb::UserStatus::Active,
        UserStatus::Deactivated => pb::UserStatus::Deactivated,
        UserStatus::Archived => pb::UserStatus::Archived,
    }
}

pub fn password_to_pb(p: crate::store::PasswordState) -> pb::PasswordState {
    pb::PasswordState {
        set: p.set,
        must_change: p.must_change,
        failed_attempts: p.failures,
        locked_until_time: p.locked_until.and_then(timestamp),
    }
}

pub fn grant_to_pb(g: Grant) -> pb::Grant {
    pb::Grant {
        user_id: g.user_id.to_string(),
        account_code: g.account_code,
        right: g.right,
        scope: scope_to_pb(g.scope),
        granted_by: g.granted_by.map(|u| u.to_string()).unwrap_or_default(),
        grant_time: timestamp(g.granted_at),
        expire_time: g.expires_at.and_then(timestamp),
        revision: g.revision,
    }
}

pub fn link_to_pb(l: Link) -> pb::Link {
    pb::Link {
        user_id: l.user_id.to_string(),
        account_code: l.account_code,
        tags: l.tags,
        create_time: timestamp(l.created_at),
        revision: l.revision,
    }
}

pub fn key_to_pb(k: KeyMeta) -> pb::ConnectionKey {
    pb::ConnectionKey {
        id: k.id.to_string(),
        user_id: k.user_id.to_string(),
        display_prefix: k.display_prefix,
        create_time: timestamp(k.created_at),
        last_used_time: k.last_used_at.and_then(timestamp),
        expire_time: k.expires_at.and_then(timestamp),
        revoke_time: k.revoked_at.and_then(timestamp),
    }
}

pub fn role_to_pb(r: RoleDef) -> pb::Role {
    pb::Role {
        code: r.code,
        label_fr: r.label_fr,
        label_en: r.label_en,
        kinds: r.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        rights: r
            .rights
            .into_iter()
            .map(|x| pb::RoleRight {
                right: x.right,
                scope: scope_to_pb(x.scope),
            })
            .collect(),
        revision: r.revision,
    }
}

pub fn role_grant_to_pb(g: RoleGrant) -> pb::RoleGrant {
    pb::RoleGrant {
        user_id: g.user_id.to_string(),
        account_code: g.account_code,
        role: g.role,
        granted_by: g.granted_by.map(|u| u.to_string()).unwrap_or_default(),
        grant_time: timestamp(g.granted_at),
        expire_time: g.expires_at.and_then(timestamp),
        revision: g.revision,
    }
}

pub fn right_to_pb(r: RightDef) -> pb::Right {
    pb::Right {
        code: r.code,
        category: r.category,
        label_fr: r.label_fr,
        label_en: r.label_en,
        kinds: r.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        scoped: r.scoped,
    }
}

/// The idempotency key of a create (`None` without a request id): its
/// `request_id` (found by `field`) validated, and a digest of the rest of
/// the request, as protobuf encodes it.
pub(crate) fn request_key<M: prost::Message + Clone>(
    method: &'static str,
    req: &M,
    field: impl FnOnce(&mut M) -> &mut String,
    v: &mut Violations,
) -> Option<RequestKey> {
    let mut body = req.clone();
    let id = std::mem::take(field(&mut body));
    match parse_request_id(&id) {
        Ok(Some(id)) => Some(RequestKey::new(method, id, &body.encode_to_vec())),
        Ok(None) => None,
        Err(why) => {
            v.add("request_id", why);
            None
        }
    }
}
