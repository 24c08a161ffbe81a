//! `clef bench load` and `clef bench churn`: load for `bench/run.sh`.
//!
//! - `load` drives `AuthorizationService/Check` (or the health check, the
//!   transport floor) over many connections, asking about many subjects
//!   (h2load sends one body per process): the first N of `subjects.tsv`,
//!   uniformly or by a Zipf law. Requests are encoded once, before the
//!   clock starts, and sent as raw frames. Closed loop by default (each
//!   stream sends its next request when the last one is answered); with
//!   `--rate`, a fixed total rate, each stream on its own schedule
//!   (latencies from the actual send, and `sched_*` from the scheduled one,
//!   which counts the time spent behind schedule).
//!   Latencies go to an HDR histogram; with `--metrics`, the server's
//!   decision-cache hit ratio and CPU time over the measured window are
//!   read from its Prometheus endpoint, and both sides' CPU time per
//!   request is shown (what an RPC costs, whoever shares the cores).
//! - `churn` grants and takes back a spare right of the same subjects, at a
//!   fixed rate, as an administrator changing rights while decisions run.
//!
//! Both print one `key=value` line for the script.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::Message;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
    Status,
};

use super::client::Endpoint;
use crate::pb;

/// What `load` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Rpc {
    /// `clef.v1.AuthorizationService/Check` by connection key.
    Check,
    /// `grpc.health.v1.Health/Check`: the transport floor.
    Health,
}

/// How subjects are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Spread {
    /// Every subject as often as any other.
    Uniform,
    /// The k-th subject 1/k^s as often as the first (`--zipf-exponent s`).
    Zipf,
}

/// Which subjects, how they are drawn.
#[derive(Debug, Args)]
pub struct Population {
    /// `subjects.tsv` of `clef bench dataset` (connection key, account,
    /// right held, user id, a right not held).
    #[arg(long)]
    pub subjects: Option<PathBuf>,
    /// Ask about the first N subjects of the file (default: all of them).
    #[arg(long)]
    pub distinct: Option<usize>,
    #[arg(long, value_enum, default_value = "uniform")]
    pub spread: Spread,
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server, and the caller's key in CLEF_KEY (a service principal's).
    #[command(flatten)]
    pub endpoint: Endpoint,
    #[arg(long, value_enum, default_value = "check")]
    pub rpc: Rpc,
    #[command(flatten)]
    pub population: Population,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Total requests per second, spread over the streams; without it,
    /// closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measurement (connections, caches).
    #[arg(long, default_value_t = 2.0)]
    pub warm_up: f64,
    /// Before the warm-up, ask about every subject once (so that a cache
    /// that can hold them all is measured warm, not filling).
    #[arg(long)]
    pub prewarm: bool,
    /// The server's metrics URL (`http://HOST:PORT/metrics`): reports the
    /// decision cache's hit ratio and the share of decisions answered from
    /// Postgres over the measured seconds.
    #[arg(long)]
    pub metrics: Option<String>,
}

#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// The server, and an operator's key (or an admin's of the subjects'
    /// accounts) in CLEF_KEY.
    #[command(flatten)]
    pub endpoint: Endpoint,
    #[command(flatten)]
    pub population: Population,
    /// Changes per second (a grant, or taking it back).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

/// One line of `subjects.tsv`.
struct Subject {
    key: String,
    account: String,
    right: String,
    user_id: String,
    spare: String,
}

impl Population {
    fn read(&self) -> anyhow::Result<Vec<Subject>> {
        let path = self.subjects.as_ref().context("--subjects is needed")?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut subjects = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if self.distinct.is_some_and(|d| subjects.len() >= d) {
                break;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let [key, account, right, rest @ ..] = f.as_slice() else {
                anyhow::bail!("{}:{}: expected key, account, right", path.display(), n + 1);
            };
            subjects.push(Subject {
                key: key.to_string(),
                account: account.to_string(),
                right: right.to_string(),
                user_id: rest.first().unwrap_or(&"").to_string(),
                spare: rest.get(1).unwrap_or(&"").to_string(),
            });
        }
        anyhow::ensure!(!subjects.is_empty(), "no subject in {}", path.display());
        if let Some(d) = self.distinct {
            anyhow::ensure!(
                subjects.len() == d,
                "--distinct {d}: {} has {} subjects",
                path.display(),
                subjects.len()
            );
        }
        Ok(subjects)
    }

    fn picker(&self, n: usize) -> anyhow::Result<Picker> {
        Ok(match self.spread {
            Spread::Uniform => Picker::Uniform(n),
            Spread::Zipf => Picker::Zipf(
                Zipf::new(n as f64, self.zipf_exponent).context("invalid --zipf-exponent")?,
            ),
        })
    }

