//! Operating `sluice run`: the metrics endpoint reports what the test itself counted.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((status, body))
}

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
    let port = 20_000 + rand::random::<u16>() % 20_000;
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Some((200, text)) = http_get(&addr, "/metrics") {
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
            "metrics never reached the produced counts"
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
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let _ = dir;
}
