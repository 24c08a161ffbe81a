//! The decision core in process, on a warm cache: a `Check` by connection
//! key (key checksum, SHA-256, cache lookups, the rule) for subjects of a
//! generated dataset.
//!
//! Needs a database filled by `clef bench dataset` (bench/run.sh does it):
//!   CLEF_BENCH_DATABASE_URL=postgres://... CLEF_BENCH_SUBJECTS=.../subjects.tsv \
//!     cargo bench --bench decision
//! Without them it prints why and measures nothing.

use std::{hint::black_box, sync::Arc, time::Duration};

use clef::{
    authz::{Engine, EngineConfig},
    domain::{clock::Clock, key},
    store::{Store, SubjectRef},
};
use criterion::{criterion_group, criterion_main, Criterion};

struct Case {
    subject: SubjectRef,
    key: String,
    account: String,
    right: String,
}

fn decision(c: &mut Criterion) {
    let (Ok(url), Ok(subjects)) = (
        std::env::var("CLEF_BENCH_DATABASE_URL"),
        std::env::var("CLEF_BENCH_SUBJECTS"),
    ) else {
        eprintln!("decision bench skipped: set CLEF_BENCH_DATABASE_URL and CLEF_BENCH_SUBJECTS (bench/run.sh does)");
        return;
    };
    let cases: Vec<Case> = std::fs::read_to_string(&subjects)
        .expect("subjects file")
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let key = f.next()?.to_owned();
            Some(Case {
                subject: SubjectRef::Key(key::parse_presented(&key)?),
                key,
                account: f.next()?.to_owned(),
                right: f.next()?.to_owned(),
            })
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let engine: Arc<Engine> = rt.block_on(async {
        let store = Store::connect_lazy(url.parse().expect("url"), 4);
        let engine = Engine::new(store, EngineConfig::default());
        engine.spawn_listener();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Warm: every subject once through the engine.
        for case in &cases {
            let (d, _) = engine
                .check(
                    &case.subject,
                    &case.account,
                    &case.right,
                    0,
                    engine.now_micros(),
                )
                .await
                .expect("warm-up check");
            assert!(d.allowed, "dataset subjects hold their sampled right");
        }
        engine
    });
    eprintln!("warm cache: {} subjects", cases.len());

    let mut i = 0;
    c.bench_function("check_by_connection_key_warm", |b| {
        b.iter(|| {
            let case = &cases[i % cases.len()];
            i += 1;
            // What a Check does with a warm cache: the key's checksum and
            // hash, then look up and decide.
            let hash = key::parse_presented(black_box(&case.key)).expect("key");
            let d = engine
                .check_cached(
                    &SubjectRef::Key(hash),
                    &case.account,
                    &case.right,
                    Clock::system().now_micros(),
                )
                .expect("warm");
            black_box(d)
        })
    });
    let mut j = 0;
    c.bench_function("rule_only", |b| {
        b.iter(|| {
            let case = &cases[j % cases.len()];
            j += 1;
            black_box(engine.check_cached(
                &case.subject,
                &case.account,
                &case.right,
                engine.now_micros(),
            ))
        })
    });
    drop(rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = decision
}
criterion_main!(benches);
