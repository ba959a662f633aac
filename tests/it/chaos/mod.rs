//! The chaos suite: many faults at once, then nothing lost, doubled or deleted early.
//!
//! A broker of its own (`scripts/kafka.sh` on port 29092, so it can be killed), the S3 server
//! behind a fault proxy (`proxy.rs`), a producer running the whole time (`produce.rs`), and
//! `sluice run` with ingest, a windowed aggregate, tiering and compaction of one topic. On a
//! schedule drawn from a printed seed the runner SIGKILLs the service (or lets it abort at a
//! commit step), kills and restarts the broker, and SIGSTOPs an instance until a second one
//! took its partitions and committed, then resumes it (the zombie must be fenced). A sampler
//! checks all along that the broker never dropped what the archive had not committed. At the
//! end (`check.rs`): events, dead letters, late records, aggregates and the archive against
//! what the broker acknowledged.
//!
//! CI runs a short schedule. `scripts/chaos.sh` runs a long one: SLUICE_CHAOS_SEED,
//! SLUICE_CHAOS_SECONDS, SLUICE_CHAOS_MIN_KILLS, SLUICE_CHAOS_RATE,
//! SLUICE_CHAOS_STORE_FAULTS (share of requests), SLUICE_CHAOS_BROKER_EVERY and
//! SLUICE_CHAOS_ZOMBIE_EVERY (seconds), SLUICE_CHAOS_REPORT (a markdown file to write).

mod check;
mod produce;
mod proxy;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::support::*;
use produce::{Kind, Sent};

const PARTITIONS: i32 = 3;
const WINDOW_MS: i64 = 10_000;
/// The first life: long enough for windows to close and the clock to be committed (late
/// records start at twice this, see `produce.rs`).
const WARM_UP: Duration = Duration::from_secs(20);
/// The commit steps a life may abort at (`SLUICE_FAULT`).
const FAULT_POINTS: [&str; 6] = [
    "before_commit",
    "after_dead_letter_commit",
    "after_aggregate_commit",
    "after_events_commit",
    "tier_after_upload",
    "tier_after_commit",
];

/// The run's settings (environment, with CI's short defaults).
#[derive(Debug)]
struct Plan {
    seed: u64,
    seconds: u64,
    min_kills: u64,
    rate: u32,
    store_faults: f64,
    broker_every: u64,
    zombie_every: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Plan {
    fn from_env() -> Self {
        Self {
            seed: env_or("SLUICE_CHAOS_SEED", rand::random::<u32>() as u64),
            seconds: env_or("SLUICE_CHAOS_SECONDS", 150),
            min_kills: env_or("SLUICE_CHAOS_MIN_KILLS", 20),
            rate: env_or("SLUICE_CHAOS_RATE", 1000),
            store_faults: env_or("SLUICE_CHAOS_STORE_FAULTS", 0.10),
            broker_every: env_or("SLUICE_CHAOS_BROKER_EVERY", 100),
            zombie_every: env_or("SLUICE_CHAOS_ZOMBIE_EVERY", 120),
        }
    }
}

/// What happened, for the report.
#[derive(Debug, Default)]
struct Counts {
    lives: u64,
    kills: u64,
    /// Kills of lives that had committed events.
    kills_after_commit: u64,
    /// Lives given a commit step to abort at.
    faulted: u64,
    aborts: u64,
    exits: Vec<String>,
    broker_restarts: u64,
    zombies: u64,
    zombies_fenced: u64,
    /// Per zombie, what stopped it after it resumed.
    zombie_guards: Vec<String>,
    trim_samples: u64,
    trimmed: i64,
}

/// The chaos broker: `scripts/kafka.sh` on its own port, killed and restarted at will.
struct Broker {
    port: u16,
}

impl Broker {
    fn script(&self, action: &str) {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/kafka.sh"))
            .arg(action)
            .env("SLUICE_KAFKA_PORT", self.port.to_string())
            .output()
            .expect("run scripts/kafka.sh");
        assert!(
            out.status.success(),
            "scripts/kafka.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/kafka.sh"))
            .arg("stop")
            .env("SLUICE_KAFKA_PORT", self.port.to_string())
            .output();
    }
}