    fn describe(&self, n: usize) -> String {
        match self.spread {
            Spread::Uniform => format!("subjects={n} spread=uniform"),
            Spread::Zipf => format!("subjects={n} spread=zipf({})", self.zipf_exponent),
        }
    }
}

#[derive(Clone)]
enum Picker {
    Uniform(usize),
    Zipf(Zipf<f64>),
}

impl Picker {
    fn pick(&self, rng: &mut SmallRng) -> usize {
        match self {
            Picker::Uniform(n) => rng.random_range(0..*n),
            // 1..=n, the most asked first.
            Picker::Zipf(z) => (z.sample(rng) as usize).saturating_sub(1),
        }
    }
}

/// What every stream shares.
struct Plan {
    target: Arc<Target>,
    picker: Picker,
    rpc: Rpc,
    /// Per stream, when a rate is set.
    period: Option<Duration>,
    measure_from: Instant,
    end: Instant,
}

/// What every request carries: one of the frames, to the RPC's path, with
/// the caller's key.
struct Target {
    frames: Vec<Bytes>,
    path: PathAndQuery,
    bearer: Option<MetadataValue<Ascii>>,
}

impl Target {
    /// Sends frame `i` once the connection can take it.
    async fn send(
        &self,
        grpc: &mut tonic::client::Grpc<Channel>,
        i: usize,
    ) -> anyhow::Result<Result<tonic::Response<Bytes>, Status>> {
        let mut request = tonic::Request::new(self.frames[i].clone());
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        grpc.ready().await.context("connection lost")?;
        Ok(grpc.unary(request, self.path.clone(), Raw).await)
    }
}

