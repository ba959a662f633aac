//! Operating `sluice run`: the metrics endpoint reports what the test itself counted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_match_the_records_the_test_produced() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ops-metrics");
    create_topic(&topic, 3).await;
    let good = 480u64;
    let bad = 40u64;
    let records = (0..good + bad).map(|i| TestRecord {
        value: Some(if i % 13 == 0 && i / 13 < bad {
            b"{oops".to_vec()
        } else {
            click(i, "2026-03-01T10:00:00Z")
        }),
        ..Default::default()
    });
    let records: Vec<TestRecord> = records.collect();
    let bad_count = records
        .iter()
        .filter(|r| r.value.as_deref() == Some(b"{oops"))
        .count() as f64;
    produce(&topic, records).await;
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        "flush = { max_latency = \"300ms\" }",
    );
    let port = listen_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("SLUICE__SERVER__LISTEN", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let total = (good + bad) as f64;
    // Generous: on a loaded 2-core machine the group join and the 5-second lag sampling can
    // take a while; the assertions below are about values, not time.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut last = String::new();
    let text = loop {
        if let Some((200, text)) = http_get(&addr, "/metrics") {
            last = text.clone();
            let events = metric(
                &text,
                "sluice_rows_out_total{pipeline=\"clicks\",destination=\"events\"}",
            )
            .unwrap_or(0.0);
            let dead = metric(
                &text,
                "sluice_rows_out_total{pipeline=\"clicks\",destination=\"dead_letter\"}",
            )
            .unwrap_or(0.0);
            let lag: Vec<Option<f64>> = (0..3)
                .map(|p| metric(&text, &format!("sluice_consumer_lag_records{{pipeline=\"clicks\",topic=\"{topic}\",partition=\"{p}\"}}")))
                .collect();
            // Lag is measured every 5s: wait until all partitions report it caught up.
            if events + dead >= total && lag.iter().all(|l| *l == Some(0.0)) {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "metrics never reached the produced counts ({total} records, lag 0 on 3 partitions):\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(http_get(&addr, "/health").map(|r| r.0), Some(200));
    assert_eq!(http_get(&addr, "/ready").map(|r| r.0), Some(200));
    assert_eq!(
        metric(&text, "sluice_records_in_total{pipeline=\"clicks\"}"),
        Some(total)
    );
    assert_eq!(
        metric(
            &text,
            "sluice_rows_out_total{pipeline=\"clicks\",destination=\"events\"}"
        ),
        Some(total - bad_count)
    );
    assert_eq!(
        metric(
            &text,
            "sluice_rows_out_total{pipeline=\"clicks\",destination=\"dead_letter\"}"
        ),
        Some(bad_count)
    );
    assert_eq!(
        metric(
            &text,
            "sluice_dead_letters_total{pipeline=\"clicks\",reason=\"malformed_json\"}"
        ),
        Some(bad_count)
    );
    assert_eq!(
        metric(&text, "sluice_partitions_assigned{pipeline=\"clicks\"}"),
        Some(3.0)
    );
    assert!(
        metric(
            &text,
            "sluice_commit_duration_seconds_count{pipeline=\"clicks\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(text.contains("# TYPE sluice_late_records_total counter"));
    // The service runs without transparent huge pages (they kept freed memory resident).
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let thp = status.lines().find(|l| l.starts_with("THP_enabled:"));
    assert_eq!(
        thp.map(|l| l.split_whitespace().nth(1)),
        Some(Some("0")),
        "{status}"
    );
    // Memory gauges: the process's RSS as /proc reports it, and jemalloc's live heap under it.
    let vm_rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb * 1024.0)
        .unwrap();
    let rss = metric(&text, "sluice_memory_resident_bytes").unwrap();
    let heap = metric(&text, "sluice_heap_allocated_bytes").unwrap();
    assert!(
        rss > vm_rss / 2.0 && rss < vm_rss * 2.0,
        "RSS gauge {rss} against /proc's {vm_rss}"
    );
    assert!(heap > 1e6 && heap < rss, "live heap {heap}, RSS {rss}");
    // What jemalloc holds besides the live heap: each part below its resident heap.
    let resident = metric(&text, "sluice_heap_resident_bytes").unwrap();
    for part in [
        "sluice_heap_thread_cache_bytes",
        "sluice_heap_dirty_bytes",
        "sluice_heap_metadata_bytes",
    ] {
        let v = metric(&text, part).unwrap();
        assert!(
            v >= 0.0 && v < resident,
            "{part} {v}, resident heap {resident}"
        );
    }
    assert!(metric(&text, "sluice_heap_metadata_bytes").unwrap() > 0.0);
    signal(&child, Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
    let _ = dir;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_logs_validate_or_status_output() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("ops-secret");
    create_topic(&topic, 1).await;
    produce(
        &topic,
        (0..50u64).map(|i| TestRecord {
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        }),
    )
    .await;
    let file_secret = format!("file-pw-{}", unique("x"));
    let env_secret = format!("env-pw-{}", unique("y"));
    let s3_secret = format!("s3-key-{}", unique("z"));
    let mut lake = s3_lake();
    lake.options.remove("aws_secret_access_key");
    // The SASL settings are configured (and passed to librdkafka) on a plaintext listener.
    let config = pipeline_config(dir.path(), &topic, &lake, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[kafka.options]\n",
        &format!("[kafka.options]\n\"sasl.username\" = \"sluice\"\n\"sasl.password\" = \"{file_secret}\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n"),
    );
    std::fs::write(&config, &text).unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(sluice_bin());
        cmd.args(args)
            .arg("--config")
            .arg(&config)
            .env("SLUICE_LOG", "debug")
            .env("SLUICE__LAKE__OPTIONS__AWS_SECRET_ACCESS_KEY", &s3_secret);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let mut outputs = Vec::new();
    outputs.push(run(&["validate"], &[]));
    outputs.push(run(&["run", "--until-caught-up"], &[]));
    outputs.push(run(&["status"], &[]));
    // The same with the password from the environment instead of the file.
    std::fs::write(&config, text.replace(&file_secret, "overridden")).unwrap();
    let env = [("SLUICE__KAFKA__OPTIONS__SASL_PASSWORD", env_secret.as_str())];
    outputs.push(run(&["validate"], &env));
    outputs.push(run(&["run", "--until-caught-up"], &env));
    outputs.push(run(&["status"], &env));
    for (i, (ok, out)) in outputs.iter().enumerate() {
        assert!(*ok, "command {i} failed:\n{out}");
        for secret in [&file_secret, &env_secret, &s3_secret] {
            assert!(
                !out.contains(secret.as_str()),
                "command {i} printed a secret:\n{out}"
            );
        }
    }
    // The runs did their work (so the output examined is real output).
    assert!(
        outputs[2].1.contains(&topic) && outputs[2].1.contains("50"),
        "{}",
        outputs[2].1
    );
}

#[test]
fn docker_files_are_consistent() {
    let root_dir = repo_root();
    let root = root_dir.as_path();
    let python =
        std::env::var("SLUICE_TEST_PYTHON").expect("SLUICE_TEST_PYTHON (set by scripts/test)");
    let check = r#"
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
services = doc["services"]
assert {"kafka", "minio", "create-bucket", "sluice"} <= set(services), services.keys()
s = services["sluice"]
assert s["build"]["dockerfile"] == "docker/Dockerfile", s["build"]
for v in s["volumes"]:
    print(v.split(":")[0])
"#;
    let out = Command::new(python)
        .args(["-c", check])
        .arg(root.join("docker/compose.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mount in String::from_utf8_lossy(&out.stdout).lines() {
        let path = root.join("docker").join(mount);
        assert!(
            path.exists(),
            "compose mounts {mount}, which does not exist"
        );
        let cfg = sluice_config::Config::load(&path);
        assert!(cfg.is_ok(), "{mount}: {:?}", cfg.err());
    }
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("AS build")
            && dockerfile.contains("COPY --from=build /src/target/release/sluice")
    );
    assert!(dockerfile.contains("cargo build --release --locked --bin sluice"));
}

#[test]
fn the_demo_runs_end_to_end_and_its_numbers_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let started = Instant::now();
    let out = Command::new(sluice_bin())
        .args(["demo", "--dir"])
        .arg(&lake)
        .env("SLUICE_LOG", "warn")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        elapsed < Duration::from_secs(120),
        "the demo took {elapsed:?}"
    );
    // A healthy demo logs no error (the readers once logged librdkafka's end-of-partition as a
    // global error).
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.lines().any(|l| l.contains(" ERROR ")),
        "a healthy demo logged an error:\n{log}"
    );
    let num = |line_start: &str, idx: usize| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(line_start))
            .unwrap_or_else(|| panic!("no line {line_start:?} in:\n{text}"));
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        nums[idx]
    };
    // "produced N clicks to topic `clicks` (3 partitions): V valid, M malformed, L sent minutes late"
    let (produced, valid, malformed, late_sent) = (
        num("produced", 0),
        num("produced", 2),
        num("produced", 3),
        num("produced", 4),
    );
    assert_eq!(produced, valid + malformed);
    assert_eq!(produced, 20_000 + 3);
    assert_eq!(num("clicks ", 0), valid, "every valid click is an event");
    assert_eq!(
        num("clicks_dead_letter", 0),
        malformed,
        "every malformed click is a dead letter"
    );
    let late = num("clicks_late", 0);
    assert!(
        late > 0 && late <= late_sent,
        "late rows {late} of {late_sent} sent late"
    );
    assert!(num("clicks_per_minute", 0) > 0);
    // Every record is archived once; the topic table adds the fresh ones still in the broker.
    assert_eq!(num("archive_clicks", 0), produced, "{text}");
    assert_eq!(num("tiered topic clicks", 0), produced, "{text}");
    let fresh = num("produced 300 fresh", 0);
    assert_eq!(num("kafka.clicks", 0), produced + fresh, "{text}");
    assert!(text.contains("SELECT window_start, page, views"), "{text}");
    assert!(
        text.contains(&lake.display().to_string()),
        "the demo says where the lake is"
    );
    assert!(lake.join("clicks").join("_delta_log").is_dir());
}

