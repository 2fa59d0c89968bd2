//! Anomaly reports: injected anomalies of each kind are found with the right group and
//! direction over several seeds, a clean run finds nothing, the HTML opens in headless
//! Chromium with one chart per finding, and bad options give clear errors.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake::generator::{Generator, Injection};
use spanlake::report::model::{Direction, FindingKind, Report, ReportStatus};
use spanlake::report::{self, ReportOptions};

use crate::common::{TestServer, run_to_success};

/// Baseline: 1000 traces a second apart from T0; current: the 500 seconds after.
const T0: i64 = 1_700_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;
const BASELINE_TRACES: i64 = 1000;
const CURRENT_TRACES: i64 = 500;
const CURRENT_START: i64 = T0 + BASELINE_TRACES * SECOND;

fn windows() -> ReportOptions {
    ReportOptions {
        current: Some(format!(
            "{}..{}",
            CURRENT_START / SECOND,
            (CURRENT_START + CURRENT_TRACES * SECOND) / SECOND
        )),
        baseline: Some(format!("{}..{}", T0 / SECOND, CURRENT_START / SECOND)),
        ..Default::default()
    }
}

/// A server holding a baseline and a current window of `seed`'s traces, with `inject` from
/// the current window on.
async fn loaded(seed: u64, inject: Option<&str>) -> TestServer {
    let server = TestServer::start().await;
    let injections: Vec<Injection> = inject
        .map(|text| {
            vec![
                format!("{text},from={CURRENT_START}")
                    .parse()
                    .expect("a valid injection"),
            ]
        })
        .unwrap_or_default();
    let mut generator = Generator::new(seed).with_injections(injections);
    let mut client = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    for n in 0..BASELINE_TRACES + CURRENT_TRACES {
        let trace = generator.trace_at(T0 + n * SECOND);
        if !trace.resource_spans.is_empty() {
            client.export(trace).await.unwrap();
        }
    }
    server
}

async fn make(server: &TestServer, options: &ReportOptions) -> Report {
    report::run(
        &server.server.engine,
        spanlake::tenant::SINGLE_TENANT,
        options,
        spanlake::time::now_ns(),
    )
    .await
    .unwrap()
}

fn service_of(finding: &spanlake::report::model::Finding) -> &str {
    finding
        .group
        .get("service.name")
        .map(String::as_str)
        .unwrap_or("")
}

