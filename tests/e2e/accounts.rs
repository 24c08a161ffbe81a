//! AccountService: the happy paths, pagination, every validation error,
//! duplicates, and callers without a valid key or the operator role.

use clef::pb::{self, AccountStatus};
use prost_types::FieldMask;
use tonic::Code;

use crate::common::*;

fn account(code: &str, name: &str, org: &str) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        account: Some(pb::Account {
            code: code.into(),
            display_name: name.into(),
            organization_id: org.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

#[tokio::test]
async fn create_get_update_an_account() {
    let app = spawn_app().await;
    let mut c = app.operator_accounts().await;
    let org = c
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "  Transports Dupré  ".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(org.display_name, "Transports Dupré");
    assert!(org.revision > 0);

    let created = c
        .create_account(account("007", "Agence d'Épinal", &org.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.code, "007");
    assert_eq!(created.status, AccountStatus::Active as i32);
    assert!(
        created.revision > org.revision,
        "revisions grow with each write"
    );
    assert!(created.create_time.is_some());

    // "7" is another account: codes are text.
    let seven = c
        .create_account(account("7", "Sept", &org.id))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(seven.revision, created.revision);
    let got = c
        .get_account(pb::GetAccountRequest { code: "007".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.display_name, "Agence d'Épinal");
    assert_eq!(got.organization_id, org.id);

    let updated = c
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                code: "007".into(),
                display_name: "Épinal Nord".into(),
                status: AccountStatus::Closed as i32,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["status".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.status, AccountStatus::Closed as i32);
    assert_eq!(
        updated.display_name, "Agence d'Épinal",
        "fields outside the mask are untouched"
    );
    assert!(updated.revision > seven.revision);

    // No mask: every populated field.
    let renamed = c
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                code: "007".into(),
                display_name: "Épinal Nord".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.display_name, "Épinal Nord");
    assert_eq!(renamed.status, AccountStatus::Closed as i32);
    let got = c
        .get_account(pb::GetAccountRequest { code: "007".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.revision, renamed.revision);
}

#[tokio::test]
async fn list_filters_and_paginates_in_code_order() {
    let app = spawn_app().await;
    let mut c = app.operator_accounts().await;
    let a = create_org(&mut c, "A").await;
    let b = create_org(&mut c, "B").await;
    for i in 0..25 {
        create_account(&mut c, &a, &format!("A{i:03}")).await;
    }
    for code in ["B001", "B002", "A-other"] {
        create_account(&mut c, &b, code).await;
    }

    // Organization A over pages of 10: 10 + 10 + 5, no repeats, in order.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_accounts(pb::ListAccountsRequest {
                organization_id: a.clone(),
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.accounts.into_iter().map(|x| x.code));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("A{i:03}")).collect();
    assert_eq!(seen, expected);

    // Code prefix across organizations.
    let page = c
        .list_accounts(pb::ListAccountsRequest {
            code_prefix: "A-".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = page.accounts.iter().map(|x| x.code.as_str()).collect();
    assert_eq!(codes, ["A-other"]);
    assert!(page.next_page_token.is_empty());

    // Both filters.
    let page = c
        .list_accounts(pb::ListAccountsRequest {
            organization_id: b.clone(),
            code_prefix: "B".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.accounts.len(), 2);

    // An exact page boundary has no dangling next page.
    let page = c
        .list_accounts(pb::ListAccountsRequest {
            organization_id: b,
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.accounts.len(), 3);
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn every_validation_error_names_its_field() {
    let app = spawn_app().await;
    let mut c = app.operator_accounts().await;
    let org = create_org(&mut c, "Org").await;

    let s = expect_code(
        c.create_organization(pb::CreateOrganizationRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["display_name"]);
    let s = expect_code(
        c.create_organization(pb::CreateOrganizationRequest {
            display_name: "x".repeat(201),
            request_id: "has space".into(),
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["display_name", "request_id"]);

    let s = expect_code(
        c.create_account(pb::CreateAccountRequest::default()).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["account"]);

    // All three missing at once are reported together.
    let s = expect_code(
        c.create_account(account("", "", "")).await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&s),
        [
            "account.code",
            "account.display_name",
            "account.organization_id"
        ]
    );
    for bad_code in ["a b", "é", "x/y", &"9".repeat(33)] {
        let s = expect_code(
            c.create_account(account(bad_code, "n", &org)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&s), ["account.code"], "code {bad_code:?}");
    }
    let s = expect_code(
        c.create_account(account("OK1", "n", "not-a-uuid")).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["account.organization_id"]);
    let mut bad_status = account("OK1", "n", &org);
    bad_status.account.as_mut().unwrap().status = 99;
    let s = expect_code(c.create_account(bad_status).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&s), ["account.status"]);

    // Unknown organization.
    expect_code(
        c.create_account(account("OK1", "n", &uuid::Uuid::new_v4().to_string()))
            .await,
        Code::NotFound,
    );

    let s = expect_code(
        c.get_account(pb::GetAccountRequest { code: "".into() })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["code"]);
    expect_code(
        c.get_account(pb::GetAccountRequest {
            code: "nope".into(),
        })
        .await,
        Code::NotFound,
    );

    for (req, field) in [
        (
            pb::ListAccountsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListAccountsRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListAccountsRequest {
                page_token: "%%%".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListAccountsRequest {
                organization_id: "nope".into(),
                ..Default::default()
            },
            "organization_id",
        ),
    ] {
        let s = expect_code(c.list_accounts(req).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), [field]);
    }

    create_account(&mut c, &org, "U1").await;
    let update = |paths: &[&str], name: &str, status: AccountStatus| pb::UpdateAccountRequest {
        account: Some(pb::Account {
            code: "U1".into(),
            display_name: name.into(),
            status: status as i32,
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let s = expect_code(
        c.update_account(update(&["code"], "", AccountStatus::Unspecified))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["update_mask"]);
    let s = expect_code(
        c.update_account(update(&["colour"], "", AccountStatus::Unspecified))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["update_mask"]);
    let s = expect_code(
        c.update_account(update(&["display_name"], " ", AccountStatus::Unspecified))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["account.display_name"]);
    let s = expect_code(
        c.update_account(update(&["status"], "", AccountStatus::Unspecified))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["account.status"]);
    let s = expect_code(
        c.update_account(update(&[], "", AccountStatus::Unspecified))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["update_mask"]);
    let mut missing = update(&["status"], "", AccountStatus::Active);
    missing.account.as_mut().unwrap().code = "GHOST".into();
    expect_code(c.update_account(missing).await, Code::NotFound);

    // Nothing of the refused writes reached the database.
    let all = c
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = all.accounts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(codes, ["U1"]);
    assert_eq!(all.accounts[0].display_name, "Account U1");
}

#[tokio::test]
async fn duplicates_are_refused_and_request_ids_make_creates_idempotent() {
    let app = spawn_app().await;
    let mut c = app.operator_accounts().await;
    let org = create_org(&mut c, "Org").await;
    create_account(&mut c, &org, "900138").await;
    let s = expect_code(
        c.create_account(account("900138", "again", &org)).await,
        Code::AlreadyExists,
    );
    assert!(s.message().contains("900138"), "{}", s.message());

    let mut req = account("850061", "first", &org);
    req.request_id = "retry-1".into();
    let first = c.create_account(req.clone()).await.unwrap().into_inner();
    let again = c.create_account(req).await.unwrap().into_inner();
    assert_eq!(
        first.revision, again.revision,
        "a retry returns the first result"
    );

    let org_req = pb::CreateOrganizationRequest {
        display_name: "Idem".into(),
        request_id: "org-retry".into(),
    };
    let o1 = c
        .create_organization(org_req.clone())
        .await
        .unwrap()
        .into_inner();
    let o2 = c.create_organization(org_req).await.unwrap().into_inner();
    assert_eq!(o1.id, o2.id);
}

#[tokio::test]
async fn missing_malformed_unknown_and_unprivileged_keys_are_refused() {
    let app = spawn_app().await;
    let forged = {
        // Right shape and checksum, never issued.
        let k = clef::domain::key::NewKey::generate().unwrap();
        k.expose_secret().to_owned()
    };
    let mut last_char_changed = app.operator_key.clone();
    let end = last_char_changed.pop().unwrap();
    last_char_changed.push(if end == 'a' { 'b' } else { 'a' });

    let mut messages = Vec::new();
    for bearer in [
        Bearer::new(None),
        Bearer::raw("Bearer"),
        Bearer::raw("Basic dXNlcjpwYXNz"),
        Bearer::raw("Bearer not-a-key"),
        Bearer::new(Some(&last_char_changed)),
        Bearer::new(Some(&forged)),
        Bearer::raw(&app.operator_key),
    ] {
        let mut c = clef::pb::account_service_client::AccountServiceClient::with_interceptor(
            app.channel().await,
            bearer,
        );
        let s = expect_code(
            c.list_accounts(pb::ListAccountsRequest::default()).await,
            Code::Unauthenticated,
        );
        let s2 = expect_code(
            c.create_organization(pb::CreateOrganizationRequest {
                display_name: "x".into(),
                request_id: String::new(),
            })
            .await,
            Code::Unauthenticated,
        );
        messages.push(s.message().to_owned());
        messages.push(s2.message().to_owned());
    }
    messages.dedup();
    assert_eq!(
        messages.len(),
        1,
        "every refusal looks the same: {messages:?}"
    );

    // A valid key that is not an operator's.
    let service = app.service_key("tracking").await;
    let mut c = app.accounts(Some(&service)).await;
    let s = expect_code(
        c.create_organization(pb::CreateOrganizationRequest {
            display_name: "x".into(),
            request_id: String::new(),
        })
        .await,
        Code::PermissionDenied,
    );
    assert!(s.message().contains("operator"));
    expect_code(
        c.list_accounts(pb::ListAccountsRequest::default()).await,
        Code::PermissionDenied,
    );

    // Nothing was created by the refused calls.
    let all = app
        .operator_accounts()
        .await
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.accounts.is_empty());
    let orgs: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(orgs, 0);
}

#[tokio::test]
async fn secrets_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(t)::text FROM (SELECT * FROM users) t
         UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM connection_keys) t
         UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM audit_events) t",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert!(!dump.is_empty());
    let secret_part = &app.operator_key[clef::domain::key::DISPLAY_PREFIX_LEN..];
    for row in dump {
        assert!(!row.contains(secret_part), "secret found in {row}");
    }
}