/// What one stream saw in the measured window.
struct Tally {
    latency: Histogram<u64>,
    /// How late sends were against their schedule (fixed rate only).
    lag: Histogram<u64>,
    /// From the scheduled send to the answer (fixed rate only): what a
    /// caller on that schedule waits, time spent behind it included.
    scheduled: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    allowed: u64,
    denied: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            lag: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            scheduled: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
            first_error: None,
            allowed: 0,
            denied: 0,
        })
    }

    fn add(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.lag.add(&other.lag)?;
        self.scheduled.add(&other.scheduled)?;
        self.errors += other.errors;
        self.allowed += other.allowed;
        self.denied += other.denied;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

pub async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let (frames, path, bearer, population) = match args.rpc {
        Rpc::Check => {
            let subjects = args.population.read()?;
            let frames = subjects
                .iter()
                .map(|s| {
                    Bytes::from(
                        pb::CheckRequest {
                            subject: Some(pb::Subject {
                                by: Some(pb::subject::By::ConnectionKey(s.key.clone())),
                            }),
                            account_code: s.account.clone(),
                            right: s.right.clone(),
                            min_revision: 0,
                        }
                        .encode_to_vec(),
                    )
                })
                .collect::<Vec<_>>();
            let (_, bearer) = args.endpoint.channel().await?;
            let described = args.population.describe(frames.len());
            (
                frames,
                "/clef.v1.AuthorizationService/Check",
                Some(bearer),
                described,
            )
        }
        // HealthCheckRequest { service: "" } encodes to nothing.
        Rpc::Health => (
            vec![Bytes::new()],
            "/grpc.health.v1.Health/Check",
            None,
            "subjects=0".to_owned(),
        ),
    };
    let streams = args.connections.max(1) * args.streams.max(1);
    let period = match args.rate {
        Some(r) if r > 0.0 => Some(Duration::from_secs_f64(streams as f64 / r)),
        Some(_) => anyhow::bail!("--rate must be positive"),
        None => None,
    };
    let mut channels = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        channels.push(args.endpoint.connect().await?);
    }
    let picker = args.population.picker(frames.len())?;
    let target = Arc::new(Target {
        frames,
        path: PathAndQuery::from_static(path),
        bearer,
    });
    if args.prewarm {
        prewarm(&channels, &target).await?;
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warm_up.max(0.0));
    let end = measure_from + Duration::from_secs_f64(args.duration.max(0.1));
    let plan = Arc::new(Plan {
        target,
        picker,
        rpc: args.rpc,
        period,
        measure_from,
        end,
    });
    let window = tokio::spawn(window(args.metrics.clone(), measure_from, end));
    let mut tasks = Vec::with_capacity(streams);
    for id in 0..streams {
        let channel = channels[id % channels.len()].clone();
        tasks.push(tokio::spawn(stream(channel, plan.clone(), id, streams)));
    }
    let mut total = Tally::new()?;
    for t in tasks {
        total.add(t.await??)?;
    }
    let seconds = (end - measure_from).as_secs_f64();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let requests = total.latency.len();
    let mut line = format!(
        "rpc={} {population} connections={} streams={} mode={} requests={requests} rps={:.0} errors={} allowed={} denied={} \
         p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        match args.rpc {
            Rpc::Check => "check",
            Rpc::Health => "health",
        },
        args.connections.max(1),
        args.streams.max(1),
        args.rate
            .map_or("closed-loop".to_owned(), |r| format!("rate({r:.0})")),
        requests as f64 / seconds,
        total.errors,
        total.allowed,
        total.denied,
        ms(&total.latency, 0.5),
        ms(&total.latency, 0.9),
        ms(&total.latency, 0.99),
        ms(&total.latency, 0.999),
        total.latency.max() as f64 / 1000.0,
    );
    if period.is_some() {
        line += &format!(
            " max_send_lag_ms={:.3} sched_p99_ms={:.3} sched_p999_ms={:.3} sched_max_ms={:.3}",
            total.lag.max() as f64 / 1000.0,
            ms(&total.scheduled, 0.99),
            ms(&total.scheduled, 0.999),
            total.scheduled.max() as f64 / 1000.0
        );
    }
    let window = window.await??;
    let per_request = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
    line += &format!(
        " client_cpu_us_per_req={:.2}",
        per_request(window.client_cpu)
    );
    if let Some(server) = window.server {
        line += &format!(
            " hit_ratio={:.3} from_postgres={:.3} server_cpu_us_per_req={:.2}",
            server.hit,
            server.postgres,
            per_request(server.cpu)
        );
    }
    println!("{line}");
    if total.errors > 0 {
        anyhow::bail!(
            "{} requests failed, the first: {}",
            total.errors,
            total.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// Asks about every frame once, over every connection, errors refused.
async fn prewarm(channels: &[Channel], target: &Arc<Target>) -> anyhow::Result<()> {
    let streams = channels.len() * 4;
    let mut tasks = Vec::with_capacity(streams);
    for id in 0..streams {
        let mut grpc = tonic::client::Grpc::new(channels[id % channels.len()].clone());
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            for i in (id..target.frames.len()).step_by(streams) {
                target
                    .send(&mut grpc, i)
                    .await?
                    .map_err(|s| anyhow::anyhow!("prewarm: {:?}: {}", s.code(), s.message()))?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// One stream: requests one after the other, on a schedule when a rate is
/// set (staggered across streams).
async fn stream(
    channel: Channel,
    plan: Arc<Plan>,
    id: usize,
    streams: usize,
) -> anyhow::Result<Tally> {
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut rng = SmallRng::seed_from_u64(0x9e37_79b9 ^ id as u64);
    let mut tally = Tally::new()?;
    let mut next = Instant::now()
        + plan
            .period
            .map_or(Duration::ZERO, |p| p.mul_f64(id as f64 / streams as f64));
    loop {
        match plan.period {
            Some(_) => tokio::time::sleep_until(next.into()).await,
            None => next = Instant::now(),
        }
        if next >= plan.end {
            return Ok(tally);
        }
        let sent = Instant::now();
        let result = plan
            .target
            .send(&mut grpc, plan.picker.pick(&mut rng))
            .await?;
        let done = Instant::now();
        if next >= plan.measure_from {
            tally
                .latency
                .saturating_record((done - sent).as_micros().max(1) as u64);
            if plan.period.is_some() {
                tally
                    .lag
                    .saturating_record((sent - next).as_micros().max(1) as u64);
                tally
                    .scheduled
                    .saturating_record((done - next).as_micros().max(1) as u64);
            }
            match result {
                Ok(response) if plan.rpc == Rpc::Check => {
                    match pb::CheckResponse::decode(response.into_inner()) {
                        Ok(r) if r.allowed => tally.allowed += 1,
                        Ok(_) => tally.denied += 1,
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                Ok(_) => tally.allowed += 1,
                Err(status) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        }
        if let Some(p) = plan.period {
            next += p;
        }
    }
}

/// What the measured window cost: this process's CPU time, and, when the
/// server's metrics are read, what it saw.
struct Window {
    client_cpu: f64,
    server: Option<ServerWindow>,
}

/// The share of decisions answered from memory (the decision cache's hit
/// ratio) and from Postgres, and the server's CPU seconds.
struct ServerWindow {
    hit: f64,
    postgres: f64,
    cpu: f64,
}

/// Reads both sides at `from` and again at `to`.
async fn window(metrics: Option<String>, from: Instant, to: Instant) -> anyhow::Result<Window> {
    let cpu = || crate::metrics::cpu_seconds().unwrap_or(0.0);
    tokio::time::sleep_until(from.into()).await;
    let (cpu0, before) = (cpu(), scrape_if(metrics.as_deref()).await?);
    tokio::time::sleep_until(to.into()).await;
    let (cpu1, after) = (cpu(), scrape_if(metrics.as_deref()).await?);
    let server = before.zip(after).map(|(before, after)| {
        let delta =
            |metric: &str, label: &str| sum(&after, metric, label) - sum(&before, metric, label);
        // Decisions, not cache lookups: the caller's own key is a lookup
        // too, and it always hits.
        let memory = delta("clef_decisions_total", "source=\"memory\"");
        let all = delta("clef_decisions_total", "");
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        ServerWindow {
            hit: ratio(memory, all),
            postgres: ratio(all - memory, all),
            cpu: delta("clef_process_cpu_seconds_total", ""),
        }
    });
    Ok(Window {
        client_cpu: cpu1 - cpu0,
        server,
    })
}

async fn scrape_if(url: Option<&str>) -> anyhow::Result<Option<String>> {
    match url {
        Some(url) => Ok(Some(scrape(url).await?)),
        None => Ok(None),
    }
}

async fn scrape(url: &str) -> anyhow::Result<String> {
    let url = url.to_owned();
    // The blocking client runs off the runtime's threads.
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let response =
            reqwest::blocking::get(&url).with_context(|| format!("cannot read {url}"))?;
        Ok(response.error_for_status()?.text()?)
    })
    .await?
}

/// The sum of a metric's series whose labels contain `label` (with `""`,
/// every series, or the one value of a metric without labels).
fn sum(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(metric))
        .filter(|rest| rest.starts_with(['{', ' ']) && rest.contains(label))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn churn(args: ChurnArgs) -> anyhow::Result<()> {
    let subjects: Vec<Subject> = args
        .population
        .read()?
        .into_iter()
        .filter(|s| !s.user_id.is_empty() && !s.spare.is_empty() && s.spare != "-")
        .collect();
    anyhow::ensure!(
        !subjects.is_empty(),
        "no subject with a user id and a spare right (subjects.tsv of an older `clef bench dataset`?)"
    );
    let (channel, bearer) = args.endpoint.channel().await?;
    let mut grants = pb::grant_service_client::GrantServiceClient::with_interceptor(
        channel,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        },
    );
    let picker = args.population.picker(subjects.len())?;
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let end = Instant::now() + Duration::from_secs_f64(args.duration.max(0.1));
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut next = Instant::now();
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let s = &subjects[picker.pick(&mut rng)];
        let sent = Instant::now();
        grants
            .grant_rights(pb::GrantRightsRequest {
                account_code: s.account.clone(),
                user_id: s.user_id.clone(),
                rights: vec![pb::RightGrant {
                    right: s.spare.clone(),
                    ..Default::default()
                }],
            })
            .await
            .with_context(|| format!("granting {} to {}", s.spare, s.user_id))?;
        latency.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        let sent = Instant::now();
        grants
            .revoke_rights(pb::RevokeRightsRequest {
                account_code: s.account.clone(),
                user_id: s.user_id.clone(),
                rights: vec![s.spare.clone()],
            })
            .await
            .with_context(|| format!("revoking {} from {}", s.spare, s.user_id))?;
        latency.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        next += period * 2;
    }
    println!(
        "churn changes={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        latency.len(),
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0
    );
    Ok(())
}

/// Frames as they are: requests encoded once, responses decoded by the
/// caller (only `Check`'s, and only its answer).
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Self::Encoder {
        Raw
    }

    fn decoder(&mut self) -> Self::Decoder {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_series_of_a_metric_that_carry_a_label() {
        let text = "# TYPE clef_decisions_total counter\n\
            clef_decisions_total{outcome=\"allowed\",source=\"memory\"} 7\n\
            clef_decisions_total{outcome=\"denied\",source=\"postgres\"} 2\n\
            clef_decisions_total{outcome=\"allowed\",source=\"postgres\"} 1\n\
            clef_decisions_totalx{source=\"postgres\"} 100\n";
        assert_eq!(
            sum(text, "clef_decisions_total", "source=\"postgres\""),
            3.0
        );
        assert_eq!(sum(text, "clef_decisions_total", ""), 10.0);
    }

    #[test]
    fn reads_the_value_of_a_metric_without_labels() {
        let text = "# TYPE clef_process_cpu_seconds counter\n\
            clef_process_cpu_seconds_totalx 9\n\
            clef_process_cpu_seconds_total 12.5\n";
        assert_eq!(sum(text, "clef_process_cpu_seconds_total", ""), 12.5);
        assert_eq!(sum(text, "clef_nothing", ""), 0.0);
    }

    #[test]
    fn zipf_draws_stay_in_the_population_and_favour_the_first() {
        let picker = Picker::Zipf(Zipf::new(1000.0, 1.0).unwrap());
        let mut rng = SmallRng::seed_from_u64(1);
        let mut first = 0;
        for _ in 0..10_000 {
            let i = picker.pick(&mut rng);
            assert!(i < 1000);
            first += usize::from(i == 0);
        }
        // 1 / H(1000) ≈ 13 % of the draws.
        assert!((1000..1700).contains(&first), "{first}");
    }
}
