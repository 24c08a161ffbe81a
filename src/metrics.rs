//! Prometheus metrics (`prometheus-client`), served on a listener of their
//! own (`--metrics-listen`, off by default; never the gRPC port).
//!
//! Counted as things happen (atomics; the hot path pays a label lookup per
//! RPC and per decision): RPCs by method and code with their latency,
//! decisions by outcome and source, decision-cache hits and misses, import
//! lines by status and imports running. Read at each scrape: cache sizes,
//! the change feed's state and lag, the revision seen against the one
//! committed, the outbox's backlog, the pool, Postgres's reachability, the
//! process's CPU time.

use std::sync::{atomic::AtomicU64, OnceLock};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric clef exports.
pub struct Metrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    cache_lookups: Family<ResultLabels, Counter>,
    import_lines: Family<StatusLabels, Counter>,
    imports_running: Gauge,
    cache_entries: Family<CacheLabels, Gauge>,
    cache_weight: Gauge,
    feed_serving: Gauge,
    feed_proof_age: Gauge<f64, AtomicU64>,
    revision_seen: Gauge,
    revision_committed: Gauge,
    outbox: Family<StateLabels, Gauge>,
    pool: Family<StateLabels, Gauge>,
    postgres_up: Gauge,
    db_begin: Histogram,
    hot: Hot,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("clef");
        let (decisions, cache_lookups) = (Family::default(), Family::default());
        let m = Metrics {
            hot: Hot::of(&decisions, &cache_lookups),
            rpcs: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            decisions,
            cache_lookups,
            import_lines: Family::default(),
            imports_running: Gauge::default(),
            cache_entries: Family::default(),
            cache_weight: Gauge::default(),
            feed_serving: Gauge::default(),
            feed_proof_age: Gauge::default(),
            revision_seen: Gauge::default(),
            revision_committed: Gauge::default(),
            outbox: Family::default(),
            pool: Family::default(),
            postgres_up: Gauge::default(),
            // 100 µs to ~3 s.
            db_begin: Histogram::new(exponential_buckets(0.000_1, 2.0, 15)),
            registry: Registry::default(),
        };
        // Every status shown from the start (at 0), so that rates exist
        // before the first import.
        for status in crate::domain::import::LineStatus::ALL {
            let _ = m.import_lines.get_or_create(&StatusLabels {
                status: status.as_str(),
            });
        }
        let r = &mut registry;
        r.register(
            "rpc_requests",
            "RPCs answered, by method and gRPC code",
            m.rpcs.clone(),
        );
        r.register(
            "rpc_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method",
            m.latency.clone(),
        );
        r.register(
            "decisions",
            "Decisions (Check, CheckBatch, CheckParcelVisibility) by outcome and by where the subject came from (memory, postgres)",
            m.decisions.clone(),
        );
        r.register(
            "decision_cache_lookups",
            "Subject lookups of the decision engine: hit (memory) or miss (Postgres)",
            m.cache_lookups.clone(),
        );
        r.register(
            "import_lines",
            "Import lines processed, by status",
            m.import_lines.clone(),
        );
        r.register(
            "imports_running",
            "Imports running on this replica",
            m.imports_running.clone(),
        );
        r.register(
            "decision_cache_entries",
            "Entries of the decision caches",
            m.cache_entries.clone(),
        );
        r.register(
            "decision_cache_weight",
            "Weight of the subjects cache (bounded by the engine's weight capacity)",
            m.cache_weight.clone(),
        );
        r.register(
            "change_feed_serving",
            "1 while decisions are answered from memory (listener up, feed proven within the bound)",
            m.feed_serving.clone(),
        );
        r.register(
            "change_feed_proof_age_seconds",
            "Age of the change feed's last proof of life",
            m.feed_proof_age.clone(),
        );
        r.register(
            "revision_seen",
            "Highest revision this replica has applied",
            m.revision_seen.clone(),
        );
        r.register(
            "revision_committed",
            "Last revision committed in Postgres",
            m.revision_committed.clone(),
        );
        r.register(
            "outbox_messages",
            "Messages to users by state (pending, parked)",
            m.outbox.clone(),
        );
        r.register(
            "db_pool_connections",
            "Postgres pool connections by state (in_use, idle)",
            m.pool.clone(),
        );
        r.register(
            "postgres_up",
            "1 when the last health probe reached Postgres",
            m.postgres_up.clone(),
        );
        r.register(
            "db_begin_seconds",
            "Time to get a pooled connection and begin a transaction (waits for the pool show here)",
            m.db_begin.clone(),
        );
        r.register_collector(Box::new(ProcessCpu));
        Metrics { registry, ..m }
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The methods clef serves (`package.Service/Method`), from the descriptor
/// sets reflection serves: a label takes one of them or `unknown`, so that
/// requests to made-up paths cannot grow the series without bound.
fn served() -> &'static std::collections::HashSet<String> {
    static KNOWN: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        use prost::Message;
        let mut names = std::collections::HashSet::new();
        for set in [
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    for m in service.method {
                        names.insert(format!(
                            "{package}.{service_name}/{}",
                            m.name.unwrap_or_default()
                        ));
                    }
                }
            }
        }
        for reflection in ["v1", "v1alpha"] {
            names.insert(format!(
                "grpc.reflection.{reflection}.ServerReflection/ServerReflectionInfo"
            ));
        }
        names
    })
}

/// The label of a method: itself when clef serves it, else `unknown`.
pub fn method_label(method: &str) -> &'static str {
    served().get(method).map_or("unknown", String::as_str)
}

