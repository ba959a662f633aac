//! Authentication and encryption against the real services: the broker's SASL_SSL listener
//! (SCRAM over TLS, certificates made by `scripts/kafka.sh`) and the S3 server over HTTPS
//! (`scripts/s3.sh`). Credentials come from the environment; no secret is ever printed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the suite with scripts/test"))
}

/// A config reading `topic` through the SASL_SSL listener with `mechanism`; the password is
/// not in the file (it comes from SLUICE__KAFKA__OPTIONS__SASL_PASSWORD).
fn sasl_config(
    dir: &std::path::Path,
    topic: &str,
    lake: &sluice_config::LakeConfig,
    ca: &str,
    mechanism: &str,
    extra: &str,
) -> std::path::PathBuf {
    let config = pipeline_config(
        dir,
        topic,
        lake,
        &format!("flush = {{ max_latency = \"1s\" }}\n{extra}"),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("brokers = \"{}\"", kafka()),
        &format!("brokers = \"{}\"", env("SLUICE_TEST_KAFKA_SASL")),
    ).replace(
        "[kafka.options]\n",
        &format!(
            "[kafka.options]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"{mechanism}\"\n\"sasl.username\" = \"{}\"\n\"ssl.ca.location\" = \"{ca}\"\n",
            env("SLUICE_TEST_KAFKA_SCRAM_USER")
        ),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Produces `n` clicks on the plaintext listener; returns their positions.
async fn clicks(topic: &str, n: u64) -> Vec<(i32, i64)> {
    create_topic(topic, 3).await;
    produce(
        topic,
        (0..n).map(|i| TestRecord {
            key: Some(format!("u{i}").into_bytes()),
            value: Some(click(i, "2026-03-01T10:00:00Z")),
            ..Default::default()
        }),
    )
    .await
}

/// Ingest through SASL/SCRAM-SHA-512 over TLS with the password from the environment: every
/// record lands once; the password is in none of the log (at debug level), `/metrics`,
/// `/health`, `/ready` or `sluice status` output.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_through_sasl_scram_over_tls_with_the_password_from_the_environment() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("sasl");
    let mut produced = clicks(&topic, 3000).await;
    let password = env("SLUICE_TEST_KAFKA_SCRAM_PASSWORD");
    let config = sasl_config(
        dir.path(),
        &topic,
        &lake_cfg,
        &env("SLUICE_TEST_KAFKA_CA"),
        "SCRAM-SHA-512",
        "",
    );
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains(&password)
    );
    let addr = format!("127.0.0.1:{}", listen_port());
    let log_path = dir.path().join("sluice.log");
    let child = Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("SLUICE__SERVER__LISTEN", &addr)
        .env("SLUICE__KAFKA__OPTIONS__SASL_PASSWORD", &password)
        .env("SLUICE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let lake = sluice_lake::Lake::new(&lake_cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(_)) = lake.open("events").await {
            let got = positions(&read_table(&lake, "events").await);
            if got.len() >= produced.len() {
                let mut got = got;
                got.sort();
                produced.sort();
                assert_eq!(got, produced, "every record once, through SASL_SSL");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the events did not arrive through SASL_SSL:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut outputs = Vec::new();
    for path in ["/metrics", "/health", "/ready"] {
        let (status, body) = http_get(&addr, path).expect("the service answers");
        assert_eq!(status, 200, "{path}: {body}");
        outputs.push(body);
    }
    let status = Command::new(sluice_bin())
        .args(["status", "--config"])
        .arg(&config)
        .env("SLUICE__KAFKA__OPTIONS__SASL_PASSWORD", &password)
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned()
        + &String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "sluice status: {status_text}");
    assert!(status_text.contains("events"), "{status_text}");
    outputs.push(status_text);
    signal(&child.0, Signal::SIGTERM);
    assert!(child.0.wait().unwrap().success(), "a clean stop");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("DEBUG"), "the log is at debug level: {log}");
    outputs.push(log);
    for out in &outputs {
        assert!(
            !out.contains(&password),
            "the SCRAM password was printed:\n{out}"
        );
    }
}

