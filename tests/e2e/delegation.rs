//! The delegation rule and tenant isolation: every refusal below must leave
//! the database exactly as it was. Each test builds the same two tenants
//! ([`tenants`]) and reports every refused call that went wrong.

use clef::pb::{self, Scope};
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::*;

const DENIED: Code = Code::PermissionDenied;

fn by_id(id: &str) -> Option<pb::get_user_request::By> {
    Some(pb::get_user_request::By::Id(id.into()))
}

fn select_id(id: &str) -> Option<pb::UserSelector> {
    Some(pb::UserSelector {
        by: Some(pb::user_selector::By::Id(id.into())),
    })
}

/// Two tenants: A (account 900138, admin Alice holding `shipping.ws` and
/// `tracking.tool` by user tag) and B (account 850061, admin Bruno holding
/// `shipping.ws`). UA is A's standard user (holding what Alice gave him, and
/// `tracking.ws` from the operator), UB is B's, V an advanced user both
/// tenants linked.
struct Tenants {
    app: TestApp,
    a: Clients,
    ua: pb::User,
    ua_key: String,
    ub: pb::User,
    uv: pb::User,
    before: Vec<String>,
}

async fn tenants() -> Tenants {
    let app = spawn_app().await;
    org_with_account(&app, "A", "900138").await;
    org_with_account(&app, "B", "850061").await;
    let (_, key_a) = make_admin(
        &app,
        "900138",
        "Alice",
        vec![
            right("shipping.ws"),
            scoped("tracking.tool", Scope::UserTag),
        ],
    )
    .await;
    let (_, key_b) = make_admin(&app, "850061", "Bruno", vec![right("shipping.ws")]).await;
    let mut a = app.client(&key_a).await;
    let mut b = app.client(&key_b).await;
    let mut ops = app.operator().await;

    let (ua, ua_key) = create_user(&mut a, standard("Ugo", "Aubert"), "900138", &[], vec![])
        .await
        .unwrap();
    let (ub, _) = create_user(&mut b, standard("Ulla", "Bech"), "850061", &[], vec![])
        .await
        .unwrap();
    let (uv, _) = create_user(
        &mut a,
        advanced("Vera", "Vidal", "vera@example.com"),
        "900138",
        &[],
        vec![],
    )
    .await
    .unwrap();
    // B links V too: V now works for both tenants.
    b.links
        .link_user(pb::LinkUserRequest {
            account_code: "850061".into(),
            user_key: uv.user_key.clone(),
            tags: vec![],
            rights: vec![],
        })
        .await
        .unwrap();
    // Positive controls: what A holds, A may give, at the same scope.
    a.grants
        .grant_rights(pb::GrantRightsRequest {
            account_code: "900138".into(),
            user_id: ua.id.clone(),
            rights: vec![
                right("shipping.ws"),
                scoped("tracking.tool", Scope::UserTag),
            ],
        })
        .await
        .expect("A delegates what he holds");
    // A right A lacks, held by UA through the operator.
    ops.grants
        .grant_rights(pb::GrantRightsRequest {
            account_code: "900138".into(),
            user_id: ua.id.clone(),
            rights: vec![right("tracking.ws")],
        })
        .await
        .unwrap();
    let before = snapshot(&app).await;
    Tenants {
        app,
        a,
        ua,
        ua_key,
        ub,
        uv,
        before,
    }
}

impl Tenants {
    /// Adds a row when the database changed since the tenants were built,
    /// then fails with every failing row.
    async fn finish(self, mut m: Mismatches) {
        let after = snapshot(&self.app).await;
        m.check(
            "nothing written",
            after == self.before,
            "a refused call changed the database",
        );
        m.finish();
    }

    /// A GrantRights request for UA on A's account.
    fn grant_ua(&self, rights: Vec<pb::RightGrant>) -> pb::GrantRightsRequest {
        pb::GrantRightsRequest {
            account_code: "900138".into(),
            user_id: self.ua.id.clone(),
            rights,
        }
    }
}

/// Records `case` unless the status's message contains every one of `words`.
fn says(m: &mut Mismatches, case: &str, s: Option<tonic::Status>, words: &[&str]) {
    if let Some(s) = s {
        let missing: Vec<_> = words.iter().filter(|w| !s.message().contains(*w)).collect();
        m.check(
            case,
            missing.is_empty(),
            format!("message {:?} lacks {missing:?}", s.message()),
        );
    }
}

