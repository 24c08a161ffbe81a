//! `clef.v1.AuthorizationService`: the hot path. No SQL is awaited here on a
//! warm cache: callers and subjects are resolved by the decision engine.

use std::{pin::Pin, sync::Arc};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{auth::bearer_token, convert::scope_to_pb};
use crate::{
    authz::Engine,
    domain::{
        account::AccountCode,
        decision::{Decision, Denial, Parcel, Visibility},
        key,
        principal::{Actor, PrincipalKind},
        rights::RightDef,
        user::UserKey,
        Error, Violations,
    },
    pb::{self, authorization_service_server::AuthorizationService},
    store::SubjectRef,
};

/// At most this many checks per `CheckBatch`.
pub const MAX_BATCH: usize = 1000;
/// Clauses per `VisibilityFilter` message.
const CLAUSES_PER_MESSAGE: usize = 500;

/// Serves `clef.v1.AuthorizationService`.
#[derive(Debug, Clone)]
pub struct AuthzApi {
    engine: Arc<Engine>,
}

impl AuthzApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// Decision RPCs are for service principals and operators; the caller is
    /// resolved from memory like any subject.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Actor, Error> {
        let hash = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .and_then(key::parse_presented)
            .ok_or(Error::Unauthenticated)?;
        let actor = self
            .engine
            .actor(&hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        crate::observe::record_caller(request.extensions(), actor.user_id);
        match actor.kind {
            PrincipalKind::Service | PrincipalKind::Operator => Ok(actor),
            _ => Err(Error::PermissionDenied(
                "decisions are answered to service principals and operators only".into(),
            )),
        }
    }
}

/// Decodes a subject. A malformed connection key is an unknown subject (it
/// comes from the end user); an empty one, or a malformed id or user key, is
/// a caller's bug.
/// Field names are only built for violations (this runs on every Check).
fn subject(
    s: &Option<pb::Subject>,
    prefix: &str,
    v: &mut Violations,
) -> Option<Option<SubjectRef>> {
    use pb::subject::By;
    match s.as_ref().and_then(|s| s.by.as_ref()) {
        Some(By::ConnectionKey(k)) if k.trim().is_empty() => {
            v.add(
                format!("{prefix}subject.connection_key"),
                "must not be empty",
            );
            None
        }
        Some(By::ConnectionKey(k)) => Some(key::parse_presented(k.trim()).map(SubjectRef::Key)),
        Some(By::UserId(u)) => match crate::domain::account::parse_id(u) {
            Ok(u) => Some(Some(SubjectRef::Id(u))),
            Err(why) => {
                v.add(format!("{prefix}subject.user_id"), why);
                None
            }
        },
        Some(By::UserKey(k)) => match UserKey::parse(k) {
            Ok(k) => Some(Some(SubjectRef::UserKey(k.as_str().to_owned()))),
            Err(why) => {
                v.add(format!("{prefix}subject.user_key"), why);
                None
            }
        },
        None => {
            v.add(
                format!("{prefix}subject"),
                "give connection_key, user_id or user_key",
            );
            None
        }
    }
}

/// Keeps the value of a parse, or records its error under `prefix` + `name`.
fn lazy<T>(v: &mut Violations, prefix: &str, name: &str, parsed: Result<T, String>) -> Option<T> {
    match parsed {
        Ok(t) => Some(t),
        Err(why) => {
            v.add(format!("{prefix}{name}"), why);
            None
        }
    }
}

fn tracking_right(s: &str, field: &str, v: &mut Violations) -> Option<String> {
    match s.trim() {
        r @ ("tracking.tool" | "tracking.tool_cs") => Some(r.to_owned()),
        other => {
            v.add(
                field,
                format!("{other:?} is not a tracking right (tracking.tool or tracking.tool_cs)"),
            );
            None
        }
    }
}

fn min_revision(n: i64, prefix: &str, v: &mut Violations) -> i64 {
    if n < 0 {
        v.add(format!("{prefix}min_revision"), "must not be negative");
    }
    n
}

fn reason_to_pb(d: Option<Denial>) -> i32 {
    use pb::DenialReason as R;
    (match d {
        None => R::Unspecified,
        Some(Denial::UnknownSubject) => R::UnknownSubject,
        Some(Denial::InactiveUser) => R::InactiveUser,
        Some(Denial::UnknownAccount) => R::UnknownAccount,
        Some(Denial::NotLinked) => R::NotLinked,
        Some(Denial::NoGrant) => R::NoGrant,
        Some(Denial::ExpiredGrant) => R::ExpiredGrant,
        Some(Denial::AccountClosed) => R::AccountClosed,
        Some(Denial::OutOfScope) => R::OutOfScope,
    }) as i32
}

