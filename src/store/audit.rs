//! The audit trail: read in revision order, pruned by age. Postgres writes
//! the events of every change itself (migration `audit_from_triggers`);
//! only a change that leaves no row behind (a login lock lifted) is written
//! here.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{db_error, Store, Tx};
use crate::domain::{
    audit::{Action, Cursor, Event, EventActor, EventFilter, EventScope, TargetType},
    principal::PrincipalKind,
    Error,
};

/// A page of events read on one snapshot.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<Event>,
    /// The highest revision committed in the snapshot: every event up to it
    /// that the filter and scope let through is in this page or before.
    pub revision: i64,
    /// Events of revisions up to this one were pruned.
    pub pruned_through: i64,
    /// The lowest revision with an event still kept.
    pub oldest_kept: Option<i64>,
}

impl Tx {
    /// Names what this write is part of (an import), on each of its events.
    pub async fn set_cause(&mut self, cause: &str) -> Result<(), Error> {
        sqlx::query("SELECT set_config('clef.cause', $1, true)")
            .bind(cause)
            .execute(self.conn())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Appends an event about `user` for a change no audited row shows.
    pub async fn audit_user_event(&mut self, action: Action, user: Uuid) -> Result<(), Error> {
        let revision = self.revision()?;
        let (actor, now) = (self.actor(), self.now());
        sqlx::query!(
            "INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id)
             VALUES ($1, $2, $3, $4, 'user', $5)",
            revision,
            now,
            actor,
            action.as_str(),
            user.to_string()
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

impl Store {
    /// Up to `limit` events after `after` that `scope` and `filter` let
    /// through, in revision order, on one snapshot. Events older than the
    /// structured ones (a text summary, which may name any account) are for
    /// operators and service principals only.
    pub async fn audit_page(
        &self,
        scope: &EventScope,
        filter: &EventFilter,
        account: Option<Uuid>,
        after: Cursor,
        limit: i64,
    ) -> Result<AuditPage, Error> {
        let mut tx = self.read().await?;
        let marks = sqlx::query!(
            r#"SELECT (SELECT value FROM revision_counter) AS "revision!",
                      (SELECT pruned_through FROM audit_horizon) AS "pruned_through!",
                      (SELECT min(revision) FROM audit_events) AS oldest_kept"#
        )
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
        let upto = filter
            .to_revision
            .map_or(marks.revision, |r| r.min(marks.revision));
        let (all, admin, administered) = match scope {
            EventScope::All => (true, Uuid::nil(), Vec::new()),
            EventScope::Administered { actor, accounts } => (false, *actor, accounts.clone()),
        };
        let actions: Vec<String> = filter
            .actions
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect();
        let rows = sqlx::query!(
            r#"SELECT e.id, e.revision, e.occurred_at, e.actor_id,
                      a.kind AS "actor_kind?", a.display_name AS "actor_name?",
                      e.action, e.target_type, e.target_id, e.account_id,
                      ac.code AS "account_code?", e.changes, e.cause, e.summary
                 FROM audit_events e
                 LEFT JOIN users a ON a.id = e.actor_id
                 LEFT JOIN accounts ac ON ac.id = e.account_id
                WHERE (e.revision, e.id) > ($1, $2)
                  AND e.revision <= $3
                  AND ($4::uuid IS NULL OR e.account_id = $4)
                  AND ($5::text IS NULL OR (e.target_type = 'user' AND e.target_id = $5))
                  AND ($6::uuid IS NULL OR e.actor_id = $6)
                  AND (cardinality($7::text[]) = 0 OR e.action = ANY($7))
                  AND ($8::timestamptz IS NULL OR e.occurred_at >= $8)
                  AND ($9::timestamptz IS NULL OR e.occurred_at < $9)
                  AND ($10 OR (e.summary IS NULL
                               AND (e.account_id = ANY($11)
                                    OR (e.account_id IS NULL
                                        AND CASE WHEN e.target_type = 'user'
                                                 THEN clef_manages($12, e.target_id::uuid, $13)
                                                 ELSE false END))))
                ORDER BY e.revision, e.id
                LIMIT $14"#,
            after.revision,
            after.event_bound(),
            upto,
            account,
            filter.user.map(|u| u.to_string()),
            filter.actor,
            &actions,
            filter.since,
            filter.until,
            all,
            &administered,
            admin,
            tx.now(),
            limit
        )
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        tx.commit().await?;
        let events = rows
            .into_iter()
            .map(|r| {
                let actor = match (r.actor_id, r.actor_kind) {
                    (Some(id), Some(kind)) => Some(EventActor {
                        id,
                        kind: PrincipalKind::from_db(&kind)?,
                        name: r.actor_name.unwrap_or_default(),
                    }),
                    _ => None,
                };
                Ok(Event {
                    id: r.id,
                    revision: r.revision,
                    time: r.occurred_at,
                    actor,
                    action: Action::from_db(&r.action)?,
                    target_type: TargetType::from_db(&r.target_type)?,
                    target_id: r.target_id,
                    account: r.account_id.zip(r.account_code),
                    changes: Event::changes_from_json(&r.changes),
                    cause: r.cause,
                    legacy_summary: r.summary,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(AuditPage {
            events,
            revision: upto,
            pruned_through: marks.pruned_through,
            oldest_kept: marks.oldest_kept,
        })
    }

    /// Deletes the oldest events if they happened before `cutoff`: whole
    /// revisions, about `batch` events at a time. Returns how many went (0:
    /// nothing left to prune).
    pub async fn prune_audit(&self, cutoff: DateTime<Utc>, batch: i64) -> Result<u64, Error> {
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        // One pruner at a time; readers see the horizon move with the rows.
        let horizon = sqlx::query_scalar!("SELECT pruned_through FROM audit_horizon FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let window = sqlx::query!(
            r#"SELECT revision, occurred_at < $2 AS "old!" FROM audit_events
                WHERE revision > $1 ORDER BY revision, id LIMIT $3"#,
            horizon,
            cutoff,
            batch
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        // Up to the last revision before the first event that is too young.
        let upto = window
            .iter()
            .take_while(|r| r.old)
            .map(|r| r.revision)
            .last();
        let Some(upto) = upto else {
            return Ok(0);
        };
        let gone = sqlx::query!(
            "DELETE FROM audit_events WHERE revision > $1 AND revision <= $2",
            horizon,
            upto
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        sqlx::query!("UPDATE audit_horizon SET pruned_through = $1", upto)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(gone)
    }
}
