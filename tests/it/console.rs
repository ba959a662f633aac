//! The console: `sluice run` serves a page and its JSON API; headless Chromium renders the page
//! against a running service, and the numbers it shows are compared with what this test
//! produced and what the tables committed. Also the open-window queries and `sluice status
//! --json`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_lake::Lake;

use crate::support::*;

/// Where the test saves what a person may want to look at (the screenshot).
fn artifacts_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("SLUICE_TEST_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-test-artifacts"));
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn chromium() -> String {
    std::env::var("SLUICE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Headless Chromium as this machine runs it: no sandbox (root), none of the background
/// connections a closed network refuses, a fresh profile.
fn chromium_command(profile: &std::path::Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1400,2600",
        // Timers and fetches run until the page is idle or this much virtual time passed.
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// The page's DOM after its script ran, as Chromium rendered it.
fn rendered_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = chromium_command(profile.path())
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("start chromium (scripts/install-deps.sh installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `data-metric="name"` element's text, as the page shows it.
fn shown_numbers(dom: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = dom;
    while let Some(i) = rest.find("data-metric=\"") {
        rest = &rest[i + 13..];
        let Some(end) = rest.find('"') else { break };
        let name = rest[..end].replace("&amp;", "&");
        let Some(open) = rest.find('>') else { break };
        let text_end = rest[open + 1..].find('<').unwrap_or(0);
        out.insert(name, rest[open + 1..open + 1 + text_end].to_string());
        rest = &rest[open..];
    }
    out
}

/// A shown number ("1,234") as an integer.
fn number(shown: &BTreeMap<String, String>, key: &str) -> i64 {
    let text = shown
        .get(key)
        .unwrap_or_else(|| panic!("the page shows no {key}; it shows {shown:#?}"));
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{key} shows {text:?}, not a number"))
}

fn status(addr: &str) -> Value {
    let (code, body) = http_get(addr, "/api/status").expect("GET /api/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

const T0: &str = "2026-03-01T10:00:00Z";

fn event_ms(i: u64) -> i64 {
    chrono::DateTime::parse_from_rfc3339(T0)
        .unwrap()
        .timestamp_millis()
        + i as i64 * 1000
}

fn event_time(i: u64) -> String {
    chrono::DateTime::from_timestamp_millis(event_ms(i))
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn page_of(i: u64) -> String {
    format!("/p/{}", i % 7)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium_shows_what_was_produced_and_committed() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("console");
    create_topic_with(&topic, 2, &[("retention.ms", "-1")]).await;
    let now = chrono::Utc::now().timestamp_millis();
    // 2,000 clicks one second of event time apart, alternating partitions; Kafka timestamps
    // three hours old for the first 1,500 (cold: tiering archives them and trims them from
    // the broker once the pipeline has committed them) and now for the rest (hot). Every
    // 50th is not JSON (a dead letter). Then per partition 3 clicks from the first minute:
    // their window closed long ago (late).
    let total = 2_000u64;
    let mut recs = Vec::new();
    for i in 0..total {
        let value = if i % 50 == 49 {
            format!("not json {i}").into_bytes()
        } else {
            click(i, &event_time(i))
        };
        recs.push(TestRecord {
            partition: Some((i % 2) as i32),
            value: Some(value),
            timestamp: Some(if i < 1_500 { now - 3 * 3_600_000 } else { now }),
            ..Default::default()
        });
    }
    let mut positions = produce(&topic, recs).await;
    let late_per_partition = 3u64;
    let late: Vec<TestRecord> = (0..2)
        .flat_map(|p| {
            (0..late_per_partition).map(move |j| TestRecord {
                partition: Some(p),
                value: Some(click(j * 2 + p as u64, &event_time(j * 2 + p as u64))),
                timestamp: Some(now),
                ..Default::default()
            })
        })
        .collect();
    let count = |pos: &[(i32, i64)], p: i32| pos.iter().filter(|x| x.0 == p).count() as i64;
    let first_counts = [count(&positions, 0), count(&positions, 1)];
    let bad = (0..total).filter(|i| i % 50 == 49).count() as i64;
    let first_hot = |p: i32| -> i64 {
        // Offsets in a partition follow production order: the cold ones come first.
        (0..1_500u64).filter(|i| (i % 2) as i32 == p).count() as i64
    };
    // The window clock: the lowest, over the partitions, of each one's latest event time.
    let clock = (0..2)
        .map(|p| {
            (0..total)
                .filter(|i| (i % 2) as i64 == p && i % 50 != 49)
                .map(event_ms)
                .max()
                .unwrap()
        })
        .min()
        .unwrap();

    let port = listen_port();
    let addr = format!("127.0.0.1:{port}");
    let config = pipeline_config(
        dir.path(),
        &topic,
        &lake_cfg,
        &format!(
            r#"idle_timeout = "1h"
flush = {{ max_latency = "300ms" }}

[[pipeline.aggregate]]
table = "views"
window = {{ kind = "tumbling", size = "1m" }}
grace = "10s"
group_by = ["page"]
aggregates = ["count(*) AS views"]

[[tiering]]
topic = "{topic}"
archive_table = "archive"
hot_retention = "1h"
interval = "1s"
"#
        ),
    );
    let mut service = KillOnDrop(
        Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("SLUICE__SERVER__LISTEN", &addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The late clicks once the clock has passed their window on both partitions (with the
    // first records' partitions still catching up, an old record can meet a clock that has
    // not reached it yet: docs/windows.md).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed = http_get(&addr, "/api/status")
            .filter(|(code, _)| *code == 200)
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .map(|doc| {
                let p = &doc["pipelines"][0]["partitions"];
                (0..2).all(|n| p[n]["committed"].as_i64() == Some(first_counts[n]))
            });
        if committed == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first records were not committed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    positions.extend(produce(&topic, late).await);
    let counts = [count(&positions, 0), count(&positions, 1)];
    let per_partition = |p: i32| counts[p as usize];
    let all = positions.len() as i64;
    // Wait until everything is committed, archived and trimmed, and the service has two
    // throughput samples.
    let deadline = Instant::now() + Duration::from_secs(120);
    let doc = loop {
        if let Some((200, body)) = http_get(&addr, "/api/status") {
            let doc: Value = serde_json::from_str(&body).unwrap();
            let p = &doc["pipelines"][0];
            let settled = p["partitions"].as_array().is_some_and(|parts| {
                parts.len() == 2
                    && parts.iter().all(|s| {
                        let n = s["partition"].as_i64().unwrap() as i32;
                        s["committed"].as_i64() == Some(per_partition(n)) && s["lag"] == 0
                    })
            }) && doc["tiering"][0]["partitions"]
                .as_array()
                .is_some_and(|parts| {
                    parts.iter().all(|s| {
                        let n = s["partition"].as_i64().unwrap() as i32;
                        s["boundary"].as_i64() == Some(per_partition(n))
                            && s["log_start"].as_i64() == Some(first_hot(n))
                    })
                })
                && p["activity"]["rates"]
                    .as_array()
                    .is_some_and(|r| r.len() >= 2)
                && p["activity"]["records_in"].as_i64() == Some(all);
            if settled {
                break doc;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the service did not settle: {:?}",
            http_get(&addr, "/api/status")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // What the tables hold, read independently of the service.
    let lake = Lake::new(&lake_cfg).unwrap();
    let events = lake.open("events").await.unwrap().unwrap();
    let events_version = events.version().unwrap() as i64;
    let events_files = sluice_compaction::file_stats("events", &events)
        .unwrap()
        .files as i64;
    assert_eq!(rows(&read_table(&lake, "events").await) as i64, all - bad);

    // The page, rendered by Chromium.
    let url = format!("http://{addr}/");
    let dom = rendered_dom(&url);
    let shown = shown_numbers(&dom);
    let pl = "clicks";
    for p in 0..2 {
        let k = format!("{pl}/{topic}/{p}");
        assert_eq!(number(&shown, &format!("committed/{k}")), per_partition(p));
        assert_eq!(number(&shown, &format!("end/{k}")), per_partition(p));
        assert_eq!(number(&shown, &format!("lag/{k}")), 0);
        let t = format!("{topic}/{p}");
        assert_eq!(number(&shown, &format!("log_start/{t}")), first_hot(p));
        assert_eq!(number(&shown, &format!("boundary/{t}")), per_partition(p));
        assert_eq!(number(&shown, &format!("tier_end/{t}")), per_partition(p));
    }
    assert_eq!(number(&shown, &format!("lag_total/{pl}")), 0);
    assert_eq!(number(&shown, &format!("records_in/{pl}")), all);
    assert_eq!(number(&shown, &format!("rows_out/{pl}/events")), all - bad);
    assert!(number(&shown, &format!("rate_points/{pl}")) >= 1);
    let dead: i64 = shown
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("dead_letters/{pl}/")))
        .map(|(k, _)| number(&shown, k))
        .sum();
    assert_eq!(dead, bad, "dead letters by reason: {shown:#?}");
    assert_eq!(
        number(&shown, &format!("late/{pl}/views")),
        2 * late_per_partition as i64
    );
    let clock_text = chrono::DateTime::from_timestamp_millis(clock)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(shown[&format!("clock/{pl}/views")], clock_text);
    assert_eq!(shown[&format!("alarm/{topic}")], "interlock ok");
    assert_eq!(number(&shown, "table_version/events"), events_version);
    assert_eq!(number(&shown, "files/events"), events_files);
    assert_eq!(number(&shown, "version/events"), events_version);
    // The newest commit of the events table on the page is the table's version.
    let newest_events_commit = (0..10)
        .filter(|i| {
            shown
                .get(&format!("commit_table/{pl}/{i}"))
                .map(String::as_str)
                == Some("events")
        })
        .map(|i| number(&shown, &format!("commit_version/{pl}/{i}")))
        .max()
        .expect("an events commit on the page");
    assert_eq!(newest_events_commit, events_version);
    // The page and the API agree (the document the page drew from).
    assert_eq!(
        doc["pipelines"][0]["activity"]["dead_letters_by_reason"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum::<i64>(),
        bad
    );

    // A screenshot, for people.
    let shot = artifacts_dir().join("console.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = chromium_command(profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("console screenshot: {}", shot.display());

    // Interactive queries: the open windows of one key, their running counts equal to this
    // test's records in windows that have not closed (end > clock - grace).
    let key = "/p/3";
    let (code, body) = http_get(&addr, "/api/aggregates/views/open?key=%2Fp%2F3").unwrap();
    assert_eq!(code, 200, "{body}");
    let open: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(open["provisional"], true);
    let mut want: BTreeMap<i64, i64> = BTreeMap::new();
    for i in (0..total).filter(|i| i % 50 != 49 && page_of(*i) == key) {
        let start = event_ms(i) - event_ms(i).rem_euclid(60_000);
        if start + 60_000 > clock - 10_000 {
            *want.entry(start).or_default() += 1;
        }
    }
    let got: BTreeMap<i64, i64> = open["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert_eq!(w["page"], key);
            let start = chrono::DateTime::parse_from_rfc3339(w["window_start"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            (start, w["views"].as_i64().unwrap())
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "{body}");
    let (code, body) = http_get(&addr, "/api/aggregates/views/open?user=1").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("page"), "{body}");
    let (code, _) = http_get(&addr, "/api/aggregates/nothing/open").unwrap();
    assert_eq!(code, 404);

    // `sluice status --json` prints the same document, less what only the service knows.
    let cli = status_json(&config);
    assert_eq!(cli["live"], false);
    assert_eq!(
        cli["pipelines"][0]["partitions"].as_array().unwrap().len(),
        2
    );
    for key in ["committed", "end", "lag", "boundary"] {
        for p in 0..2 {
            assert_eq!(
                cli["pipelines"][0]["partitions"][p][key],
                status(&addr)["pipelines"][0]["partitions"][p][key],
                "{key} of partition {p}"
            );
        }
    }
    assert_eq!(
        cli["tiering"][0]["partitions"],
        status(&addr)["tiering"][0]["partitions"]
    );
    assert!(
        cli["tiering"][0]["alarm"].is_null(),
        "only the service knows"
    );
    assert!(cli["pipelines"][0]["activity"].is_null());

    signal(&service.0, Signal::SIGTERM);
    assert!(service.0.wait().unwrap().success());
}