/// One `sluice run` process, in a process group of its own (its compaction child with it).
struct Instance {
    child: Child,
    log: PathBuf,
}

impl Instance {
    fn spawn(config: &Path, log: PathBuf, fault: Option<&str>) -> Self {
        let mut cmd = Command::new(sluice_bin());
        cmd.args(["run", "--config"])
            .arg(config)
            // Commits are logged at debug: the runner counts the lives that committed.
            .env("SLUICE_LOG", "info,sluice_telemetry=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .process_group(0);
        if let Some(f) = fault {
            cmd.env("SLUICE_FAULT", f);
        }
        Self {
            child: cmd.spawn().expect("spawn sluice"),
            log,
        }
    }

    fn signal(&self, sig: Signal) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Still running?
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap; true if it had committed events before it died.
    fn kill(mut self) -> bool {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
        self.log_text()
            .contains("event=\"table_committed\" pipeline=\"chaos\" table=\"events\"")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Why it ended by itself: a panic's message, the exit message, or the log's tail.
    fn why(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        let mut out: Vec<&str> = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if l.contains("panicked at") {
                out.extend(lines[i..(i + 2).min(lines.len())].iter().copied());
            }
        }
        out.extend(lines.iter().filter(|l| l.starts_with("sluice: ")).copied());
        if out.is_empty() {
            return self.tail();
        }
        out.join("\n")
    }

    fn tail(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.alive() {
            self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn config(dir: &Path, broker: &str, topic: &str, root: &str, endpoint: &str) -> PathBuf {
    let text = format!(
        r#"
[kafka]
brokers = "{broker}"
group_id = "{topic}"
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[lake]
root = "{root}"
[lake.options]
aws_endpoint = "{endpoint}"
aws_region = "us-east-1"
aws_access_key_id = "sluice-test-key"
aws_secret_access_key = "sluice-test-secret"
aws_allow_http = "true"
timeout = "5s"

[server]
listen = ""
shutdown_timeout = "60s"

[maintenance]
compact_interval = "5s"

[[pipeline]]
name = "chaos"
topics = ["{topic}"]
table = "events"
dead_letter_table = "dead"
schema = [
  {{ name = "id", type = "long", nullable = false }},
  {{ name = "k", type = "string" }},
  {{ name = "v", type = "long" }},
  {{ name = "ts", type = "timestamp" }},
]
event_time = {{ field = "ts", format = "rfc3339" }}
idle_timeout = "60s"
flush = {{ max_latency = "1s" }}
# The topic-clock aggregate makes each life take the lease: a killed life's lease expires in
# 2 s, and the next one takes over.
standby_takeover = "2s"

[[pipeline.aggregate]]
table = "per_key"
late_table = "late"
window = {{ kind = "tumbling", size = "10s" }}
grace = "2s"
group_by = ["k"]
aggregates = ["count(*) AS n", "sum(v) AS total"]

[[tiering]]
topic = "{topic}"
archive_table = "archive"
hot_retention = "15s"
interval = "3s"
"#
    );
    let path = dir.join("chaos.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

async fn create_topic_on(broker: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("admin");
    let t = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1");
    for r in admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .expect("create topic")
    {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// The archive's committed boundary of each partition (the first offset not archived).
async fn boundaries(lake: &sluice_lake::Lake, topic: &str) -> Option<Vec<i64>> {
    let table = lake.open("archive").await.ok()??;
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let app = format!("sluice:archive:{topic}:{p}");
        out.push(
            sluice_lake::committed_progress("archive", &table, &app)
                .await
                .ok()?
                .unwrap_or(0),
        );
    }
    Some(out)
}

/// Each partition's log start offset, or `None` while the broker is away.
fn log_starts(consumer: &BaseConsumer, topic: &str) -> Option<Vec<i64>> {
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(2))
                .ok()
                .map(|w| w.0)
        })
        .collect()
}

/// Sets `committed` once the aggregate table holds a committed window clock (read without
/// faults), so that the producer starts its old records then.
async fn watch_clock(lake: sluice_lake::Lake, committed: Arc<AtomicBool>) {
    let start = Instant::now();
    let app = sluice_lake::clock_app_id("chaos");
    loop {
        if let Ok(Some(t)) = lake.open("per_key").await
            && let Ok(Some(_)) = sluice_lake::committed_progress("per_key", &t, &app).await
        {
            committed.store(true, Ordering::SeqCst);
            eprintln!(
                "chaos: a window clock was committed after {:?}; old records from now on",
                start.elapsed()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Samples, until `stop`, that no partition's log start passed the archive's committed
/// boundary; returns (samples, violations).
async fn watch_trims(
    broker: String,
    topic: String,
    lake: sluice_lake::Lake,
    stop: Arc<AtomicBool>,
) -> (u64, Vec<String>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("group.id", "chaos-watch")
        .create()
        .expect("consumer");
    let consumer = Arc::new(consumer);
    let (mut samples, mut violations) = (0, Vec::new());
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Log starts first: the boundary read after them can only be larger.
        let (c, t) = (consumer.clone(), topic.clone());
        let Ok(Some(starts)) = tokio::task::spawn_blocking(move || log_starts(&c, &t)).await else {
            continue;
        };
        let Some(bounds) = boundaries(&lake, &topic).await else {
            continue;
        };
        samples += 1;
        for p in 0..PARTITIONS as usize {
            if starts[p] > bounds[p] {
                violations.push(format!(
                    "partition {p}: log start {} past the archived boundary {}",
                    starts[p], bounds[p]
                ));
            }
        }
    }
    (samples, violations)
}

/// The run's schedule: lives of the service, broker restarts and zombies, until the time is
/// up and enough kills were made.
struct Runner {
    plan: Plan,
    rng: StdRng,
    dir: PathBuf,
    config: PathBuf,
    broker: Broker,
    counts: Counts,
}

impl Runner {
    fn log_path(&mut self) -> PathBuf {
        self.counts.lives += 1;
        self.dir.join(format!("life-{:04}.log", self.counts.lives))
    }

    /// Lets `inst` run for `d`; true if it ended by itself (a fault point, or an error).
    async fn live(&mut self, inst: &mut Instance, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if !inst.alive() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn killed(&mut self, inst: Instance) {
        self.counts.kills += 1;
        if inst.kill() {
            self.counts.kills_after_commit += 1;
        }
    }

    fn ended(&mut self, inst: Instance, fault: Option<&str>) {
        let text = inst.log_text();
        if fault.is_some() && text.contains("SLUICE_FAULT: aborting") {
            self.counts.aborts += 1;
        } else {
            self.counts
                .exits
                .push(format!("{}: {}", inst.log.display(), inst.why()));
        }
    }

    async fn one_life(&mut self) {
        let fault = (self.rng.random_range(0..4) == 0).then(|| {
            format!(
                "{}:{}",
                FAULT_POINTS[self.rng.random_range(0..FAULT_POINTS.len())],
                self.rng.random_range(1..=3)
            )
        });
        if fault.is_some() {
            self.counts.faulted += 1;
        }
        let log = self.log_path();
        let mut inst = Instance::spawn(&self.config, log, fault.as_deref());
        // A life with a fault point runs until it reaches it (or 30 s); the others die at a
        // random moment, most of them after their first commits.
        let d = match fault {
            Some(_) => Duration::from_secs(30),
            None => Duration::from_millis(self.rng.random_range(4_000..15_000)),
        };
        if self.live(&mut inst, d).await {
            self.ended(inst, fault.as_deref());
        } else {
            self.killed(inst);
        }
    }

    /// The broker dies under a running service and comes back.
    async fn broker_restart(&mut self) {
        let log = self.log_path();
        let mut inst = Instance::spawn(&self.config, log, None);
        self.live(&mut inst, Duration::from_secs(3)).await;
        tokio::task::block_in_place(|| {
            self.broker.script("crash");
            std::thread::sleep(Duration::from_secs(3));
            self.broker.script("restart");
        });
        self.counts.broker_restarts += 1;
        if self.live(&mut inst, Duration::from_secs(8)).await {
            self.ended(inst, None);
        } else {
            self.killed(inst);
        }
    }

    /// SIGSTOP one instance once it holds the lease and committed, until a second one took
    /// over (its lease expired) and committed; SIGKILL the second, resume the first: its next
    /// commit or lease renewal must be fenced.
    async fn zombie(&mut self) {
        let log = self.log_path();
        let mut a = Instance::spawn(&self.config, log, None);
        // A zombie is an instance that computes: wait until it holds the lease and committed.
        let started = Instant::now();
        while !(a.log_text().contains("active: this instance computes")
            && a.log_text().contains("table_committed"))
            && started.elapsed() < Duration::from_secs(40)
        {
            if self.live(&mut a, Duration::from_secs(1)).await {
                return self.ended(a, None);
            }
        }
        a.signal(Signal::SIGSTOP);
        let log = self.log_path();
        let mut b = Instance::spawn(&self.config, log, None);
        if self.live(&mut b, Duration::from_secs(16)).await {
            self.ended(b, None);
        } else {
            self.killed(b);
        }
        let before = a.log_text().len();
        a.signal(Signal::SIGCONT);
        self.counts.zombies += 1;
        let ended = self.live(&mut a, Duration::from_secs(10)).await;
        // What the zombie learnt after resuming: a refused events or aggregate commit, a refused
        // archive commit, or the group taking its partitions before it wrote. The tables'
        // checks prove it wrote nothing stale; this says which guard stopped it.
        let after = a.log_text()[before..].to_string();
        let fenced = [
            ("commit fenced", "re-reading progress from the tables"),
            (
                "archive fenced",
                "another tierer archived the same partitions first",
            ),
            ("partitions revoked", "revoked partitions"),
            ("lease lost", "another instance took over its windows"),
        ];
        let seen: Vec<&str> = fenced
            .iter()
            .filter(|(_, needle)| after.contains(needle))
            .map(|(what, _)| *what)
            .collect();
        if !seen.is_empty() {
            self.counts.zombies_fenced += 1;
        }
        self.counts.zombie_guards.push(seen.join(" + "));
        if ended {
            self.ended(a, None);
        } else {
            self.killed(a);
        }
    }

    async fn run(&mut self) {
        let start = Instant::now();
        let log = self.log_path();
        let mut first = Instance::spawn(&self.config, log, None);
        if self.live(&mut first, WARM_UP).await {
            self.ended(first, None);
        } else {
            self.killed(first);
        }
        let (mut next_broker, mut next_zombie) = (
            self.plan.broker_every * 2 / 5,
            self.plan.zombie_every * 3 / 5,
        );
        while start.elapsed().as_secs() < self.plan.seconds
            || self.counts.kills < self.plan.min_kills
        {
            let t = start.elapsed().as_secs();
            if t >= next_broker {
                next_broker += self.plan.broker_every;
                self.broker_restart().await;
            } else if t >= next_zombie {
                next_zombie += self.plan.zombie_every;
                self.zombie().await;
            } else {
                self.one_life().await;
            }
        }
    }
}

/// OPTIMIZE commits (compactions) across the run's tables.
async fn compactions(lake: &sluice_lake::Lake) -> usize {
    use futures::StreamExt;
    let mut n = 0;
    for t in ["events", "dead", "per_key", "late", "archive"] {
        if let Ok(Some(table)) = lake.open(t).await {
            let history: Vec<_> = table.history(None).collect().await;
            n += history
                .iter()
                .filter(|c| {
                    c.as_ref()
                        .is_ok_and(|c| c.operation.as_deref() == Some("OPTIMIZE"))
                })
                .count();
        }
    }
    n
}

/// Polls the tables until they hold everything (or `limit` passes).
async fn wait_complete(
    lake: &sluice_lake::Lake,
    sent: &[Sent],
    oracle_rows: usize,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let valid = sent.iter().filter(|s| s.kind != Kind::Bad).count();
    let mut last = String::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut counts = Vec::new();
        for t in ["events", "per_key", "archive"] {
            counts.push(match lake.open(t).await {
                Ok(Some(_)) => rows(&read_table(lake, t).await),
                _ => 0,
            });
        }
        last = format!(
            "events {}/{valid}, aggregate rows {}/{oracle_rows}, archive {}/{}",
            counts[0],
            counts[1],
            counts[2],
            sent.len()
        );
        if counts[0] >= valid && counts[1] >= oracle_rows && counts[2] >= sent.len() {
            return Ok(());
        }
    }
    Err(format!("the tables did not fill: {last}"))
}

/// The chaos run (CI's short schedule by default; `scripts/chaos.sh` for a long one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_kills_broker_restarts_store_faults_and_a_zombie_lose_and_double_nothing() {
    let plan = Plan::from_env();
    println!("chaos: {plan:?}");
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let broker = Broker {
        port: env_or("SLUICE_CHAOS_KAFKA_PORT", 29092),
    };
    tokio::task::block_in_place(|| broker.script("start"));
    let topic = unique("chaos");
    create_topic_on(&broker.addr(), &topic).await;
    let upstream = s3_endpoint().trim_start_matches("http://").to_string();
    let proxy = proxy::FaultProxy::start(
        &upstream,
        plan.store_faults,
        plan.seed,
        Duration::from_secs(8),
    )
    .await;
    let root = format!("s3://{BUCKET}/{topic}");
    let config = config(dir.path(), &broker.addr(), &topic, &root, &proxy.url);
    // The checker reads the lake straight from the S3 server, without faults.
    let mut lake_cfg = s3_lake();
    lake_cfg.root = root;
    let lake = sluice_lake::Lake::new(&lake_cfg).expect("lake");

    let stop = Arc::new(AtomicBool::new(false));
    let clock_committed = Arc::new(AtomicBool::new(false));
    let clock_watch = tokio::spawn(watch_clock(
        sluice_lake::Lake::new(&lake_cfg).expect("lake"),
        clock_committed.clone(),
    ));
    let producer = tokio::spawn(produce::run(
        broker.addr(),
        topic.clone(),
        plan.rate,
        i64::from(plan.rate) * WARM_UP.as_secs() as i64 * 2,
        clock_committed,
        stop.clone(),
    ));
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_trims(
        broker.addr(),
        topic.clone(),
        sluice_lake::Lake::new(&lake_cfg).expect("lake"),
        watch_stop.clone(),
    ));

    let mut runner = Runner {
        rng: StdRng::seed_from_u64(plan.seed),
        plan,
        dir: dir.path().to_path_buf(),
        config: config.clone(),
        broker,
        counts: Counts::default(),
    };
    runner.run().await;

    stop.store(true, Ordering::SeqCst);
    let mut sent = producer.await.expect("producer");
    let last_ts = sent
        .iter()
        .filter(|s| s.kind == Kind::Good)
        .map(|s| s.ts)
        .max()
        .unwrap_or(0);
    let closers = produce::closers(
        &runner.broker.addr(),
        &topic,
        PARTITIONS,
        last_ts,
        sent.len() as i64,
    )
    .await;
    sent.extend(closers);
    sent.sort_by_key(|s| (s.partition, s.offset));
    proxy.set_rate(0.0);
    let oracle_rows = check::oracle(&sent, WINDOW_MS).len();
    let log = runner.log_path();
    let mut last = Instance::spawn(&config, log, None);
    let complete = wait_complete(&lake, &sent, oracle_rows, Duration::from_secs(240)).await;
    last.signal(Signal::SIGTERM);
    let clean = last.child.wait().map(|s| s.success()).unwrap_or(false);
    clock_watch.abort();
    watch_stop.store(true, Ordering::SeqCst);
    let (samples, violations) = watcher.await.expect("watcher");
    runner.counts.trim_samples = samples;

    // The checks, each with its first difference.
    let mut results: Vec<(&str, Result<usize, String>)> = Vec::new();
    results.push((
        "log dense",
        check::dense(&sent).map(|e| e.values().sum::<i64>() as usize),
    ));
    results.push(("final run", complete.map(|()| 0)));
    results.push((
        "clean stop",
        if clean {
            Ok(0)
        } else {
            Err(format!(
                "the last instance did not stop cleanly:\n{}",
                last.tail()
            ))
        },
    ));
    results.push((
        "events",
        check::events(&read_table(&lake, "events").await, &sent),
    ));
    results.push((
        "dead letters",
        check::dead_letters(&read_table(&lake, "dead").await, &sent),
    ));
    results.push(("late", check::late(&read_table(&lake, "late").await, &sent)));
    results.push((
        "aggregates",
        check::aggregates(&read_table(&lake, "per_key").await, &sent, WINDOW_MS),
    ));
    results.push((
        "archive",
        check::archive(&read_table(&lake, "archive").await, &sent),
    ));
    results.push((
        "trims",
        if violations.is_empty() {
            Ok(samples as usize)
        } else {
            Err(violations.join("; "))
        },
    ));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", runner.broker.addr())
        .create()
        .expect("consumer");
    let trimmed: i64 = tokio::task::block_in_place(|| log_starts(&consumer, &topic))
        .unwrap_or_default()
        .iter()
        .sum();
    runner.counts.trimmed = trimmed;
    results.push((
        "trimmed",
        if trimmed > 0 {
            Ok(trimmed as usize)
        } else {
            Err("the broker was never trimmed: the trim check proved nothing".into())
        },
    ));
    let compacted = compactions(&lake).await;
    results.push((
        "compactions",
        if compacted > 0 {
            Ok(compacted)
        } else {
            Err("no table was compacted during the run".into())
        },
    ));
    results.push((
        "kills",
        if runner.counts.kills >= runner.plan.min_kills {
            Ok(runner.counts.kills as usize)
        } else {
            Err(format!("{} kills", runner.counts.kills))
        },
    ));
    results.push((
        "zombie fenced",
        if runner.counts.zombies == 0 || runner.counts.zombies_fenced > 0 {
            Ok(runner.counts.zombies_fenced as usize)
        } else {
            Err("no zombie was fenced after it resumed".into())
        },
    ));

    let report = report(&runner, &proxy, &sent, &results, began.elapsed());
    println!("{report}");
    if let Ok(path) = std::env::var("SLUICE_CHAOS_REPORT") {
        std::fs::write(&path, &report).expect("write the report");
    }
    if results.iter().any(|(_, r)| r.is_err()) || std::env::var_os("SLUICE_CHAOS_KEEP").is_some() {
        println!("the service's logs are kept in {}", dir.keep().display());
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "chaos seed {}: {}",
        runner.plan.seed,
        failed.join("\n")
    );
}

fn report(
    runner: &Runner,
    proxy: &proxy::FaultProxy,
    sent: &[Sent],
    results: &[(&str, Result<usize, String>)],
    took: Duration,
) -> String {
    let c = &runner.counts;
    let kinds = |k: Kind| sent.iter().filter(|s| s.kind == k).count();
    let faults: Vec<String> = proxy
        .faults()
        .iter()
        .map(|(f, n)| format!("{f:?} {n}"))
        .collect();
    let mut out = format!(
        "# Chaos run\n\n- seed: {}\n- plan: {:?}\n- wall time: {:.0} s\n- service lives: {}, SIGKILLs: {} ({} after the life's first events commit), lives given a commit step to abort at: {}, aborted there: {}, other exits: {}\n- broker restarts (SIGKILL + restart): {}\n- zombies: {} (stopped after resuming: {}; by: {:?})\n- object-store requests: {}, faults injected: {} ({:.1}%): {}\n- records acknowledged: {} (valid {}, not JSON {}, late {}, closers {})\n- offsets trimmed from the broker by the end: {}; trim samples: {}\n\n| check | result |\n|---|---|\n",
        runner.plan.seed,
        runner.plan,
        took.as_secs_f64(),
        c.lives,
        c.kills,
        c.kills_after_commit,
        c.faulted,
        c.aborts,
        c.exits.len(),
        c.broker_restarts,
        c.zombies,
        c.zombies_fenced,
        c.zombie_guards,
        proxy.requests(),
        proxy.total_faults(),
        100.0 * proxy.total_faults() as f64 / proxy.requests().max(1) as f64,
        faults.join(", "),
        sent.len(),
        kinds(Kind::Good) + kinds(Kind::Late) + kinds(Kind::Closer),
        kinds(Kind::Bad),
        kinds(Kind::Late),
        kinds(Kind::Closer),
        c.trimmed,
        c.trim_samples,
    );
    for (name, r) in results {
        out.push_str(&match r {
            Ok(n) => format!("| {name} | ok ({n}) |\n"),
            Err(e) => format!("| {name} | **FAILED**: {e} |\n"),
        });
    }
    for e in &c.exits {
        out.push_str(&format!("\nexit: {e}\n"));
    }
    out
}
