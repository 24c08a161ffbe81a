//! Import files at the edges: control characters in cells, huge lines and
//! unclosed quotes against a real `clef serve` process (its peak memory),
//! line endings, files that are not CSV text, `max_failed_lines`.

use std::time::Instant;

use clef::pb;
use tonic::Code;

use crate::{
    common::*,
    embedded::{serve_fresh, terminate, wait_serving},
    import::{assert_exactly_reported_committed, import, import_on, opts, report},
};

const ADV_HEADER: &str =
    "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;shipping.ws";

fn adv_line(last: &str, email: &str, ship: &str) -> String {
    format!("{last};Zoé;Cariste;{email};0102030405;1 rue A;88000;Épinal;{ship}")
}

async fn emails(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT email FROM users WHERE email IS NOT NULL ORDER BY email")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_nul_in_a_cell_fails_its_line_on_its_column_and_only_that_line() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "NUL1").await;
    let op = app.operator_key.clone();
    let file = [
        ADV_HEADER.to_owned(),
        adv_line("Un", "un@example.com", "non"),
        adv_line("Deux", "deux\0@example.com", "non"),
        adv_line("Trois", "trois@example.com", "oui"),
    ]
    .join("\n");
    let run = import(&app, &op, opts("NUL1"), file.as_bytes(), 16).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.statuses(),
        [(2, "created"), (3, "invalid_user_data"), (4, "created")]
    );
    // The column as the header writes it.
    assert_eq!(run.results[1].column, "EMAIL");
    assert!(
        run.results[1].message.contains("U+0000"),
        "{}",
        run.results[1].message
    );
    assert_eq!(emails(&app).await, ["trois@example.com", "un@example.com"]);

    // A right cell holding a NUL: the line fails on the right's column and
    // no grant is written (the user exists: he is not changed either).
    let before = snapshot(&app).await;
    let file = [
        ADV_HEADER.to_owned(),
        adv_line("Un", "un@example.com", "ou\0i"),
    ]
    .join("\r\n");
    let run = import(&app, &op, opts("NUL1"), file.as_bytes(), 1000).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.statuses(), [(2, "invalid_user_data")]);
    assert_eq!(run.results[0].column, "shipping.ws");
    let grants: Vec<String> = sqlx::query_scalar(
        "SELECT u.email FROM grants g JOIN users u ON u.id = g.user_id
          WHERE g.right_code = 'shipping.ws' ORDER BY 1",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        grants,
        ["trois@example.com"],
        "only line 4 of the first file"
    );
    assert_eq!(
        snapshot(&app).await,
        before,
        "the failed line wrote something"
    );
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM in /proc/PID/status")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// `head`, then `total` bytes of `pattern` repeated, then `tail`, made one
/// chunk at a time as the call takes them.
fn generated(
    head: &'static [u8],
    pattern: &'static [u8],
    total: usize,
    tail: &'static [u8],
) -> impl tokio_stream::Stream<Item = Vec<u8>> + Send + 'static {
    const CHUNK: usize = 1024 * 1024;
    let body = (0..total.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(total - i * CHUNK);
        pattern.iter().copied().cycle().take(len).collect()
    });
    tokio_stream::iter(
        std::iter::once(head.to_vec())
            .chain(body)
            .chain(std::iter::once(tail.to_vec())),
    )
}

/// The size of the huge lines below (see the test).
const HUGE: usize = 150 * 1024 * 1024;

