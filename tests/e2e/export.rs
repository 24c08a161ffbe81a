//! ExportService and the import template: streamed CSV, dialects, tenant
//! scope, no credentials.

use clef::pb::{self, Scope};
use tonic::Code;

use crate::common::*;

async fn export(
    app: &TestApp,
    key: &str,
    of: pb::export_users_request::Of,
    dialect: pb::CsvDialect,
) -> Result<(Vec<u8>, usize), tonic::Status> {
    let mut c = pb::export_service_client::ExportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(key)),
    );
    let mut stream = c
        .export_users(pb::ExportUsersRequest {
            team: None,
            of: Some(of),
            dialect: dialect as i32,
        })
        .await?
        .into_inner();
    let mut data = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.message().await? {
        data.extend_from_slice(&chunk.data);
        chunks += 1;
    }
    Ok((data, chunks))
}

fn parse(data: &[u8], delimiter: u8) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(data);
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn cell<'a>(header: &[String], row: &'a [String], name: &str) -> &'a str {
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    &row[i]
}

#[tokio::test]
async fn export_rows_dialects_scope_and_no_credentials() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Export").await;
    for code in ["007", "E2"] {
        create_account(&mut ops.accounts, &org, code).await;
    }
    let (_, admin_key) = make_admin(
        &app,
        "007",
        "Ada",
        vec![
            right("shipping.ws"),
            scoped("tracking.tool", Scope::Consolidated),
        ],
    )
    .await;
    let mut admin = app.client(&admin_key).await;
    let mut zoe = advanced("Zoé", "=1+1", "zoe@example.com");
    zoe.address_lines = vec!["12 rue de la Gare".into(), "Bâtiment B".into()];
    let (z, z_key) = create_user(
        &mut admin,
        zoe,
        "007",
        &["ATELIER-7", "QUAI"],
        vec![
            right("shipping.ws"),
            scoped("tracking.tool", Scope::UserTag),
        ],
    )
    .await
    .unwrap();
    let (gone, _) = create_user(&mut admin, standard("Old", "Gone"), "007", &[], vec![])
        .await
        .unwrap();
    admin
        .users
        .archive_user(pb::ArchiveUserRequest { id: gone.id })
        .await
        .unwrap();
    create_user(&mut ops, standard("Other", "Account"), "E2", &[], vec![])
        .await
        .unwrap();

    let (data, _) = export(
        &app,
        &admin_key,
        pb::export_users_request::Of::AccountCode("007".into()),
        pb::CsvDialect::Rfc4180,
    )
    .await
    .unwrap();
    let text = String::from_utf8(data.clone()).unwrap();
    for secret in [&z_key, &admin_key, &app.operator_key] {
        assert!(
            !text.contains(&secret[clef::domain::key::DISPLAY_PREFIX_LEN..]),
            "a key in the export"
        );
    }
    assert!(!text.contains("clef_"), "no key prefix either");
    let (header, rows) = parse(&data, b',');
    assert_eq!(&header[..3], ["COMPTE", "TYPE", "ETAT"]);
    assert!(
        header.contains(&"tracking.tool".to_owned())
            && header.contains(&"billing.invoices".to_owned())
    );
    assert_eq!(
        rows.len(),
        2,
        "the admin and Zoé; not the archived user nor account E2"
    );
    let zr = rows
        .iter()
        .find(|r| cell(&header, r, "EMAIL") == "zoe@example.com")
        .unwrap();
    assert_eq!(cell(&header, zr, "COMPTE"), "007");
    assert_eq!(cell(&header, zr, "TYPE"), "avancé");
    assert_eq!(cell(&header, zr, "ETAT"), "actif");
    assert_eq!(cell(&header, zr, "CLE UTILISATEUR"), z.user_key);
    assert_eq!(
        cell(&header, zr, "NOM"),
        "=1+1",
        "plain dialect keeps cells as they are"
    );
    assert_eq!(
        cell(&header, zr, "ADRESSE"),
        "12 rue de la Gare\nBâtiment B"
    );
    assert_eq!(cell(&header, zr, "TAG"), "ATELIER-7, QUAI");
    assert_eq!(cell(&header, zr, "shipping.ws"), "oui");
    assert_eq!(cell(&header, zr, "tracking.tool"), "user_tag");
    assert_eq!(cell(&header, zr, "tracking.ws"), "non");

    // Excel: BOM, ';', codes as text, formulas neutralised.
    let (data, _) = export(
        &app,
        &admin_key,
        pb::export_users_request::Of::AccountCode("007".into()),
        pb::CsvDialect::Excel,
    )
    .await
    .unwrap();
    assert!(data.starts_with("\u{feff}".as_bytes()));
    let (header, rows) = parse(&data[3..], b';');
    let zr = rows
        .iter()
        .find(|r| cell(&header, r, "EMAIL") == "zoe@example.com")
        .unwrap();
    assert_eq!(cell(&header, zr, "COMPTE"), "=\"007\"");
    assert_eq!(cell(&header, zr, "NOM"), "'=1+1");
    assert_eq!(cell(&header, zr, "TELEPHONE"), "'+33 1 23 45 67 89");

    // Organization: the operator sees both accounts, the admin only his.
    let of_org = || pb::export_users_request::Of::OrganizationId(org.clone());
    let (data, _) = export(&app, &app.operator_key, of_org(), pb::CsvDialect::Rfc4180)
        .await
        .unwrap();
    let (header, rows) = parse(&data, b',');
    let mut accounts: Vec<_> = rows
        .iter()
        .map(|r| cell(&header, r, "COMPTE").to_owned())
        .collect();
    accounts.dedup();
    assert_eq!(accounts, ["007", "E2"]);
    let (data, _) = export(&app, &admin_key, of_org(), pb::CsvDialect::Rfc4180)
        .await
        .unwrap();
    let (header, rows) = parse(&data, b',');
    assert!(rows.iter().all(|r| cell(&header, r, "COMPTE") == "007"));

    // Refusals.
    expect_code(
        export(
            &app,
            &admin_key,
            pb::export_users_request::Of::AccountCode("E2".into()),
            pb::CsvDialect::Excel,
        )
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        export(
            &app,
            &z_key,
            pb::export_users_request::Of::OrganizationId(org.clone()),
            pb::CsvDialect::Excel,
        )
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        export(
            &app,
            &admin_key,
            pb::export_users_request::Of::OrganizationId(uuid::Uuid::new_v4().to_string()),
            pb::CsvDialect::Excel,
        )
        .await,
        Code::NotFound,
    );
    let s = expect_code(
        export(
            &app,
            &admin_key,
            pb::export_users_request::Of::AccountCode("no way".into()),
            pb::CsvDialect::Excel,
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["account_code"]);

    // The template: profile columns and the rights this admin may give.
    let mut imp = pb::import_service_client::ImportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&admin_key)),
    );
    let t = imp
        .get_import_template(pb::GetImportTemplateRequest {
            account_code: "007".into(),
            excel: false,
        })
        .await
        .unwrap()
        .into_inner();
    let (header, rows) = parse(&t.csv, b',');
    assert_eq!(header[..3], ["COMPTE", "TYPE", "ETAT"]);
    let rights: Vec<&str> = header[clef::bulk::PROFILE_COLUMNS.len()..]
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(rights, ["admin.users", "shipping.ws", "tracking.tool"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(cell(&header, &rows[0], "tracking.tool"), "consolidated");
    // It imports as it is: its example line creates a user (dry run).
    let dry = pb::ImportOptions {
        dry_run: true,
        ..crate::import::opts("007")
    };
    let run = crate::import::import(&app, &admin_key, dry, &t.csv, 1000).await;
    assert_eq!(run.statuses(), [(2, "created")], "{:?}", run.results);
    // The excel dialect: BOM, `;`, the account code kept as text.
    let t = imp
        .get_import_template(pb::GetImportTemplateRequest {
            account_code: "007".into(),
            excel: true,
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8(t.csv).unwrap();
    assert!(text.starts_with("\u{feff}COMPTE;TYPE;ETAT;"), "{text}");
    assert!(text.contains("\n\"=\"\"007\"\"\";avancé;actif;"), "{text}");
    expect_code(
        imp.get_import_template(pb::GetImportTemplateRequest {
            account_code: "E2".into(),
            excel: true,
        })
        .await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn a_large_export_streams_in_many_chunks() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Many").await;
    let codes: Vec<String> = (0..2300).map(|i| format!("M{i:05}")).collect();
    for code in &codes {
        create_account(&mut ops.accounts, &org, code).await;
    }
    ops.grants
        .grant_across_accounts(pb::GrantAcrossAccountsRequest {
            user: Some(pb::UserSelector {
                by: Some(pb::user_selector::By::NewUser(pb::NewUserProfile {
                    last_name: "Partner".into(),
                    first_name: "Big".into(),
                    job_title: "Partner".into(),
                    email: "big@example.com".into(),
                    phone: "0102030405".into(),
                    address_lines: vec!["Port".into()],
                    postal_code: "13000".into(),
                    city: "Marseille".into(),
                    ..Default::default()
                })),
            }),
            account_codes: codes.clone(),
            rights: vec![right("tracking.ws")],
        })
        .await
        .unwrap();
    let (data, chunks) = export(
        &app,
        &app.operator_key,
        pb::export_users_request::Of::OrganizationId(org),
        pb::CsvDialect::Rfc4180,
    )
    .await
    .unwrap();
    let (header, rows) = parse(&data, b',');
    assert!(chunks >= 2, "streamed in pages, got {chunks} chunk(s)");
    let got: Vec<&str> = rows.iter().map(|r| cell(&header, r, "COMPTE")).collect();
    assert_eq!(got, codes, "every row once, in order");
}

#[tokio::test]
async fn a_client_leaving_mid_export_leaves_the_server_healthy() {
    let app = spawn_app().await;
    let org = org_with_account(&app, "Big", "BIG").await;
    // 20,000 standard users on the account, written directly (under a
    // revision, as every write that changes access must be).
    sqlx::query(
        "WITH r AS (UPDATE revision_counter SET value = value + 1 RETURNING value),
              a AS (SELECT id FROM accounts, r WHERE code = 'BIG'),
              u AS (INSERT INTO users (id, kind, status, login, display_name, last_name, first_name,
                                       home_account_id, default_account_id, revision)
                    SELECT gen_random_uuid(), 'standard', 'active', 'big' || i, 'B ' || i, 'B' || i, 'Zoé',
                           a.id, a.id, 1
                      FROM generate_series(1, 20000) i, a
                    RETURNING id, home_account_id)
         INSERT INTO links (user_id, account_id, revision) SELECT id, home_account_id, 1 FROM u",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    let of = || pb::export_users_request::Of::OrganizationId(org.clone());
    for _ in 0..3 {
        let mut c = pb::export_service_client::ExportServiceClient::with_interceptor(
            app.channel().await,
            Bearer::new(Some(&app.operator_key)),
        );
        let mut s = c
            .export_users(pb::ExportUsersRequest {
                team: None,
                of: Some(of()),
                dialect: pb::CsvDialect::Rfc4180 as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(s.message().await.unwrap().is_some());
        // Gone after the first chunk.
    }
    // Every pooled connection still answers, and a whole export works.
    let mut accounts = app.operator_accounts().await;
    for _ in 0..40 {
        accounts
            .get_account(pb::GetAccountRequest { code: "BIG".into() })
            .await
            .expect("a call after abandoned exports");
    }
    let (data, _) = export(&app, &app.operator_key, of(), pb::CsvDialect::Rfc4180)
        .await
        .unwrap();
    let (_, rows) = parse(&data, b',');
    assert_eq!(rows.len(), 20000);
}