// One test per seed: each loads three servers and makes a report on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_anomalies_are_found_with_their_group_and_direction_seed_11() {
    injected_anomalies_are_found(11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_anomalies_are_found_with_their_group_and_direction_seed_12() {
    injected_anomalies_are_found(12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_anomalies_are_found_with_their_group_and_direction_seed_13() {
    injected_anomalies_are_found(13).await;
}

/// Each kind of injected anomaly, in generated traffic of `seed`, is reported with its service
/// and direction, a q-value under the threshold, exemplar traces and chart data.
async fn injected_anomalies_are_found(seed: u64) {
    let cases: &[(&str, &str, FindingKind, Direction)] = &[
        (
            "latency:service=checkout,factor=4",
            "checkout",
            FindingKind::Latency,
            Direction::Up,
        ),
        (
            "errors:service=payment,rate=0.3",
            "payment",
            FindingKind::Errors,
            Direction::Up,
        ),
        (
            "traffic:service=payment,factor=3",
            "payment",
            FindingKind::Traffic,
            Direction::Up,
        ),
    ];
    for (inject, service, kind, direction) in cases {
        let server = loaded(seed, Some(inject)).await;
        let made = make(&server, &windows()).await;
        assert_eq!(made.status, ReportStatus::Ok);
        let found = made
            .findings
            .iter()
            .any(|f| f.kind == *kind && f.direction == *direction && service_of(f) == *service);
        let summaries: Vec<&str> = made.findings.iter().map(|f| f.summary.as_str()).collect();
        assert!(
            found,
            "seed {seed}, {inject}: no {kind:?} {direction:?} finding for {service} in {summaries:#?}"
        );
        let finding = made
            .findings
            .iter()
            .find(|f| f.kind == *kind && service_of(f) == *service)
            .unwrap();
        assert!(finding.q_value.unwrap() <= made.thresholds.max_q);
        assert!(!finding.exemplars.is_empty(), "{finding:?} names no trace");
        assert!(finding.series.is_some(), "{finding:?} has no chart data");
        if *kind == FindingKind::Errors {
            assert!(
                made.findings.iter().any(|f| f.kind == FindingKind::NewError
                    && f.detail.as_deref().unwrap_or("").contains("injected")),
                "the injected status message is reported as new: {summaries:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_reports_no_finding_at_the_default_thresholds() {
    for seed in [11, 12, 13] {
        let server = loaded(seed, None).await;
        let made = make(&server, &windows()).await;
        assert_eq!(made.status, ReportStatus::Ok);
        assert!(made.groups_compared > 3, "{made:?}");
        assert!(made.tests_run > 3 * made.groups_compared / 2, "{made:?}");
        let summaries: Vec<&str> = made.findings.iter().map(|f| f.summary.as_str()).collect();
        assert!(summaries.is_empty(), "seed {seed}: {summaries:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ranges_and_empty_windows_are_errors_or_no_data() {
    let server = loaded(11, None).await;
    for (options, expected) in [
        (
            ReportOptions {
                current: Some("yesterday".into()),
                ..Default::default()
            },
            "START..END",
        ),
        (
            ReportOptions {
                current: Some("now..now-1h".into()),
                ..Default::default()
            },
            "not before its end",
        ),
        (
            ReportOptions {
                group_by: Some(vec!["colour".into()]),
                ..windows()
            },
            "cannot group",
        ),
        (
            ReportOptions {
                filter: Some("{ span.x = ".into()),
                ..windows()
            },
            "",
        ),
        (
            ReportOptions {
                kinds: Some(vec!["serverr".into()]),
                ..windows()
            },
            "unknown span kind",
        ),
    ] {
        let error = report::run(
            &server.server.engine,
            spanlake::tenant::SINGLE_TENANT,
            &options,
            spanlake::time::now_ns(),
        )
        .await
        .unwrap_err();
        let query_error = spanlake::query::QueryError::from(error);
        assert_eq!(
            query_error.kind,
            spanlake::query::ErrorKind::BadRequest,
            "{query_error:?}"
        );
        assert!(query_error.message.contains(expected), "{query_error:?}");
    }
    // A window with no spans, and a tenant with none, are "no data", not errors.
    let empty = ReportOptions {
        current: Some("100..200".into()),
        ..windows()
    };
    assert_eq!(make(&server, &empty).await.status, ReportStatus::NoData);
    let other = report::run(
        &server.server.engine,
        "nobody",
        &windows(),
        spanlake::time::now_ns(),
    )
    .await
    .unwrap();
    assert_eq!(other.status, ReportStatus::NoData);
    assert!(other.findings.is_empty());

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/api/v1/report", server.http_url()))
        .body("{\"current\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = http
        .post(format!("{}/api/v1/report", server.http_url()))
        .body("{\"colour\": \"red\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("colour"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_http_and_flight_give_the_same_report_and_exit_by_severity() {
    let server = loaded(12, Some("errors:service=payment,rate=0.3")).await;
    let options = windows();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let mut command = report_command(&["--server", &server.http_url()], &options);
    command.args(["--format", "json", "--out"]).arg(&out);
    let status = command.status().unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "findings at warning or above exit 2"
    );
    let from_cli: Report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(
        from_cli
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::Errors)
    );

    let mut command = report_command(&["--server", &server.http_url()], &options);
    command.args([
        "--format",
        "md",
        "--min-ratio",
        "1000",
        "--min-error-rate-delta",
        "1",
        "--fail-on",
        "critical",
    ]);
    let markdown = run_to_exit(command, 1).await;
    assert!(markdown.contains("injected"), "{markdown}");

    // Straight from the data directory, without a server in between: the same findings.
    server.server.ingester.flush(true).await.unwrap();
    let data_dir = server.dir.path().to_string_lossy().to_string();
    let mut command = report_command(&["--data-dir", &data_dir], &options);
    command.args(["--format", "json"]);
    let offline: Report = serde_json::from_str(&run_to_exit(command, 2).await).unwrap();
    assert_eq!(offline.findings.len(), from_cli.findings.len());

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
    command.args([
        "report",
        "--server",
        &server.http_url(),
        "--current",
        "oops",
    ]);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("oops"));

    // The Flight action `report` answers the same report as JSON.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", server.server.flight_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut flight = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let mut results = flight
        .do_action(arrow_flight::Action {
            r#type: "report".into(),
            body: serde_json::to_vec(&options).unwrap().into(),
        })
        .await
        .unwrap()
        .into_inner();
    let result = results.message().await.unwrap().expect("one result");
    let from_flight: Report = serde_json::from_slice(&result.body).unwrap();
    let kinds = |r: &Report| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for f in &r.findings {
            *counts.entry(format!("{:?}", f.kind)).or_default() += 1;
        }
        counts
    };
    assert_eq!(kinds(&from_flight), kinds(&from_cli));
    let error = flight
        .do_action(arrow_flight::Action {
            r#type: "report".into(),
            body: b"not json".to_vec().into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
}

/// `spanlake report` from `source` (`--server URL` or `--data-dir DIR`) over the windows of
/// `options`.
fn report_command(source: &[&str], options: &ReportOptions) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
    command.arg("report").args(source).args([
        "--current",
        options.current.as_deref().unwrap(),
        "--baseline",
        options.baseline.as_deref().unwrap(),
    ]);
    command
}

async fn run_to_exit(mut command: std::process::Command, code: i32) -> String {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_opens_in_headless_chromium_with_one_chart_per_finding() {
    let server = loaded(13, Some("latency:service=checkout,factor=4")).await;
    let made = make(&server, &windows()).await;
    assert!(!made.findings.is_empty());
    let html = report::render::html(&made).unwrap();
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&out).unwrap();
    let page = out.join("report.html");
    std::fs::write(&page, &html).unwrap();

    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("headless Chromium is installed (.ci/run installs Debian's chromium)");
    let headless = |extra: &[&str]| {
        let mut command = std::process::Command::new(chromium);
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,2400",
        ]);
        command.args(extra);
        command.arg(format!("file://{}", page.display()));
        command
    };
    let dom = String::from_utf8(run_to_success(headless(&["--dump-dom"])).await).unwrap();
    let sections = dom.matches("class=\"finding\"").count();
    assert_eq!(sections, made.findings.len(), "one section per finding");
    let charts = dom.matches("<svg").count();
    let expected: usize = made
        .findings
        .iter()
        .map(|f| usize::from(f.series.is_some()) + usize::from(f.distribution.is_some()))
        .sum();
    assert_eq!(charts, expected, "one chart per series and distribution");
    assert!(charts >= made.findings.len());
    let screenshot = out.join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    run_to_success(headless(&[&format!(
        "--screenshot={}",
        screenshot.display()
    )]))
    .await;
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is taken");
    println!("report screenshot: {}", screenshot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_reports_are_written_to_the_store_and_listed() {
    let server = loaded(11, Some("errors:service=payment,rate=0.3")).await;
    let entry =
        spanlake::report::scheduled::Entry::from_config(&spanlake::config::ScheduledReport {
            name: "hourly".into(),
            schedule: "0 * * * *".into(),
            tenant: None,
            formats: vec!["json".into(), "html".into()],
            options: windows(),
        })
        .unwrap();
    let storage = spanlake::storage::Storage::open_with(
        &crate::common::test_config(server.dir.path()).storage_url(),
        &Default::default(),
    )
    .unwrap();
    let written = entry
        .run_once(
            &server.server.engine,
            &storage,
            CURRENT_START + 3_600 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    let listed: serde_json::Value = serde_json::from_slice(
        &reqwest::get(format!("{}/api/v1/reports", server.http_url()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let files: Vec<&str> = listed["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["file"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "{listed}");
    let html = reqwest::get(format!(
        "{}/api/v1/reports/hourly/{}",
        server.http_url(),
        files.iter().find(|f| f.ends_with(".html")).unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.text().await.unwrap().contains("class=\"finding\""));
    let missing = reqwest::get(format!(
        "{}/api/v1/reports/hourly/nothing.json",
        server.http_url()
    ))
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);

    for (schedule, formats) in [("61 * * * *", vec!["json"]), ("@hourly", vec!["pdf"])] {
        let error =
            spanlake::report::scheduled::Entry::from_config(&spanlake::config::ScheduledReport {
                name: "bad".into(),
                schedule: schedule.into(),
                tenant: None,
                formats: formats.into_iter().map(String::from).collect(),
                options: ReportOptions::default(),
            })
            .unwrap_err();
        assert!(error.to_string().contains("bad"), "{error}");
    }
}