fn spawn_listening(config: &std::path::Path) -> (KillOnDrop, String) {
    let addr = format!("127.0.0.1:{}", listen_port());
    let child = Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("SLUICE__SERVER__LISTEN", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop(child), addr)
}

async fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while http_get(addr, "/ready").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "{addr} never became ready");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A standby (an instance of the group that holds no partition) and a service that only
/// tiers are healthy: both report ready.
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_without_partitions_and_a_tiering_only_service_are_ready() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("ready");
    create_topic(&topic, 1).await;
    let config = pipeline_config(dir.path(), &topic, &lake_cfg, "");
    let (_a, addr_a) = spawn_listening(&config);
    let (_b, addr_b) = spawn_listening(&config);
    wait_ready(&addr_a).await;
    wait_ready(&addr_b).await;
    let assigned = |addr: &str| {
        http_get(addr, "/metrics")
            .and_then(|(_, t)| metric(&t, "sluice_partitions_assigned{pipeline=\"clicks\"}"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (assigned(&addr_a), assigned(&addr_b));
        if matches!((a, b), (Some(x), Some(y)) if x + y == 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "assigned: {a:?} and {b:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let tier_dir = tempfile::tempdir().unwrap();
    let tiered = unique("ready-tier");
    create_topic_with(&tiered, 1, &[("retention.ms", "-1")]).await;
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\n[lake]\nroot = \"{}\"\n[server]\nlisten = \"\"\n\n[[tiering]]\ntopic = \"{tiered}\"\nhot_retention = \"1h\"\ninterval = \"1s\"\n",
        kafka(),
        unique("ready-group"),
        tier_dir.path().display()
    );
    let tier_config = tier_dir.path().join("sluice.toml");
    std::fs::write(&tier_config, text).unwrap();
    let (_t, addr_t) = spawn_listening(&tier_config);
    wait_ready(&addr_t).await;
}

/// The path of a record in docs/architecture.md names files that exist, and enough of them.
#[test]
fn the_architecture_doc_names_the_files_a_record_passes() {
    let root = repo_root();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let start = doc.find("## The path of a record").expect("the section");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let files: Vec<&str> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.ends_with(".rs"))
        .collect();
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        assert!(
            root.join(f).is_file(),
            "{f} is named in docs/architecture.md but missing"
        );
    }
}