#[tokio::test]
async fn a_150_mb_line_and_an_unclosed_quote_are_line_errors_in_bounded_memory() {
    let served = serve_fresh(&[]).await;
    wait_serving(served.addr).await;
    let pid = served.child.id().unwrap();
    let channel = connect(served.addr).await;
    let mut accounts = pb::account_service_client::AccountServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(Some(&served.key)),
    );
    let org = create_org(&mut accounts, "Huge").await;
    create_account(&mut accounts, &org, "HUGE1").await;
    let idle = peak_rss(pid);

    // One 150 MB line between two good ones.
    let started = Instant::now();
    let run = import_on(
        channel.clone(),
        &served.key,
        opts("HUGE1"),
        generated(
            b"NOM,PRENOM,IDENTIFIANT,TYPE\nAvant,Ana,avant,standard\nBig,",
            b"x",
            HUGE,
            b",big,standard\nApres,Ana,apres,standard\n",
        ),
    )
    .await;
    let one_line = started.elapsed();
    let peak = peak_rss(pid);
    assert!(peak < 200 << 20, "peak RSS {} MB", peak >> 20);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.statuses(),
        [(2, "created"), (3, "invalid_user_data"), (4, "created")]
    );
    assert_eq!(run.results[1].column, "line");
    assert!(run.summary.is_some());

    // An opening quote never closed, then 150 MB of lines: the rest of the
    // file is one record, too long.
    let started = Instant::now();
    let run = import_on(
        channel.clone(),
        &served.key,
        opts("HUGE1"),
        generated(
            b"NOM,PRENOM,IDENTIFIANT,TYPE\nQuote,Ana,quote,standard\n\"",
            b"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy,yyyyyyyyyyyyyyyyyyyy\n",
            HUGE,
            b"",
        ),
    )
    .await;
    let quote = started.elapsed();
    let peak = peak_rss(pid);
    assert!(peak < 200 << 20, "peak RSS {} MB", peak >> 20);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.statuses(), [(2, "created"), (3, "invalid_user_data")]);
    assert_eq!(run.results[1].column, "line");

    // Still serving, and never near 200 MB.
    wait_serving(served.addr).await;
    accounts
        .get_account(pb::GetAccountRequest {
            code: "HUGE1".into(),
        })
        .await
        .expect("the server still answers");
    let peak = peak_rss(pid);
    eprintln!(
        "peak RSS {} MB (idle {} MB); 150 MB line in {one_line:?}, unclosed quote in {quote:?}",
        peak >> 20,
        idle >> 20
    );
    assert!(peak < 200 << 20, "peak RSS {} MB", peak >> 20);
    let status = terminate(served.child).await;
    assert!(status.success(), "clef exited with {status}");
}

/// Header + 5 data lines, Windows-1252, ending each line with `eol`.
fn cp1252_file(eol: &[u8]) -> Vec<u8> {
    let lines: [&[u8]; 6] = [
        b"NOM;PRENOM;IDENTIFIANT;TYPE",
        b"L\xE9on;Ir\xE8ne;irene;standard",
        b"B\xE9c;Zo\xE9;zoe;standard",
        b";Sans;sans;standard",
        b"Caf\xE9;No\xEBl;noel;standard",
        b"Dup;Ana;irene;standard",
    ];
    let mut file = Vec::new();
    for l in lines {
        file.extend_from_slice(l);
        file.extend_from_slice(eol);
    }
    file
}

