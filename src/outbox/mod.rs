//! Delivery of the outbox: a worker on every replica claims due messages
//! for a lease (`Store::claim_messages`: `FOR UPDATE SKIP LOCKED`, so two
//! replicas never hold the same message), draws the token an invitation or
//! a reset carries, renders the message in the user's language and sends
//! it over SMTP (`lettre`) when `CLEF_SMTP_URL` is set; otherwise it logs
//! the message's kind and recipient, never drawing a token. A failed
//! delivery is retried with a doubling delay, and parked after
//! `max_attempts` for an operator (`clef outbox`). At least once: a replica
//! that dies while sending leaves the message due again when its lease ends.

pub mod render;

use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::{
    message::{header::ContentType, Mailbox},
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use tokio::sync::watch;

use uuid::Uuid;

use crate::{
    domain::{
        credential::{MessageKind, Token},
        user::UserStatus,
        Error,
    },
    store::{Due, Store},
};
use render::{greeting, list, render, Language, Rendered};

/// How the worker delivers. `Debug` hides the SMTP URL (it may carry a
/// password).
#[derive(Clone)]
pub struct Delivery {
    /// `smtp://host:port` (plaintext, or STARTTLS with `?tls=required`),
    /// `smtps://host:port` (TLS); `None`: messages are logged, not sent.
    pub smtp_url: Option<String>,
    /// The sender of every message.
    pub from: String,
    /// Where the portal completes invitations and resets (the token is
    /// appended as `?token=`); without one, the message shows the token.
    pub portal_url: Option<String>,
    /// How often the worker looks for due messages.
    pub poll: Duration,
    /// The first retry's delay; each further one doubles, up to an hour.
    pub retry_base: Duration,
    /// Failed deliveries before a message is parked.
    pub max_attempts: i32,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("smtp", &self.smtp_url.as_ref().map(|_| "(set)"))
            .field("from", &self.from)
            .field("portal_url", &self.portal_url)
            .field("retry_base", &self.retry_base)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "clef <no-reply@localhost>".into(),
            portal_url: None,
            poll: Duration::from_millis(200),
            retry_base: Duration::from_secs(5),
            max_attempts: 10,
        }
    }
}

/// How long a claimed message is this worker's; renewed just before it is
/// sent, so it must outlast the longest send (a few SMTP commands of at
/// most 20 s each).
const LEASE: Duration = Duration::from_secs(300);
/// How often a worker prunes old messages, tokens and login attempts.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Messages claimed at once when they are sent (each holds the lease while
/// the ones before it are sent)...
const BATCH: i64 = 16;
/// ...and when they are only logged (no SMTP): an import inviting a million
/// users queues a million of them, claimed and closed a few hundred per
/// statement rather than one by one.
const LOGGED_BATCH: i64 = 256;

type Smtp = AsyncSmtpTransport<Tokio1Executor>;

/// Runs the worker until `stop` turns true.
pub async fn run(store: Store, delivery: Delivery, mut stop: watch::Receiver<bool>) {
    let transport = match &delivery.smtp_url {
        None => None,
        Some(url) => match AsyncSmtpTransport::<Tokio1Executor>::from_url(url) {
            Ok(b) => Some(b.timeout(Some(Duration::from_secs(20))).build()),
            Err(e) => {
                tracing::error!(error = %e, "CLEF_SMTP_URL is not a usable SMTP URL; messages are not delivered");
                return;
            }
        },
    };
    let from: Mailbox = match delivery.from.parse() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, from = %delivery.from, "the sender address is not valid; messages are not delivered");
            return;
        }
    };
    let worker = Worker {
        id: Uuid::new_v4(),
        store,
        delivery,
        transport,
        from,
    };
    let mut pruned: Option<tokio::time::Instant> = None;
    loop {
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned = Some(tokio::time::Instant::now());
            match worker.store.prune_credentials().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(rows = n, "outbox: pruned old messages, tokens and attempts")
                }
                Err(e) => tracing::debug!(error = %e, "outbox: cannot prune now"),
            }
        }
        let busy = match worker.round(&stop).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::debug!(error = %e, "outbox: cannot claim messages now");
                false
            }
        };
        if *stop.borrow() {
            return;
        }
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(worker.delivery.poll) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