/// Handles on the RPC series already met, by (method label, code): an RPC
/// pays a read lock and a lookup, no allocation.
type RpcHandles =
    std::sync::RwLock<std::collections::HashMap<(&'static str, i32), (Counter, Histogram)>>;

/// One RPC answered: `method` as `method_label` gives it, `code` the gRPC
/// code's number and `name` its name.
pub fn rpc(method: &'static str, code: i32, name: &str, seconds: f64) {
    static HANDLES: OnceLock<RpcHandles> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let found = handles
        .read()
        .ok()
        .and_then(|h| h.get(&(method, code)).cloned());
    let (count, latency) = match found {
        Some(h) => h,
        None => {
            let m = global();
            let h = (
                m.rpcs
                    .get_or_create(&RpcLabels {
                        method: method.to_owned(),
                        code: name.to_owned(),
                    })
                    .clone(),
                m.latency
                    .get_or_create(&MethodLabels {
                        method: method.to_owned(),
                    })
                    .clone(),
            );
            if let Ok(mut w) = handles.write() {
                w.insert((method, code), h.clone());
            }
            h
        }
    };
    count.inc();
    latency.observe(seconds);
}

/// One transaction begun, after `seconds` (waiting for a connection
/// included).
pub fn db_begin(seconds: f64) {
    global().db_begin.observe(seconds);
}

/// One decision (a counter handle per label set, made once: the hot path
/// pays an atomic add, no lookup).
pub fn decision(allowed: bool, from_memory: bool) {
    global().hot.decisions[usize::from(allowed) * 2 + usize::from(from_memory)].inc();
}

/// One subject lookup of the decision engine.
pub fn cache_lookup(hit: bool) {
    global().hot.lookups[usize::from(hit)].inc();
}

/// Handles on the decision counters, by index: decisions
/// `[denied/postgres, denied/memory, allowed/postgres, allowed/memory]`,
/// lookups `[miss, hit]`.
struct Hot {
    decisions: [Counter; 4],
    lookups: [Counter; 2],
}

impl Hot {
    fn of(
        decisions: &Family<DecisionLabels, Counter>,
        lookups: &Family<ResultLabels, Counter>,
    ) -> Self {
        let d = |outcome, source| {
            decisions
                .get_or_create(&DecisionLabels { outcome, source })
                .clone()
        };
        let l = |result| lookups.get_or_create(&ResultLabels { result }).clone();
        Hot {
            decisions: [
                d("denied", "postgres"),
                d("denied", "memory"),
                d("allowed", "postgres"),
                d("allowed", "memory"),
            ],
            lookups: [l("miss"), l("hit")],
        }
    }
}

/// Import lines of one status.
pub fn import_lines(status: &'static str, n: u64) {
    global()
        .import_lines
        .get_or_create(&StatusLabels { status })
        .inc_by(n);
}

/// Counts a running import while it lives.
pub struct ImportRunning(());

impl ImportRunning {
    pub fn start() -> Self {
        global().imports_running.inc();
        ImportRunning(())
    }
}

impl Drop for ImportRunning {
    fn drop(&mut self) {
        global().imports_running.dec();
    }
}

/// What a scrape reads besides the counters.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub cache_entries: Vec<(&'static str, i64)>,
    pub cache_weight: i64,
    pub feed_serving: bool,
    pub feed_proof_age_seconds: f64,
    pub revision_seen: i64,
    pub revision_committed: Option<i64>,
    pub outbox_pending: Option<i64>,
    pub outbox_parked: Option<i64>,
    pub pool_in_use: i64,
    pub pool_idle: i64,
    pub postgres_up: bool,
}

/// The text exposition of every metric, with `s` read at this scrape.
pub fn render(s: &Snapshot) -> String {
    let m = global();
    for (cache, n) in &s.cache_entries {
        m.cache_entries
            .get_or_create(&CacheLabels { cache })
            .set(*n);
    }
    m.cache_weight.set(s.cache_weight);
    m.feed_serving.set(i64::from(s.feed_serving));
    m.feed_proof_age.set(s.feed_proof_age_seconds);
    m.revision_seen.set(s.revision_seen);
    if let Some(r) = s.revision_committed {
        m.revision_committed.set(r);
    }
    if let Some(n) = s.outbox_pending {
        m.outbox
            .get_or_create(&StateLabels { state: "pending" })
            .set(n);
    }
    if let Some(n) = s.outbox_parked {
        m.outbox
            .get_or_create(&StateLabels { state: "parked" })
            .set(n);
    }
    m.pool
        .get_or_create(&StateLabels { state: "in_use" })
        .set(s.pool_in_use);
    m.pool
        .get_or_create(&StateLabels { state: "idle" })
        .set(s.pool_idle);
    m.postgres_up.set(i64::from(s.postgres_up));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &m.registry);
    out
}

/// `process_cpu_seconds_total`, read from the kernel at each scrape.
#[derive(Debug)]
struct ProcessCpu;

impl prometheus_client::collector::Collector for ProcessCpu {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{encoding::EncodeMetric, metrics::counter::ConstCounter};
        let Some(seconds) = cpu_seconds() else {
            return Ok(());
        };
        let counter = ConstCounter::new(seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "CPU time this process has used, user and system (what an RPC costs the server: its rate over the rate of RPCs)",
            None,
            counter.metric_type(),
        )?)
    }
}

/// The CPU time this process has used so far (user and system), in seconds.
pub fn cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(seconds(usage.user_time()) + seconds(usage.system_time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_are_labels() {
        assert_eq!(
            method_label("clef.v1.AuthorizationService/Check"),
            "clef.v1.AuthorizationService/Check"
        );
        assert_eq!(
            method_label("grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("clef.v1.AccountService/Nope"), "unknown");
        assert_eq!(method_label("x/y"), "unknown");
    }
}