#[tokio::test]
async fn crlf_and_lone_cr_files_name_their_physical_lines_in_results_and_report() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "EOL1").await;
    let op = app.operator_key.clone();
    for (eol, first) in [(&b"\r\n"[..], "created"), (&b"\r"[..], "unchanged")] {
        let run = import(&app, &op, opts("EOL1"), &cp1252_file(eol), 7).await;
        assert!(run.error.is_none(), "{eol:?}: {:?}", run.error);
        assert_eq!(
            run.statuses(),
            [
                (2, first),
                (3, first),
                (4, "invalid_user_data"),
                (5, first),
                (6, "duplicate_in_file")
            ],
            "line endings {eol:?}"
        );
        assert_eq!(run.results[2].column, "last_name");
        let (_, csv) = report(&app, &op, "EOL1").await.unwrap();
        let reported: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(reported, ["2", "3", "4", "5", "6"], "{eol:?}: {csv}");
    }
    let name: String = sqlx::query_scalar("SELECT last_name FROM users WHERE login = 'noel'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(name, "Café");
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[tokio::test]
async fn tabs_import_and_utf16_or_binary_files_are_refused_whole_in_one_short_message() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "TXT1").await;
    org_with_account(&app, "Other", "TXT2").await;
    let op = app.operator_key.clone();
    let tsv = "NOM\tPRENOM\tIDENTIFIANT\tTYPE\nTab\tUlation\ttabu\tstandard\n";
    let run = import(&app, &op, opts("TXT1"), tsv.as_bytes(), 5).await;
    assert_eq!(run.statuses(), [(2, "created")], "{:?}", run.error);

    let text = "NOM;PRENOM;IDENTIFIANT;TYPE\r\nLéon;Irène;irene16;standard\r\n";
    let mut with_bom = b"\xFF\xFE".to_vec();
    with_bom.extend(utf16le(text));
    let mut big_endian = b"\xFE\xFF".to_vec();
    big_endian.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    // A spreadsheet saved as .xlsx instead of CSV: a zip.
    let mut xlsx = b"PK\x03\x04\x14\x00\x06\x00\x08\x00".to_vec();
    let mut x: u32 = 2463534242;
    xlsx.extend((0..8192).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    let before = snapshot(&app).await;
    for (what, file, utf16) in [
        ("UTF-16 LE with BOM", with_bom, true),
        ("UTF-16 LE without BOM", utf16le(text), true),
        ("UTF-16 BE with BOM", big_endian, true),
        ("binary", xlsx, false),
    ] {
        for chunk in [3, 256 * 1024] {
            let run = import(&app, &op, opts("TXT2"), &file, chunk).await;
            let e = run.error.unwrap_or_else(|| panic!("{what}: accepted"));
            assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
            assert_eq!(violated_fields(&e), ["file"], "{what}");
            assert!(run.results.is_empty(), "{what}");
            let msg = e.message();
            assert!(msg.len() < 300, "{what}: {} chars: {msg}", msg.len());
            if utf16 {
                assert!(msg.contains("UTF-16") && msg.contains("UTF-8"), "{msg}");
            } else {
                assert!(!msg.contains("UTF-16"), "{msg}");
            }
        }
    }
    // Refused whole: no line, no report, nothing written.
    expect_code(report(&app, &op, "TXT2").await, Code::NotFound);
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn max_failed_lines_stops_the_import_and_keeps_the_lines_reported_before() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "MAX1").await;
    let op = app.operator_key.clone();
    // A batch and 700 lines more, every tenth one without a last name.
    let lines = clef::service::import::BATCH + 700;
    let mut file = String::from("NOM,PRENOM,IDENTIFIANT,TYPE\n");
    for line in 2..lines + 2 {
        let last = if line % 10 == 0 { "" } else { "Max" };
        file.push_str(&format!("{last},Ana,mf{line},standard\n"));
    }
    let run = import(
        &app,
        &op,
        pb::ImportOptions {
            max_failed_lines: 5,
            ..opts("MAX1")
        },
        file.as_bytes(),
        4096,
    )
    .await;
    let e = run.error.clone().expect("stopped");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("max_failed_lines 5"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("committed"), "{}", e.message());
    assert!(run.summary.is_none());
    // It stops with the batch that reached the limit: the lines after it
    // are never read.
    let failed = run
        .results
        .iter()
        .filter(|r| r.status_name() == "invalid_user_data")
        .count();
    assert!(failed >= 5, "{failed} failed lines reported");
    assert!(
        run.results.len() <= clef::service::import::BATCH,
        "{} lines reported",
        run.results.len()
    );
    let created = run.users_with("created");
    assert!(!created.is_empty());
    assert_exactly_reported_committed(&app, "mf", &created).await;

    // Without the option the same file runs to its end.
    let run = import(&app, &op, opts("MAX1"), file.as_bytes(), 4096).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.results.len(), lines);
}