/// A validated `CheckRequest`.
struct CheckArgs {
    subject: Option<SubjectRef>,
    account: AccountCode,
    right: String,
    min_revision: i64,
}

fn check_args(r: &pb::CheckRequest, prefix: &str, v: &mut Violations) -> Option<CheckArgs> {
    let subject = subject(&r.subject, prefix, v);
    let account = lazy(
        v,
        prefix,
        "account_code",
        AccountCode::parse(&r.account_code),
    );
    let right = lazy(v, prefix, "right", RightDef::parse_code(r.right.trim()));
    let min_revision = min_revision(r.min_revision, prefix, v);
    Some(CheckArgs {
        subject: subject?,
        account: account?,
        right: right?,
        min_revision,
    })
}

impl AuthzApi {
    /// Refuses rights that are not in the catalog, naming each one's field
    /// (`field(i)` for the i-th; built only for a refusal).
    async fn known_rights(
        &self,
        codes: &[&str],
        field: impl Fn(usize) -> String,
    ) -> Result<(), Error> {
        let unknown = self.engine.unknown_rights(codes).await?;
        if unknown.is_empty() {
            return Ok(());
        }
        let mut v = Violations::default();
        for (i, code) in codes
            .iter()
            .enumerate()
            .filter(|(_, c)| unknown.contains(c))
        {
            v.add(field(i), format!("{code:?} is not in the rights catalog"));
        }
        v.finish()
    }

    async fn check_one(&self, a: &CheckArgs, now: i64) -> Result<pb::CheckResponse, Error> {
        let (d, revision) = match &a.subject {
            Some(s) => {
                self.engine
                    .check(s, a.account.as_str(), &a.right, a.min_revision, now)
                    .await?
            }
            None => (
                Decision::deny(Denial::UnknownSubject),
                self.engine.seen_revision(),
            ),
        };
        Ok(pb::CheckResponse {
            allowed: d.allowed,
            scope: scope_to_pb(d.scope),
            reason: reason_to_pb(d.reason),
            revision,
            from_role: d.from_role,
        })
    }
}

