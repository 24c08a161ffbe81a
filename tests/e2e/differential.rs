//! Differential test: random sequences of grants, revokes, links, unlinks,
//! tag changes, deactivations and key regenerations through the gRPC API;
//! after each, every decision of the engine equals that of a plain SQL
//! evaluator written here, independently of clef's code.

use clef::pb::{self, DenialReason as R, Scope};
use sqlx::PgPool;

use crate::common::*;

/// xorshift64*: reproducible without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const ACCOUNTS: [&str; 3] = ["D1", "D2", "D3"];
const RIGHTS: [&str; 3] = ["shipping.ws", "tracking.tool", "tracking.ws"];
const TAGS: [&str; 2] = ["T1", "T2"];

/// The reference: a decision computed by one SQL statement straight from the
/// tables.
async fn reference(
    pool: &PgPool,
    key: Option<&str>,
    user: Option<&str>,
    account: &str,
    right: &str,
) -> R {
    let reason: String = sqlx::query_scalar(
        r#"WITH s AS (
             SELECT u.id, u.status FROM users u
              WHERE ($1::text IS NOT NULL AND u.id IN (
                       SELECT k.user_id FROM connection_keys k
                        WHERE k.secret_hash = sha256(convert_to($1, 'UTF8'))
                          AND (k.revoked_at IS NULL OR k.revoked_at > now())
                          AND (k.expires_at IS NULL OR k.expires_at > now())))
                 OR ($2::uuid IS NOT NULL AND u.id = $2::uuid)),
           a AS (SELECT id, status FROM accounts WHERE code = $3),
           l AS (SELECT 1 FROM links WHERE user_id = (SELECT id FROM s) AND account_id = (SELECT id FROM a)),
           g AS (SELECT expires_at FROM grants
                  WHERE user_id = (SELECT id FROM s) AND account_id = (SELECT id FROM a) AND right_code = $4)
         SELECT CASE
           WHEN NOT EXISTS (SELECT 1 FROM s) THEN 'UNKNOWN_SUBJECT'
           WHEN (SELECT status FROM s) <> 'active' THEN 'INACTIVE_USER'
           WHEN NOT EXISTS (SELECT 1 FROM a) THEN 'UNKNOWN_ACCOUNT'
           WHEN NOT EXISTS (SELECT 1 FROM l) THEN 'NOT_LINKED'
           WHEN (SELECT status FROM a) = 'closed' THEN 'ACCOUNT_CLOSED'
           WHEN NOT EXISTS (SELECT 1 FROM g) THEN 'NO_GRANT'
           WHEN (SELECT expires_at FROM g) <= now() THEN 'EXPIRED_GRANT'
           ELSE 'ALLOWED' END"#,
    )
    .bind(key)
    .bind(user)
    .bind(account)
    .bind(right)
    .fetch_one(pool)
    .await
    .expect("reference query");
    match reason.as_str() {
        "ALLOWED" => R::Unspecified,
        "UNKNOWN_SUBJECT" => R::UnknownSubject,
        "INACTIVE_USER" => R::InactiveUser,
        "UNKNOWN_ACCOUNT" => R::UnknownAccount,
        "NOT_LINKED" => R::NotLinked,
        "ACCOUNT_CLOSED" => R::AccountClosed,
        "NO_GRANT" => R::NoGrant,
        _ => R::ExpiredGrant,
    }
}

