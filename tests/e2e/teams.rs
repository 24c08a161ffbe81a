//! Teams: trees per organization (no cycle, deleted only when empty,
//! members linked to the organization), the team filters of ListUsers,
//! ExportUsers and DeactivateUsers (and the CLI), and the import's roles
//! and teams columns with their round trip.

use clef::pb;
use tonic::{service::interceptor::InterceptedService, transport::Channel, Code};

use crate::{
    common::*,
    embedded::clef,
    import::{import, opts},
};

type TeamClient = pb::team_service_client::TeamServiceClient<InterceptedService<Channel, Bearer>>;

async fn teams(app: &TestApp, key: &str) -> TeamClient {
    pb::team_service_client::TeamServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(key)),
    )
}

async fn create(
    c: &mut TeamClient,
    org: &str,
    parent: &str,
    name: &str,
) -> Result<pb::Team, tonic::Status> {
    Ok(c.create_team(pb::CreateTeamRequest {
        organization_id: org.into(),
        parent_id: parent.into(),
        name: name.into(),
        account_code: String::new(),
    })
    .await?
    .into_inner())
}

async fn move_to(c: &mut TeamClient, team: &str, parent: &str) -> Result<pb::Team, tonic::Status> {
    Ok(c.update_team(pb::UpdateTeamRequest {
        team_id: team.into(),
        parent_id: parent.into(),
        name: String::new(),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["parent_id".into()],
        }),
    })
    .await?
    .into_inner())
}

async fn add(
    c: &mut TeamClient,
    team: &str,
    users: &[&str],
) -> Result<pb::TeamMembersResponse, tonic::Status> {
    Ok(c.add_team_members(pb::AddTeamMembersRequest {
        team_id: team.into(),
        user_ids: users.iter().map(|u| u.to_string()).collect(),
    })
    .await?
    .into_inner())
}