type ClauseStream =
    Pin<Box<dyn Stream<Item = Result<pb::VisibilityFilterResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuthorizationService for AuthzApi {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        self.caller(&request).await?;
        let mut v = Violations::default();
        let args = check_args(request.get_ref(), "", &mut v);
        v.finish()?;
        let args = args.ok_or_else(|| Error::Internal("check arguments lost".into()))?;
        self.known_rights(&[args.right.as_str()], |_| "right".into())
            .await?;
        Ok(Response::new(
            self.check_one(&args, self.engine.now_micros()).await?,
        ))
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        self.caller(&request).await?;
        let checks = &request.get_ref().checks;
        if checks.len() > MAX_BATCH {
            return Err(Error::invalid(
                "checks",
                format!("at most {MAX_BATCH} checks per batch, got {}", checks.len()),
            )
            .into());
        }
        let mut v = Violations::default();
        let args: Vec<Option<CheckArgs>> = checks
            .iter()
            .enumerate()
            .map(|(i, c)| check_args(c, &format!("checks[{i}]."), &mut v))
            .collect();
        v.finish()?;
        // Every item parsed (v.finish() above), so indexes are the items'.
        let rights: Vec<&str> = args.iter().flatten().map(|a| a.right.as_str()).collect();
        self.known_rights(&rights, |i| format!("checks[{i}].right"))
            .await?;
        let now = self.engine.now_micros();
        let mut results = Vec::with_capacity(args.len());
        for a in args.iter().flatten() {
            results.push(self.check_one(a, now).await?);
        }
        Ok(Response::new(pb::CheckBatchResponse { results }))
    }

    async fn check_parcel_visibility(
        &self,
        request: Request<pb::CheckParcelVisibilityRequest>,
    ) -> Result<Response<pb::CheckParcelVisibilityResponse>, Status> {
        self.caller(&request).await?;
        let r = request.get_ref();
        let mut v = Violations::default();
        let subject = subject(&r.subject, "", &mut v);
        let right = tracking_right(&r.right, "right", &mut v);
        let min_revision = min_revision(r.min_revision, "", &mut v);
        let parcel = r.parcel.clone().unwrap_or_default();
        let account = v.check(
            "parcel.account_code",
            AccountCode::parse(&parcel.account_code),
        );
        let parcel_key = match parcel.user_key.trim() {
            "" => None,
            k => v.check("parcel.user_key", UserKey::parse(k)),
        };
        v.finish()?;
        let (Some(subject), Some(right), Some(account)) = (subject, right, account) else {
            return Err(Error::Internal("parcel arguments lost".into()).into());
        };
        let now = self.engine.now_micros();
        let tag = parcel.tag.trim();
        let p = Parcel {
            account_code: account.as_str(),
            user_key: parcel_key.as_ref().map(UserKey::as_str),
            tag: (!tag.is_empty()).then_some(tag),
        };
        let (d, revision) = match &subject {
            Some(s) => {
                let answer = self
                    .engine
                    .subject(s, min_revision, Some(account.as_str()))
                    .await?;
                let d = self
                    .engine
                    .decide(&answer, s, account.as_str(), now, |e| {
                        e.parcel(&right, &p, now)
                    })
                    .await?;
                (d, answer.revision)
            }
            None => (
                Decision::deny(Denial::UnknownSubject),
                self.engine.seen_revision(),
            ),
        };
        Ok(Response::new(pb::CheckParcelVisibilityResponse {
            visible: d.allowed,
            scope_used: scope_to_pb(d.scope),
            reason: reason_to_pb(d.reason),
            revision,
            from_role: d.from_role,
        }))
    }

    type VisibilityFilterStream = ClauseStream;

    async fn visibility_filter(
        &self,
        request: Request<pb::VisibilityFilterRequest>,
    ) -> Result<Response<Self::VisibilityFilterStream>, Status> {
        self.caller(&request).await?;
        let r = request.get_ref();
        let mut v = Violations::default();
        let subject = subject(&r.subject, "", &mut v);
        let right = tracking_right(&r.right, "right", &mut v);
        let min_revision = min_revision(r.min_revision, "", &mut v);
        v.finish()?;
        let (Some(subject), Some(right)) = (subject, right) else {
            return Err(Error::Internal("filter arguments lost".into()).into());
        };
        let now = self.engine.now_micros();
        let (clauses, reason, revision) = match &subject {
            None => (
                Vec::new(),
                Some(Denial::UnknownSubject),
                self.engine.seen_revision(),
            ),
            Some(s) => {
                let answer = self.engine.subject(s, min_revision, None).await?;
                let live = answer.subject.as_ref().filter(|e| match s {
                    SubjectRef::Key(hash) => e.key(hash, now).is_some(),
                    _ => true,
                });
                match live {
                    None => (Vec::new(), Some(Denial::UnknownSubject), answer.revision),
                    Some(e) if !e.active => {
                        (Vec::new(), Some(Denial::InactiveUser), answer.revision)
                    }
                    Some(e) => {
                        let clauses: Vec<pb::VisibilityClause> = e
                            .visibility(&right, now)
                            .into_iter()
                            .map(|(code, vis)| clause(code, vis))
                            .collect();
                        (clauses, None, answer.revision)
                    }
                }
            }
        };
        let mut messages: Vec<pb::VisibilityFilterResponse> = clauses
            .chunks(CLAUSES_PER_MESSAGE)
            .map(|c| pb::VisibilityFilterResponse {
                clauses: c.to_vec(),
                revision,
                last: false,
                reason: reason_to_pb(reason),
            })
            .collect();
        if messages.is_empty() {
            messages.push(pb::VisibilityFilterResponse {
                clauses: Vec::new(),
                revision,
                last: true,
                reason: reason_to_pb(reason),
            });
        }
        if let Some(m) = messages.last_mut() {
            m.last = true;
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(
            messages.into_iter().map(Ok),
        ))))
    }
}

fn clause(code: &str, vis: Visibility) -> pb::VisibilityClause {
    use crate::domain::rights::Scope;
    let mut c = pb::VisibilityClause {
        account_code: code.to_owned(),
        ..Default::default()
    };
    match vis {
        Visibility::All => {
            c.scope = scope_to_pb(Some(Scope::Consolidated));
            c.all = true;
        }
        Visibility::UserKey(k) => {
            c.scope = scope_to_pb(Some(Scope::UserKey));
            c.user_key = UserKey::from_db(k).to_string();
        }
        Visibility::Tags(tags) => {
            c.scope = scope_to_pb(Some(Scope::UserTag));
            c.tags = tags;
        }
    }
    c
}