struct Worker {
    /// This worker, as the messages it claims record it.
    id: Uuid,
    store: Store,
    delivery: Delivery,
    transport: Option<Smtp>,
    from: Mailbox,
}

impl Worker {
    /// Delivers what is due, checking `stop` between messages; returns how
    /// many messages it claimed.
    async fn round(&self, stop: &watch::Receiver<bool>) -> Result<usize, Error> {
        let batch = if self.transport.is_some() {
            BATCH
        } else {
            LOGGED_BATCH
        };
        let due = self.store.claim_messages(self.id, batch, LEASE).await?;
        // Messages done without leaving the process (logged, cancelled),
        // closed together at the end of the round; a sent one is closed at
        // once, since it has gone out.
        let mut closed: Vec<(i64, &'static str)> = Vec::new();
        for m in &due {
            if *stop.borrow() {
                // Left to their lease: due again for another worker.
                break;
            }
            match self.deliver(m).await {
                Ok(Some(state)) => closed.push((m.id, state)),
                Ok(None) => {}
                // The database went away mid-round: the lease brings the
                // message back.
                Err(e) => {
                    tracing::warn!(error = %e, id = m.id, "outbox: cannot record a delivery")
                }
            }
        }
        if !closed.is_empty() {
            if let Err(e) = self.store.messages_done(self.id, &closed).await {
                // Their lease brings them back: logged again, not lost.
                tracing::warn!(error = %e, messages = closed.len(), "outbox: cannot record deliveries");
            }
        }
        Ok(due.len())
    }

    /// Delivers `m`; `Some(state)` when it is done but not yet recorded
    /// (`logged`, `cancelled`).
    async fn deliver(&self, m: &Due) -> Result<Option<&'static str>, Error> {
        let Some(email) = m.email.as_deref().filter(|_| still_meant(m)) else {
            return Ok(Some("cancelled"));
        };
        let Some(transport) = &self.transport else {
            tracing::info!(kind = m.kind.as_str(), to = %email, "message not sent (no CLEF_SMTP_URL)");
            return Ok(Some("logged"));
        };
        let to: Mailbox = match email.parse() {
            Ok(to) => to,
            Err(e) => {
                let why = format!("recipient address: {e}");
                self.store.message_failed(self.id, m.id, &why, None).await?;
                return Ok(None);
            }
        };
        // The message stays this worker's for a whole lease from here, and
        // its token (valid from now) is drawn only if it still is.
        let now = self.store.clock().now();
        let token = m.kind.token().map(|purpose| {
            let expires = now + chrono::Duration::from_std(purpose.validity()).expect("fits");
            (purpose, expires)
        });
        let Some(drawn) = self
            .store
            .prepare_send(self.id, m.id, m.user_id, LEASE, token)
            .await?
        else {
            return Ok(None);
        };
        let token = drawn.map(|t| (t, token.map(|(_, e)| e).unwrap_or(now)));
        let rendered = self.render(m, token.as_ref()).await?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(rendered.body)
            .map_err(|e| Error::Internal(format!("building a message: {e}")))?;
        match transport.send(message).await {
            Ok(_) => {
                tracing::info!(kind = m.kind.as_str(), to = %email, "message sent");
                self.store.message_done(self.id, m.id, "sent").await?;
                Ok(None)
            }
            Err(e) => {
                let attempts = m.attempts + 1;
                let retry = (attempts < self.delivery.max_attempts)
                    .then(|| backoff(self.delivery.retry_base, attempts));
                tracing::warn!(kind = m.kind.as_str(), to = %email, attempts, parked = retry.is_none(), error = %e, "message not delivered");
                self.store
                    .message_failed(self.id, m.id, &e.to_string(), retry)
                    .await?;
                Ok(None)
            }
        }
    }