async fn paths(c: &mut TeamClient, org: &str) -> Vec<String> {
    c.list_teams(pb::ListTeamsRequest {
        organization_id: org.into(),
        account_code: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .teams
    .into_iter()
    .map(|t| t.path)
    .collect()
}

fn filter(team: &str, include_subteams: bool) -> Option<pb::TeamFilter> {
    Some(pb::TeamFilter {
        team: team.into(),
        include_subteams,
        ..Default::default()
    })
}

async fn status_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM users WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn team_trees_refuse_cycles_keep_members_in_the_organization_and_delete_only_empty_teams() {
    let app = spawn_app().await;
    let org = org_with_account(&app, "Org Teams", "TT1").await;
    let other_org = org_with_account(&app, "Org Elsewhere", "TT9").await;
    let (_, admin_key) = make_admin(&app, "TT1", "Tina", vec![]).await;
    let (_, other_key) = make_admin(&app, "TT9", "Otto", vec![]).await;
    let mut ops = app.operator().await;
    let (member, _) = create_user(&mut ops, standard("Mia", "Member"), "TT1", &[], vec![])
        .await
        .unwrap();
    let (stranger, _) = create_user(&mut ops, standard("Sam", "Stranger"), "TT9", &[], vec![])
        .await
        .unwrap();
    let (plain, plain_key) = create_user(&mut ops, standard("Pia", "Plain"), "TT1", &[], vec![])
        .await
        .unwrap();
    let mut t = teams(&app, &admin_key).await;

    let nord = create(&mut t, &org, "", "Nord").await.unwrap();
    let atelier = create(&mut t, &org, &nord.id, "Atelier 7").await.unwrap();
    let poste = create(&mut t, &org, &atelier.id, "Poste 1").await.unwrap();
    let sud = create(&mut t, &org, "", "Sud").await.unwrap();
    assert_eq!(poste.path, "Nord/Atelier 7/Poste 1");
    assert_eq!(
        paths(&mut t, &org).await,
        ["Nord", "Nord/Atelier 7", "Nord/Atelier 7/Poste 1", "Sud"]
    );
    // An admin names his organization by one of its accounts.
    let by_account = t
        .list_teams(pb::ListTeamsRequest {
            organization_id: String::new(),
            account_code: "TT1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .teams;
    assert_eq!(by_account.len(), 4);
    let e = expect_code(
        t.list_teams(pb::ListTeamsRequest {
            organization_id: org.clone(),
            account_code: "TT1".into(),
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["organization_id"]);
    // Siblings are unique whatever the case; names are checked.
    expect_code(create(&mut t, &org, "", "nord").await, Code::AlreadyExists);
    for bad in ["", "a/b", "a;b", "x\u{0}y"] {
        let e = expect_code(create(&mut t, &org, "", bad).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&e), ["name"], "{bad:?}");
    }
    // Another tenant's admin and a plain user see nothing of it.
    let mut other = teams(&app, &other_key).await;
    expect_code(create(&mut other, &org, "", "Intrus").await, Code::NotFound);
    expect_code(
        other
            .list_teams(pb::ListTeamsRequest {
                organization_id: String::new(),
                account_code: "TT1".into(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(move_to(&mut other, &sud.id, "").await, Code::NotFound);
    expect_code(
        other
            .list_teams(pb::ListTeamsRequest {
                organization_id: org.clone(),
                account_code: String::new(),
            })
            .await,
        Code::NotFound,
    );
    let mut p = teams(&app, &plain_key).await;
    expect_code(create(&mut p, &org, "", "Moi").await, Code::NotFound);
    // A parent of another organization is refused.
    let elsewhere = create(&mut other, &other_org, "", "Ailleurs")
        .await
        .unwrap();
    let mut op_teams = teams(&app, &app.operator_key).await;
    expect_code(
        create(&mut op_teams, &org, &elsewhere.id, "X").await,
        Code::InvalidArgument,
    );

    // No cycle: not under itself, not under one of its sub-teams, at any
    // depth; the tree is as it was.
    let before = paths(&mut t, &org).await;
    for under in [&nord.id, &atelier.id, &poste.id] {
        let e = expect_code(
            move_to(&mut t, &nord.id, under).await,
            Code::FailedPrecondition,
        );
        assert!(e.message().contains("sub-teams"), "{}", e.message());
    }
    assert_eq!(paths(&mut t, &org).await, before);
    // A move elsewhere is fine, and so is a rename.
    let moved = move_to(&mut t, &atelier.id, &sud.id).await.unwrap();
    assert_eq!(moved.path, "Sud/Atelier 7");
    let renamed = t
        .update_team(pb::UpdateTeamRequest {
            team_id: sud.id.clone(),
            name: "Sud-Est".into(),
            parent_id: String::new(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.path, "Sud-Est");
    assert_eq!(
        paths(&mut t, &org).await,
        [
            "Nord",
            "Sud-Est",
            "Sud-Est/Atelier 7",
            "Sud-Est/Atelier 7/Poste 1"
        ]
    );
    // At most 20 levels, by creation or by a move.
    let mut parent = create(&mut t, &org, "", "Profond").await.unwrap();
    for level in 2..=20 {
        parent = create(&mut t, &org, &parent.id, &format!("N{level}"))
            .await
            .unwrap();
    }
    assert_eq!(parent.path.split('/').count(), 20);
    let e = expect_code(
        create(&mut t, &org, &parent.id, "N21").await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("20 levels"), "{}", e.message());
    let e = expect_code(
        move_to(&mut t, &sud.id, &parent.id).await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("20 levels"), "{}", e.message());
    // An unknown organization, an unknown parent.
    expect_code(
        create(&mut op_teams, &uuid::Uuid::new_v4().to_string(), "", "X").await,
        Code::NotFound,
    );
    let e = expect_code(
        create(&mut t, &org, &uuid::Uuid::new_v4().to_string(), "X").await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["parent_id"]);
    // Back to the root with an empty parent.
    assert_eq!(
        move_to(&mut t, &poste.id, "").await.unwrap().path,
        "Poste 1"
    );

    // Members: users the admin manages, linked to the organization.
    let added = add(&mut t, &nord.id, &[&member.id]).await.unwrap();
    assert_eq!((added.changed, added.team.unwrap().member_count), (1, 1));
    assert_eq!(
        add(&mut t, &nord.id, &[&member.id]).await.unwrap().changed,
        0
    );
    let e = expect_code(add(&mut t, &nord.id, &[&stranger.id]).await, Code::NotFound);
    assert!(e.message().contains("user_ids[0]"), "{}", e.message());
    // Even the operator cannot put a user of another organization in.
    let e = expect_code(
        add(&mut op_teams, &nord.id, &[&stranger.id]).await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("organization"), "{}", e.message());
    // An archived user joins nothing.
    let (gone, _) = create_user(&mut ops, standard("Gus", "Gone"), "TT1", &[], vec![])
        .await
        .unwrap();
    ops.users
        .archive_user(pb::ArchiveUserRequest {
            id: gone.id.clone(),
        })
        .await
        .unwrap();
    let e = expect_code(
        add(&mut t, &nord.id, &[&gone.id]).await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("archived"), "{}", e.message());
    // All or none.
    expect_code(
        add(&mut t, &sud.id, &[&plain.id, &stranger.id]).await,
        Code::NotFound,
    );
    assert_eq!(
        t.list_teams(pb::ListTeamsRequest {
            organization_id: org.clone(),
            account_code: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .teams
        .iter()
        .find(|x| x.id == sud.id)
        .unwrap()
        .member_count,
        0
    );

    // Delete: only an empty team without sub-teams.
    let e = expect_code(
        t.delete_team(pb::DeleteTeamRequest {
            team_id: nord.id.clone(),
        })
        .await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("members"), "{}", e.message());
    let e = expect_code(
        t.delete_team(pb::DeleteTeamRequest {
            team_id: sud.id.clone(),
        })
        .await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("sub-teams"), "{}", e.message());
    t.delete_team(pb::DeleteTeamRequest {
        team_id: poste.id.clone(),
    })
    .await
    .unwrap();

    // A user unlinked from the organization's last account leaves its
    // teams, whatever path unlinked him.
    let mut ops2 = app.operator().await;
    let (adv, _) = create_user(
        &mut ops2,
        advanced("Ada", "Adv", "ada.teams@example.com"),
        "TT1",
        &[],
        vec![],
    )
    .await
    .unwrap();
    add(&mut t, &nord.id, &[&adv.id]).await.unwrap();
    ops2.links
        .unlink_user(pb::UnlinkUserRequest {
            user_id: adv.id.clone(),
            account_code: "TT1".into(),
        })
        .await
        .unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM team_members WHERE user_id = $1::uuid")
            .bind(&adv.id)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(left, 0);

    // Every change is in the audit trail.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT action FROM audit_events WHERE action LIKE 'team%' ORDER BY 1",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "team_created",
            "team_deleted",
            "team_member_added",
            "team_member_removed",
            "team_updated"
        ]
    );
}

#[tokio::test]
async fn team_filters_include_subteams_only_when_asked_and_deactivate_exactly_what_the_actor_may() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Org Filters").await;
    create_account(&mut ops.accounts, &org, "TF1").await;
    create_account(&mut ops.accounts, &org, "TF2").await;
    let (admin, admin_key) = make_admin(&app, "TF1", "Fred", vec![]).await;
    let mk = |first: &'static str, account: &'static str| {
        let app = &app;
        async move {
            let mut ops = app.operator().await;
            create_user(&mut ops, standard(first, "Filtre"), account, &[], vec![])
                .await
                .unwrap()
                .0
        }
    };
    let u_nord = mk("Una", "TF1").await;
    let u_atelier = mk("Ugo", "TF1").await;
    let u_sud = mk("Ursule", "TF1").await;
    let u_off = mk("Uriel", "TF1").await;
    let u_other = mk("Ulysse", "TF2").await; // linked to TF2 only: Fred does not see him
                                             // An advanced user on both accounts: Fred administers only TF1.
    let (u_both, _) = create_user(
        &mut ops,
        advanced("Ulla", "Both", "ulla.both@example.com"),
        "TF1",
        &[],
        vec![],
    )
    .await
    .unwrap();
    ops.links
        .link_user(pb::LinkUserRequest {
            user_key: u_both.user_key.clone(),
            account_code: "TF2".into(),
            tags: vec![],
            rights: vec![],
        })
        .await
        .unwrap();
    ops.users
        .deactivate_user(pb::DeactivateUserRequest {
            id: u_off.id.clone(),
        })
        .await
        .unwrap();

    let mut op_teams = teams(&app, &app.operator_key).await;
    let nord = create(&mut op_teams, &org, "", "Nord").await.unwrap();
    let atelier = create(&mut op_teams, &org, &nord.id, "Atelier 7")
        .await
        .unwrap();
    let sud = create(&mut op_teams, &org, "", "Sud").await.unwrap();
    add(
        &mut op_teams,
        &nord.id,
        &[&u_nord.id, &u_off.id, &u_other.id, &admin.id],
    )
    .await
    .unwrap();
    add(&mut op_teams, &atelier.id, &[&u_atelier.id, &u_both.id])
        .await
        .unwrap();
    add(&mut op_teams, &sud.id, &[&u_sud.id]).await.unwrap();

    let mut fred = app.client(&admin_key).await;
    let list = |team: Option<pb::TeamFilter>| {
        let mut users = fred.users.clone();
        async move {
            let mut ids: Vec<String> = users
                .list_users(pb::ListUsersRequest {
                    account_code: "TF1".into(),
                    team,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .users
                .into_iter()
                .map(|u| u.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut v: Vec<&str>| {
        v.sort();
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // Sub-teams only when asked; by path (any case) or by id.
    assert_eq!(
        list(filter("Nord", false)).await,
        sorted(vec![&u_nord.id, &u_off.id, &admin.id])
    );
    assert_eq!(
        list(filter("nord", true)).await,
        sorted(vec![
            &u_nord.id,
            &u_off.id,
            &admin.id,
            &u_atelier.id,
            &u_both.id
        ])
    );
    assert_eq!(
        list(filter("NORD/atelier 7", false)).await,
        sorted(vec![&u_atelier.id, &u_both.id])
    );
    assert_eq!(list(filter(&sud.id, true)).await, sorted(vec![&u_sud.id]));
    let e = expect_code(
        fred.users
            .list_users(pb::ListUsersRequest {
                account_code: "TF1".into(),
                team: filter("Nord/Nulle part", false),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    assert!(e.message().contains("Nord/Nulle part"), "{}", e.message());
    let e = expect_code(
        fred.users
            .list_users(pb::ListUsersRequest {
                account_code: "TF1".into(),
                team: filter("a//b", false),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["team.team"]);

    // The export of a team: its members' rows only.
    let mut exporter = pb::export_service_client::ExportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&admin_key)),
    );
    let mut s = exporter
        .export_users(pb::ExportUsersRequest {
            of: Some(pb::export_users_request::Of::AccountCode("TF1".into())),
            dialect: 0,
            team: filter("Nord/Atelier 7", false),
        })
        .await
        .unwrap()
        .into_inner();
    let mut data = Vec::new();
    while let Some(ch) = s.message().await.unwrap() {
        data.extend(ch.data);
    }
    let text = String::from_utf8(data).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().next().unwrap().contains(",ROLES,EQUIPES,"),
        "{text}"
    );
    assert!(text.contains("Nord/Atelier 7"), "{text}");

    // Deactivating the team with its sub-teams: exactly the members Fred may
    // deactivate. Ulla (also on TF2) and Uriel (already deactivated) are
    // left, saying why; Fred himself too; Ulysse (whom Fred cannot see) is
    // not part of it; Ursule (Sud) is untouched.
    let before_other = status_of(&app, &u_other.id).await;
    let r = fred
        .users
        .deactivate_users(pb::DeactivateUsersRequest {
            user_ids: vec![],
            team: Some(pb::TeamFilter {
                team: "Nord".into(),
                include_subteams: true,
                organization_id: org.clone(),
                account_code: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut done: Vec<String> = r.users.iter().map(|u| u.id.clone()).collect();
    done.sort();
    assert_eq!(done, sorted(vec![&u_nord.id, &u_atelier.id]));
    let mut skipped: Vec<(String, String)> = r
        .skipped
        .iter()
        .map(|s| (s.user_id.clone(), s.reason.clone()))
        .collect();
    skipped.sort();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    let reason = |id: &str| &skipped.iter().find(|(u, _)| u == id).unwrap().1;
    assert!(reason(&u_both.id).contains("TF2"), "{skipped:?}");
    assert!(
        reason(&u_off.id).contains("already deactivated"),
        "{skipped:?}"
    );
    assert!(reason(&admin.id).contains("own status"), "{skipped:?}");
    for (id, status) in [
        (&u_nord.id, "deactivated"),
        (&u_atelier.id, "deactivated"),
        (&u_both.id, "active"),
        (&u_sud.id, "active"),
        (&admin.id, "active"),
    ] {
        assert_eq!(status_of(&app, id).await, status, "{id}");
    }
    assert_eq!(status_of(&app, &u_other.id).await, before_other);
    // Both ways at once, or a path without organization, are refused.
    expect_code(
        fred.users
            .deactivate_users(pb::DeactivateUsersRequest {
                user_ids: vec![u_sud.id.clone()],
                team: filter("Sud", false),
            })
            .await,
        Code::InvalidArgument,
    );
    let e = expect_code(
        fred.users
            .deactivate_users(pb::DeactivateUsersRequest {
                user_ids: vec![],
                team: filter("Sud", false),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["team.organization_id"]);
    // Another tenant's admin cannot deactivate this organization's team.
    org_with_account(&app, "Org Outside", "TF9").await;
    let (_, out_key) = make_admin(&app, "TF9", "Oscar", vec![]).await;
    let mut out = app.client(&out_key).await;
    expect_code(
        out.users
            .deactivate_users(pb::DeactivateUsersRequest {
                user_ids: vec![],
                team: filter(&sud.id, false),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(status_of(&app, &u_sud.id).await, "active");

    // The same from the command line: `clef deactivate --team`, and `clef
    // export --team`.
    let endpoint = format!("http://{}", app.addr);
    let out = clef(&["deactivate", "--team", "sud", "--account", "TF1"])
        .env("CLEF_ENDPOINT", &endpoint)
        .env("CLEF_KEY", &admin_key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("deactivated\t{}", u_sud.id)),
        "{stdout}"
    );
    assert_eq!(status_of(&app, &u_sud.id).await, "deactivated");
    let out = clef(&["export", "--account", "TF1", "--team", "Nord", "--subteams"])
        .env("CLEF_ENDPOINT", &endpoint)
        .env("CLEF_KEY", &admin_key)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
}

#[tokio::test]
async fn import_and_export_carry_roles_and_teams_and_the_round_trip_is_unchanged() {
    let app = spawn_app().await;
    let org = org_with_account(&app, "Org Import Teams", "TI1").await;
    // An admin holding every right of fleet and it (not accounting).
    let (_, admin_key) = make_admin(
        &app,
        "TI1",
        "Ines",
        vec![
            right("delivery.pickup_point_ws"),
            right("shipping.ui"),
            right("shipping.ws"),
            right("tracking.ws"),
            scoped("tracking.tool", pb::Scope::Consolidated),
            scoped("tracking.tool_cs", pb::Scope::Consolidated),
        ],
    )
    .await;
    let file = "NOM,PRENOM,IDENTIFIANT,TYPE,ROLES,EQUIPES\n\
                Rôle,Un,role.un,standard,fleet, Nord/Atelier 7 ; Sud\n\
                Rôle,Deux,role.deux,standard,Gestion de la flotte; Informatique,nord/atelier 7\n\
                Rôle,Trois,role.trois,standard,,\n";
    let run = import(&app, &admin_key, opts("TI1"), file.as_bytes(), 7).await;
    assert_eq!(
        run.statuses(),
        [(2, "created"), (3, "created"), (4, "created")],
        "{:?}",
        run.results
    );
    // The teams were created once, at their paths; the roles are held.
    let mut t = teams(&app, &admin_key).await;
    assert_eq!(paths(&mut t, &org).await, ["Nord", "Nord/Atelier 7", "Sud"]);
    let held: Vec<(String, String)> = sqlx::query_as(
        "SELECT u.login, r.code FROM role_grants g JOIN users u ON u.id = g.user_id
           JOIN roles r ON r.id = g.role_id ORDER BY 1, 2",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        held,
        [
            ("role.deux".to_owned(), "fleet".to_owned()),
            ("role.deux".into(), "it".into()),
            ("role.un".into(), "fleet".into())
        ]
    );
    // The same file again: unchanged everywhere.
    let run = import(&app, &admin_key, opts("TI1"), file.as_bytes(), 1000).await;
    assert!(
        run.results.iter().all(|r| r.status_name() == "unchanged"),
        "{:?}",
        run.results
    );

    // Refusals: a role the admin cannot delegate (accounting), an unknown
    // role, a bad path; nothing written for them.
    let bad = "NOM,PRENOM,IDENTIFIANT,TYPE,ROLES,EQUIPES\n\
               Rôle,Un,role.un,standard,fleet; accounting,Sud\n\
               Rôle,Deux,role.deux,standard,pilote,\n\
               Rôle,Trois,role.trois,standard,,a//b\n";
    let before = role_and_team_rows(&app).await;
    let run = import(&app, &admin_key, opts("TI1"), bad.as_bytes(), 1000).await;
    assert_eq!(
        run.statuses(),
        [
            (2, "right_not_held"),
            (3, "invalid_choice"),
            (4, "invalid_user_data")
        ]
    );
    assert!(
        run.results[0].message.contains("role accounting"),
        "{:?}",
        run.results[0]
    );
    assert!(
        run.results[1].message.contains("pilote"),
        "{:?}",
        run.results[1]
    );
    assert_eq!(role_and_team_rows(&app).await, before);
    // A dry run that would create a team creates none.
    let dry = "NOM,PRENOM,IDENTIFIANT,TYPE,EQUIPES\nRôle,Trois,role.trois,standard,Est\n";
    let run = import(
        &app,
        &admin_key,
        pb::ImportOptions {
            dry_run: true,
            ..opts("TI1")
        },
        dry.as_bytes(),
        1000,
    )
    .await;
    assert_eq!(run.statuses(), [(2, "updated")]);
    assert_eq!(paths(&mut t, &org).await, ["Nord", "Nord/Atelier 7", "Sud"]);

    // Taking a role and a team away: only those go.
    let less = "NOM,PRENOM,IDENTIFIANT,TYPE,ROLES,EQUIPES\n\
                Rôle,Deux,role.deux,standard,it,\n";
    let run = import(&app, &admin_key, opts("TI1"), less.as_bytes(), 1000).await;
    assert_eq!(run.statuses(), [(2, "updated")]);
    let deux: Vec<String> = sqlx::query_scalar(
        "SELECT r.code FROM role_grants g JOIN users u ON u.id = g.user_id JOIN roles r ON r.id = g.role_id
          WHERE u.login = 'role.deux'",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(deux, ["it"]);

    // Export, then the export re-imported in sync mode: all unchanged.
    for dialect in [pb::CsvDialect::Rfc4180, pb::CsvDialect::Excel] {
        let mut c = pb::export_service_client::ExportServiceClient::with_interceptor(
            app.channel().await,
            Bearer::new(Some(&admin_key)),
        );
        let mut s = c
            .export_users(pb::ExportUsersRequest {
                of: Some(pb::export_users_request::Of::AccountCode("TI1".into())),
                dialect: dialect as i32,
                team: None,
            })
            .await
            .unwrap()
            .into_inner();
        let mut csv = Vec::new();
        while let Some(ch) = s.message().await.unwrap() {
            csv.extend(ch.data);
        }
        let text = String::from_utf8_lossy(&csv).into_owned();
        assert!(text.contains("Nord/Atelier 7; Sud"), "{text}");
        let run = import(
            &app,
            &admin_key,
            pb::ImportOptions {
                mode: pb::ImportMode::Sync as i32,
                ..opts("TI1")
            },
            &csv,
            64,
        )
        .await;
        assert!(run.error.is_none(), "{:?}", run.error);
        assert!(
            run.results.iter().all(|r| r.status_name() == "unchanged"),
            "{dialect:?}: {:?}\n{text}",
            run.results
        );
    }
}

async fn role_and_team_rows(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'g' || row_to_json(t)::text FROM (SELECT user_id, role_id FROM role_grants ORDER BY 1, 2) t
         UNION ALL SELECT 'm' || row_to_json(t)::text FROM (SELECT team_id, user_id FROM team_members ORDER BY 1, 2) t
         UNION ALL SELECT 't' || row_to_json(t)::text FROM (SELECT id, name FROM teams ORDER BY 1) t",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}
