//! `clef.v1.AuditService`: decodes requests, encodes what `service::audit`
//! reads.

use std::pin::Pin;

use tokio::sync::watch;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{
    convert::{code, datetime, done, id, page_size},
    timestamp, Ctx,
};
use crate::{
    domain::{
        audit::{Action, Cursor, Event, EventFilter, FieldChange, TargetType},
        principal::PrincipalKind,
        Violations,
    },
    pb::{self, audit_service_server::AuditService},
    service::audit::{self, Watch, WatchItem},
};

/// Serves `clef.v1.AuditService`.
#[derive(Debug, Clone)]
pub struct AuditApi {
    pub ctx: Ctx,
    /// The revisions this replica hears of (see `Engine::revisions`).
    pub revisions: watch::Receiver<i64>,
    /// Turns true when the server starts shutting down.
    pub stopping: watch::Receiver<bool>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    type WatchEventsStream = EventStream;

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let actor = self.ctx.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let mut filter = filter(req.filter.as_ref(), &mut v);
        revision("from_revision", req.from_revision, &mut v);
        revision("to_revision", req.to_revision, &mut v);
        filter.to_revision = (req.to_revision > 0).then_some(req.to_revision);
        let limit = page_size(req.page_size, &mut v);
        let after = if req.page_token.is_empty() {
            Some(Cursor::after_revision(req.from_revision.max(0)))
        } else {
            v.check(
                "page_token",
                Cursor::from_token(&req.page_token)
                    .map_err(|_| "is not a token returned by this listing".to_owned()),
            )
        };
        let after = done(v, after)?;
        let page = audit::list(&self.ctx.store, &actor, &filter, after, limit).await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: page.events.iter().map(event_to_pb).collect(),
            next_page_token: page.next.map(|c| c.token()).unwrap_or_default(),
            revision: page.revision,
            pruned_through_revision: page.pruned_through,
        }))
    }

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let actor = self.ctx.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let filter = filter(req.filter.as_ref(), &mut v);
        revision("from_revision", req.from_revision, &mut v);
        if req.after_event < 0 {
            v.add("after_event", "must not be negative");
        }
        let heartbeat = v.check(
            "heartbeat_seconds",
            audit::heartbeat(req.heartbeat_seconds).map_err(|_| "must be between 1 and 300".into()),
        );
        let heartbeat = done(v, heartbeat)?;
        let from = Cursor {
            revision: req.from_revision,
            event: (req.after_event > 0).then_some(req.after_event),
        };
        let items = audit::watch(
            &self.ctx.store,
            &actor,
            Watch {
                from,
                filter,
                heartbeat,
            },
            self.revisions.clone(),
            self.stopping.clone(),
        )
        .await?;
        let stream = ReceiverStream::new(items).map(|item| {
            item.map(|item| pb::WatchEventsResponse {
                message: Some(match item {
                    WatchItem::Event(e) => {
                        pb::watch_events_response::Message::Event(event_to_pb(&e))
                    }
                    WatchItem::Heartbeat { revision, time } => {
                        pb::watch_events_response::Message::Heartbeat(pb::Heartbeat {
                            revision,
                            time: timestamp(time),
                        })
                    }
                }),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn revision(field: &str, r: i64, v: &mut Violations) {
    if r < 0 {
        v.add(field, "must not be negative");
    }
}

fn filter(f: Option<&pb::EventFilter>, v: &mut Violations) -> EventFilter {
    let Some(f) = f else {
        return EventFilter::default();
    };
    let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let mut actions = Vec::new();
    for (i, a) in f.actions.iter().enumerate() {
        match action_from_pb(*a) {
            Some(a) => actions.push(a),
            None => v.add(
                format!("filter.actions[{i}]"),
                format!("unknown action {a}"),
            ),
        }
    }
    EventFilter {
        account: non_empty(&f.account)
            .and_then(|c| code("filter.account", &c, v))
            .map(|c| c.as_str().to_owned()),
        user: non_empty(&f.user_id).and_then(|u| id("filter.user_id", &u, v)),
        actor: non_empty(&f.actor_id).and_then(|u| id("filter.actor_id", &u, v)),
        actions,
        since: f.since_time.as_ref().and_then(datetime),
        until: f.until_time.as_ref().and_then(datetime),
        to_revision: None,
    }
}

/// Actions are numbered in `Action::ALL`'s order, from 1.
fn action_from_pb(n: i32) -> Option<Action> {
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| Action::ALL.get(i).copied())
}

fn action_to_pb(a: Action) -> i32 {
    Action::ALL
        .iter()
        .position(|x| *x == a)
        .map_or(0, |i| i as i32 + 1)
}

fn json_to_pb(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_pb).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_pb(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn change_to_pb(c: &FieldChange) -> pb::FieldChange {
    pb::FieldChange {
        field: c.field.clone(),
        before: c.before.as_ref().map(json_to_pb),
        after: c.after.as_ref().map(json_to_pb),
    }
}

pub(crate) fn event_to_pb(e: &Event) -> pb::AuditEvent {
    let target_type = match e.target_type {
        TargetType::Organization => pb::TargetType::Organization,
        TargetType::Account => pb::TargetType::Account,
        TargetType::Right => pb::TargetType::Right,
        TargetType::User => pb::TargetType::User,
        TargetType::Role => pb::TargetType::Role,
        TargetType::Team => pb::TargetType::Team,
    };
    pb::AuditEvent {
        id: e.id,
        revision: e.revision,
        time: timestamp(e.time),
        actor: e.actor.as_ref().map(|a| pb::EventActor {
            id: a.id.to_string(),
            kind: match a.kind {
                PrincipalKind::Operator => pb::ActorKind::Operator,
                PrincipalKind::Service => pb::ActorKind::Service,
                PrincipalKind::Advanced => pb::ActorKind::AdvancedUser,
                PrincipalKind::Standard => pb::ActorKind::StandardUser,
            } as i32,
            name: a.name.clone(),
        }),
        action: action_to_pb(e.action),
        target: Some(pb::EventTarget {
            r#type: target_type as i32,
            id: e.target_id.clone(),
        }),
        account: e
            .account
            .as_ref()
            .map(|(_, c)| c.clone())
            .unwrap_or_default(),
        account_id: e
            .account
            .as_ref()
            .map(|(id, _)| id.to_string())
            .unwrap_or_default(),
        changes: e.changes.iter().map(change_to_pb).collect(),
        summary: e.summary(),
        cause: e.cause.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_its_proto_number() {
        for a in Action::ALL {
            assert_eq!(action_from_pb(action_to_pb(a)), Some(a));
            let name = pb::AuditAction::try_from(action_to_pb(a))
                .unwrap()
                .as_str_name()
                .to_owned();
            assert_eq!(name, format!("AUDIT_ACTION_{}", a.as_str().to_uppercase()));
        }
        assert_eq!(action_from_pb(0), None);
        assert_eq!(action_from_pb(99), None);
    }
}