#[tokio::test]
async fn an_admin_cannot_grant_a_right_he_lacks() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    let request = t.grant_ua(vec![right("delivery.pickup_point_ws")]);
    let s = m.refused(
        "a right he lacks",
        t.a.grants.grant_rights(request).await,
        DENIED,
        &[],
    );
    says(&mut m, "a right he lacks", s, &["delivery.pickup_point_ws"]);
    t.finish(m).await;
}

#[tokio::test]
async fn an_admin_cannot_grant_a_wider_or_another_scope_than_his() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    let request = t.grant_ua(vec![scoped("tracking.tool", Scope::Consolidated)]);
    let s = m.refused(
        "a wider scope",
        t.a.grants.grant_rights(request).await,
        DENIED,
        &[],
    );
    says(
        &mut m,
        "a wider scope",
        s,
        &["tracking.tool", "consolidated"],
    );
    let request = t.grant_ua(vec![scoped("tracking.tool", Scope::UserKey)]);
    m.refused(
        "another scope, not narrower",
        t.a.grants.grant_rights(request).await,
        DENIED,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn an_admin_cannot_revoke_or_replace_a_right_he_does_not_hold() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    let s = m.refused(
        "revoking it",
        t.a.grants
            .revoke_rights(pb::RevokeRightsRequest {
                account_code: "900138".into(),
                user_id: t.ua.id.clone(),
                rights: vec!["tracking.ws".into()],
            })
            .await,
        DENIED,
        &[],
    );
    says(&mut m, "revoking it", s, &["tracking.ws"]);
    m.refused(
        "replacing the rights that include it",
        t.a.grants
            .set_rights(pb::SetRightsRequest {
                account_code: "900138".into(),
                user_id: t.ua.id.clone(),
                rights: vec![right("shipping.ws")],
            })
            .await,
        DENIED,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn an_admin_cannot_create_a_user_with_a_right_he_lacks() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    m.refused(
        "create with a right he lacks",
        create_user(
            &mut t.a,
            standard("Nouveau", "Venu"),
            "900138",
            &[],
            vec![right("billing.invoices")],
        )
        .await,
        DENIED,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn an_admin_cannot_grant_or_create_on_another_tenants_account() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    let s = m.refused(
        "grant on B's account",
        t.a.grants
            .grant_rights(pb::GrantRightsRequest {
                account_code: "850061".into(),
                user_id: t.ub.id.clone(),
                rights: vec![right("shipping.ws")],
            })
            .await,
        DENIED,
        &[],
    );
    says(&mut m, "grant on B's account", s, &["admin.users"]);
    m.refused(
        "create on B's account",
        create_user(
            &mut t.a,
            standard("Intrus", "Dehors"),
            "850061",
            &[],
            vec![],
        )
        .await,
        DENIED,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn granting_across_accounts_grants_nothing_when_one_is_not_his() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    let s = m.refused(
        "across A and B",
        t.a.grants
            .grant_across_accounts(pb::GrantAcrossAccountsRequest {
                user: select_id(&t.uv.id),
                account_codes: vec!["900138".into(), "850061".into()],
                rights: vec![right("shipping.ws")],
            })
            .await,
        DENIED,
        &[],
    );
    if let Some(s) = s {
        let subjects: Option<Vec<String>> = s.get_error_details().precondition_failure().map(|f| {
            f.violations
                .iter()
                .map(|v| v.subject.clone())
                .collect::<Vec<_>>()
        });
        m.check(
            "per-account details",
            subjects.as_deref() == Some(&["850061".to_owned()][..]),
            format!("expected the refused account 850061 alone, got {subjects:?}"),
        );
    }
    t.finish(m).await;
}

#[tokio::test]
async fn an_admin_cannot_read_another_tenants_users() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    m.refused(
        "get B's user",
        t.a.users
            .get_user(pb::GetUserRequest {
                by: by_id(&t.ub.id),
            })
            .await,
        Code::NotFound,
        &[],
    );
    m.refused(
        "list B's users",
        t.a.users
            .list_users(pb::ListUsersRequest {
                account_code: "850061".into(),
                ..Default::default()
            })
            .await,
        DENIED,
        &[],
    );
    m.refused(
        "list B's links",
        t.a.links
            .list_links(pb::ListLinksRequest {
                of: Some(pb::list_links_request::Of::AccountCode("850061".into())),
                ..Default::default()
            })
            .await,
        DENIED,
        &[],
    );
    m.refused(
        "list the grants of B's user",
        t.a.grants
            .list_grants(pb::ListGrantsRequest {
                of: Some(pb::list_grants_request::Of::UserId(t.ub.id.clone())),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn an_admin_cannot_change_another_tenants_users() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    m.refused(
        "update B's user",
        t.a.users
            .update_user(pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: t.ub.id.clone(),
                    last_name: "Pirate".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["last_name".into()],
                }),
            })
            .await,
        Code::NotFound,
        &[],
    );
    m.refused(
        "deactivate B's user",
        t.a.users
            .deactivate_user(pb::DeactivateUserRequest {
                id: t.ub.id.clone(),
            })
            .await,
        Code::NotFound,
        &[],
    );
    m.refused(
        "deactivate his own user and B's",
        t.a.users
            .deactivate_users(pb::DeactivateUsersRequest {
                team: None,
                user_ids: vec![t.ua.id.clone(), t.ub.id.clone()],
            })
            .await,
        Code::NotFound,
        &[],
    );
    m.refused(
        "revoke everything of B's user",
        t.a.grants
            .revoke_everywhere(pb::RevokeEverywhereRequest {
                user: select_id(&t.ub.id),
            })
            .await,
        Code::NotFound,
        &[],
    );
    m.refused(
        "re-key B's user",
        t.a.keys
            .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
                user_id: t.ub.id.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn an_admin_cannot_unlink_deactivate_or_strip_a_user_the_other_tenant_shares() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    m.refused(
        "unlink B's link of V",
        t.a.links
            .unlink_user(pb::UnlinkUserRequest {
                account_code: "850061".into(),
                user_id: t.uv.id.clone(),
            })
            .await,
        DENIED,
        &[],
    );
    let s = m.refused(
        "deactivate V",
        t.a.users
            .deactivate_user(pb::DeactivateUserRequest {
                id: t.uv.id.clone(),
            })
            .await,
        DENIED,
        &[],
    );
    says(&mut m, "deactivate V", s, &["850061"]);
    m.refused(
        "revoke everything of V",
        t.a.grants
            .revoke_everywhere(pb::RevokeEverywhereRequest {
                user: select_id(&t.uv.id),
            })
            .await,
        DENIED,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn a_plain_user_administers_nothing() {
    let t = tenants().await;
    let mut plain = t.app.client(&t.ua_key).await;
    let mut m = Mismatches::default();
    m.refused(
        "list users",
        plain
            .users
            .list_users(pb::ListUsersRequest {
                account_code: "900138".into(),
                ..Default::default()
            })
            .await,
        DENIED,
        &[],
    );
    m.refused(
        "create a user",
        create_user(&mut plain, standard("Ami", "Copain"), "900138", &[], vec![]).await,
        DENIED,
        &[],
    );
    m.refused(
        "look a user key up",
        plain
            .links
            .lookup_user_key(pb::LookupUserKeyRequest {
                user_key: t.uv.user_key.clone(),
            })
            .await,
        DENIED,
        &[],
    );
    m.refused(
        "define a right",
        plain
            .grants
            .define_right(pb::DefineRightRequest {
                right: Some(pb::Right {
                    code: "x.y".into(),
                    category: "c".into(),
                    label_fr: "l".into(),
                    label_en: "l".into(),
                    kinds: vec!["standard".into()],
                    scoped: false,
                }),
            })
            .await,
        DENIED,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn a_service_principal_is_no_admin() {
    let mut t = tenants().await;
    let service = t.app.service_key("tracker").await;
    // The service principal is a row of its own.
    t.before = snapshot(&t.app).await;
    let mut svc = t.app.client(&service).await;
    let mut m = Mismatches::default();
    m.refused(
        "create a user",
        create_user(&mut svc, standard("Bot", "Robot"), "900138", &[], vec![]).await,
        DENIED,
        &[],
    );
    t.finish(m).await;
}

#[tokio::test]
async fn a_standard_users_home_link_cannot_be_removed() {
    let mut t = tenants().await;
    let mut m = Mismatches::default();
    m.refused(
        "unlink UA from his home account",
        t.a.links
            .unlink_user(pb::UnlinkUserRequest {
                account_code: "900138".into(),
                user_id: t.ua.id.clone(),
            })
            .await,
        Code::FailedPrecondition,
        &[],
    );
    t.finish(m).await;
}