/// The accounts a user is linked to, and his grants as (account, right).
async fn state(pool: &PgPool, user: &str) -> (Vec<String>, Vec<(String, String)>) {
    let linked = sqlx::query_scalar(
        "SELECT a.code FROM links l JOIN accounts a ON a.id = l.account_id WHERE l.user_id = $1::uuid ORDER BY a.code",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap();
    let held = sqlx::query_as(
        "SELECT a.code, g.right_code FROM grants g JOIN accounts a ON a.id = g.account_id
          WHERE g.user_id = $1::uuid ORDER BY 1, 2",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap();
    (linked, held)
}

struct Person {
    id: String,
    key: String,
    old_keys: Vec<String>,
}

#[tokio::test]
async fn engine_agrees_with_a_sql_reference_after_every_change() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Diff").await;
    for code in ACCOUNTS {
        create_account(&mut ops.accounts, &org, code).await;
    }
    let mut people = Vec::new();
    for i in 0..3 {
        let (u, key) = create_user(
            &mut ops,
            advanced(&format!("P{i}"), "Diff", &format!("p{i}@example.com")),
            "D1",
            &[],
            vec![],
        )
        .await
        .unwrap();
        people.push((
            u.user_key,
            Person {
                id: u.id,
                key,
                old_keys: vec![],
            },
        ));
    }
    let mut d = app.decider().await;
    let mut rng = Rng(0x5eed_c1ef);
    let mut compared = 0;
    // Changes that went through, per kind of operation.
    let mut applied = [0usize; 8];
    for step in 0..100 {
        let who = rng.below(people.len());
        // Every kind of change in turn; the person, account and right at random.
        let op = step % 8;
        let (linked, held) = state(app.store.pool(), &people[who].1.id).await;
        // Aim each change at the person's actual state so that it changes
        // something: grants and unlinks on linked accounts, links to others,
        // revokes of held rights.
        let pick = |rng: &mut Rng, from: &[String]| -> String {
            if from.is_empty() {
                ACCOUNTS[rng.below(ACCOUNTS.len())].to_owned()
            } else {
                from[rng.below(from.len())].clone()
            }
        };
        let unlinked: Vec<String> = ACCOUNTS
            .iter()
            .map(|a| a.to_string())
            .filter(|a| !linked.contains(a))
            .collect();
        let (account, right_code) = match op {
            2 if !held.is_empty() => held[rng.below(held.len())].clone(),
            3 => (pick(&mut rng, &unlinked), RIGHTS[0].to_owned()),
            _ => (
                pick(&mut rng, &linked),
                RIGHTS[rng.below(RIGHTS.len())].to_owned(),
            ),
        };
        let (account, right_code) = (account.as_str(), right_code.as_str());
        let (user_key, p) = &mut people[who];
        // Refusals (e.g. granting on an unlinked account) are part of the
        // sequence: they must change nothing.
        let outcome = match op {
            0 | 1 => ops
                .grants
                .grant_rights(pb::GrantRightsRequest {
                    account_code: account.into(),
                    user_id: p.id.clone(),
                    rights: vec![if right_code == "tracking.tool" {
                        scoped(
                            right_code,
                            [Scope::UserKey, Scope::UserTag, Scope::Consolidated][rng.below(3)],
                        )
                    } else {
                        right(right_code)
                    }],
                })
                .await
                .map(|_| ()),
            2 => ops
                .grants
                .revoke_rights(pb::RevokeRightsRequest {
                    account_code: account.into(),
                    user_id: p.id.clone(),
                    rights: vec![right_code.into()],
                })
                .await
                .map(|_| ()),
            3 => ops
                .links
                .link_user(pb::LinkUserRequest {
                    account_code: account.into(),
                    user_key: user_key.clone(),
                    tags: vec![TAGS[rng.below(2)].into()],
                    rights: vec![],
                })
                .await
                .map(|_| ()),
            4 => ops
                .links
                .unlink_user(pb::UnlinkUserRequest {
                    account_code: account.into(),
                    user_id: p.id.clone(),
                })
                .await
                .map(|_| ()),
            5 => ops
                .links
                .update_link_tags(pb::UpdateLinkTagsRequest {
                    account_code: account.into(),
                    user_id: p.id.clone(),
                    tags: TAGS
                        .iter()
                        .filter(|_| rng.below(2) == 0)
                        .map(|t| t.to_string())
                        .collect(),
                })
                .await
                .map(|_| ()),
            6 => {
                let r = if rng.below(2) == 0 {
                    ops.users
                        .deactivate_user(pb::UserRef { id: p.id.clone() })
                        .await
                } else {
                    ops.users
                        .reactivate_user(pb::UserRef { id: p.id.clone() })
                        .await
                };
                r.map(|_| ())
            }
            _ => ops
                .keys
                .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
                    user_id: p.id.clone(),
                    ..Default::default()
                })
                .await
                .map(|r| {
                    let new = r.into_inner().connection_key;
                    p.old_keys.push(std::mem::replace(&mut p.key, new));
                }),
        };

        if outcome.is_ok() {
            applied[op] += 1;
        }

        // Every subject form of every person, on every account (and an
        // unknown one), for every right: engine == reference.
        let mut checks = Vec::new();
        let mut expected = Vec::new();
        for (_, p) in &people {
            let mut subjects = vec![(Some(p.key.clone()), None), (None, Some(p.id.clone()))];
            if let Some(old) = p.old_keys.last() {
                subjects.push((Some(old.clone()), None));
            }
            for (key, id) in subjects {
                for account in ACCOUNTS.iter().chain(["DX"].iter()) {
                    for right in RIGHTS {
                        checks.push(pb::CheckRequest {
                            subject: match (&key, &id) {
                                (Some(k), _) => by_key(k),
                                (_, Some(i)) => by_user(i),
                                _ => None,
                            },
                            account_code: account.to_string(),
                            right: right.into(),
                            min_revision: 0,
                        });
                        expected.push(
                            reference(
                                app.store.pool(),
                                key.as_deref(),
                                id.as_deref(),
                                account,
                                right,
                            )
                            .await,
                        );
                    }
                }
            }
        }
        let got = d
            .check_batch(pb::CheckBatchRequest {
                checks: checks.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        for ((c, e), g) in checks.iter().zip(&expected).zip(&got) {
            let g_reason = R::try_from(g.reason).unwrap();
            assert_eq!(
                (g.allowed, g_reason),
                (*e == R::Unspecified, *e),
                "step {step} (op {op}): {} {} {:?}",
                c.account_code,
                c.right,
                c.subject
            );
        }
        compared += got.len();
    }
    eprintln!("changes applied per operation: {applied:?}; {compared} decisions compared with the reference");
    assert!(compared > 3000);
    assert!(
        applied.iter().all(|n| *n > 0),
        "every kind of change must have happened: {applied:?}"
    );
}