/// A wrong password (for a plain pipeline, and for one with a windowed aggregate and a tiered
/// topic, whose first calls are metadata lookups) and an untrusted certificate: each is one
/// clear error naming what to check, the process exits (no retry loop), and the password is
/// not printed.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_or_an_untrusted_certificate_are_one_clear_error() {
    let (dir, lake_cfg) = local_lake();
    let topic = unique("sasl-wrong");
    clicks(&topic, 10).await;
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::copy(env("SLUICE_TEST_S3_CA"), &other_ca).unwrap();
    let windows_and_tiering = format!(
        "[[pipeline.aggregate]]\ntable = \"per_minute\"\nwindow = {{ kind = \"tumbling\", size = \"1m\" }}\ngroup_by = [\"page\"]\naggregates = [\"count(*) AS n\"]\n\n[[tiering]]\ntopic = \"{topic}\"\n"
    );
    let cases = [
        (
            "wrong-password-7f3a",
            env("SLUICE_TEST_KAFKA_CA"),
            "invalid credentials",
            "",
        ),
        (
            "wrong-password-7f3a",
            env("SLUICE_TEST_KAFKA_CA"),
            "invalid credentials",
            windows_and_tiering.as_str(),
        ),
        (
            env("SLUICE_TEST_KAFKA_SCRAM_PASSWORD").leak() as &str,
            other_ca.display().to_string(),
            "certificate verify failed",
            "",
        ),
    ];
    for (password, ca, why, extra) in cases {
        let config = sasl_config(dir.path(), &topic, &lake_cfg, &ca, "SCRAM-SHA-256", extra);
        let start = Instant::now();
        let out = Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("SLUICE__KAFKA__OPTIONS__SASL_PASSWORD", password)
            .env("SLUICE_LOG", "info")
            .output()
            .unwrap();
        let took = start.elapsed();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "refused settings must stop the service:\n{text}"
        );
        assert!(
            took < Duration::from_secs(60),
            "it stopped after {took:?}, retrying:\n{text}"
        );
        assert_eq!(
            text.matches("refused the connection").count(),
            1,
            "one error:\n{text}"
        );
        assert!(text.contains(why), "the reason ({why}):\n{text}");
        assert!(
            text.contains("sasl.password") && text.contains("ssl.ca.location"),
            "what to check:\n{text}"
        );
        assert!(
            !text.contains(password),
            "the password was printed:\n{text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// The lake on the S3 server over HTTPS, its certificate trusted through SSL_CERT_FILE (no
/// `aws_allow_http`): ingest lands every record, and `sluice query` reads them back.
#[test]
fn a_lake_on_s3_over_https_trusted_through_ssl_cert_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("s3-tls");
    let produced = rt.block_on(clicks(&topic, 500));
    let mut lake = s3_lake();
    lake.options.remove("aws_allow_http");
    lake.options
        .insert("aws_endpoint".into(), env("SLUICE_TEST_S3_TLS"));
    let config = pipeline_config(dir.path(), &topic, &lake, "");
    let ca = env("SLUICE_TEST_S3_CA");
    let run = |args: &[&str], cert: Option<&str>| {
        let mut cmd = Command::new(sluice_bin());
        cmd.args(args)
            .arg("--config")
            .arg(&config)
            .env("SLUICE_LOG", "info");
        if let Some(c) = cert {
            cmd.env("SSL_CERT_FILE", c);
        }
        cmd.output().unwrap()
    };
    // Without trusting the certificate the lake cannot be opened: an error, not a hang.
    let untrusted = run(&["run", "--until-caught-up"], None);
    let text = String::from_utf8_lossy(&untrusted.stderr).into_owned();
    assert!(
        !untrusted.status.success(),
        "an untrusted certificate must be refused:\n{text}"
    );
    let ok = run(&["run", "--until-caught-up"], Some(&ca));
    let text = String::from_utf8_lossy(&ok.stderr).into_owned();
    assert!(ok.status.success(), "ingest over HTTPS:\n{text}");
    let q = run(
        &[
            "query",
            "SELECT count(*) AS n, count(DISTINCT _kafka_offset * 10 + _kafka_partition) AS d FROM events",
        ],
        Some(&ca),
    );
    let out = String::from_utf8_lossy(&q.stdout).into_owned();
    assert!(
        q.status.success(),
        "query over HTTPS: {out}{}",
        String::from_utf8_lossy(&q.stderr)
    );
    let n = produced.len().to_string();
    assert_eq!(
        out.matches(n.as_str()).count(),
        2,
        "{} rows, each once:\n{out}",
        produced.len()
    );
}