    /// Renders `m`, with the token it carries and its expiry.
    async fn render(
        &self,
        m: &Due,
        token: Option<&(Token, DateTime<Utc>)>,
    ) -> Result<Rendered, Error> {
        let language = Language::of(&m.language);
        let mut values: Vec<(&str, String)> = vec![
            ("greeting", greeting(language, &m.first_name)),
            ("login", m.login.clone()),
            (
                "user_key",
                m.user_key.as_deref().map(group_key).unwrap_or_default(),
            ),
            ("account", m.account_code.clone().unwrap_or_default()),
            (
                "on_account",
                match (&m.account_code, language) {
                    (None, _) => String::new(),
                    (Some(a), Language::Fr) => format!(" pour le compte {a}"),
                    (Some(a), Language::En) => format!(" on account {a}"),
                },
            ),
        ];
        let text = |k: &str| m.params.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let actor = match text("granted_by").and_then(|id| id.parse().ok()) {
            Some(id) => self.store.display_name(id).await?,
            None => text("actor"),
        };
        values.push(("actor", actor.unwrap_or_else(|| "clef".into())));
        if let Some((token, expires)) = token {
            values.push(("link", self.link(m.kind, token.expose_secret())));
            values.push(("expires", expiry(*expires, language)));
        }
        if let Some(rights) = m.params.get("rights").and_then(|r| r.as_array()) {
            let labels = self.store.right_labels().await?;
            let items: Vec<String> = rights
                .iter()
                .filter_map(|r| {
                    // "code" or ["account", "code"].
                    let (account, code) = match r {
                        serde_json::Value::String(c) => (None, c.as_str()),
                        serde_json::Value::Array(pair) => {
                            (pair.first()?.as_str(), pair.get(1)?.as_str()?)
                        }
                        _ => return None,
                    };
                    let label = labels
                        .iter()
                        .find(|(c, _, _)| c == code)
                        .map(|(_, fr, en)| if language == Language::En { en } else { fr })
                        .map_or(code, String::as_str);
                    Some(match account {
                        Some(a) => format!("{label} ({a})"),
                        None => label.to_owned(),
                    })
                })
                .collect();
            values.push(("rights", list(&items)));
        }
        Ok(render(m.kind, language, &values))
    }

    fn link(&self, kind: MessageKind, token: &str) -> String {
        let page = match kind {
            MessageKind::PasswordReset => "reset-password",
            _ => "invitation",
        };
        match &self.delivery.portal_url {
            Some(base) => format!("{}/{page}?token={token}", base.trim_end_matches('/')),
            None => token.to_owned(),
        }
    }
}

/// Whether the message still makes sense for its user: an invitation only
/// while he is invited, anything else only while he is active.
fn still_meant(m: &Due) -> bool {
    match m.kind {
        MessageKind::Invitation => m.status == UserStatus::Invited,
        _ => m.status == UserStatus::Active,
    }
}

/// The delay before the `attempts`+1-th try: `base` doubled each time, at
/// most an hour.
fn backoff(base: Duration, attempts: i32) -> Duration {
    let factor = 1u32 << (attempts - 1).clamp(0, 16);
    (base * factor).min(Duration::from_secs(3600))
}

fn group_key(key: &str) -> String {
    key.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

fn expiry(at: DateTime<Utc>, language: Language) -> String {
    match language {
        Language::Fr => at.format("%d/%m/%Y à %H:%M UTC").to_string(),
        Language::En => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_an_hour() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, 3), Duration::from_secs(20));
        assert_eq!(backoff(base, 30), Duration::from_secs(3600));
    }

    #[test]
    fn user_keys_are_shown_grouped() {
        assert_eq!(group_key("K7QH2M9DXW4P"), "K7QH-2M9D-XW4P");
    }
}
