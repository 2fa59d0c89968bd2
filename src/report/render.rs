//! Renders a finished [`Report`] for programs and people: pretty JSON (the stable schema of
//! `model.rs`), Markdown for tickets and chat, and one self-contained HTML file with charts.
//!
//! This module owns presentation only. It reads a report; it never computes a statistic,
//! decides a severity or reorders findings, which are the report engine's. The three formats
//! state the same header facts (`header_facts`) and the same cells per finding
//! (`measure_cells`), so they cannot drift apart.
//!
//! The HTML file has to open offline and as a mail attachment: inline CSS, no script, no
//! external resource (fonts, style sheets, images), every piece of text escaped. Exemplar links
//! are the only URLs in it besides the SVG namespace. Charts are SVG drawn by `plotters`' SVG
//! backend into a string.
//!
//! # Fonts
//!
//! plotters is built with `default-features = false`, without `ttf` and `ab_glyph`. plotters
//! 0.3 then compiles its `naive` font (`src/style/font/naive.rs`): a font is only a family name
//! and a style, and the size of a text is estimated (0.7 em per byte) for layout. No font file
//! is ever looked for, so rendering needs no system font: a CI machine without fonts draws the
//! same charts. `SVGBackend` implements `draw_text` itself, writing each label as an escaped
//! SVG `<text font-family="sans-serif">` that the reader's browser sets in its own sans-serif
//! font. (The naive font cannot rasterise glyphs, `FontData::draw` panics, but only bitmap
//! backends call it and this module uses none.) The estimate is only used to place labels, so
//! a wrong estimate moves a label by a few pixels and never drops it.

use std::iter;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat};
use plotters::coord::Shift;
use plotters::prelude::{
    BLACK, BindKeyPoints, ChartBuilder, Color, DrawingArea, DrawingAreaErrorKind, IntoDrawingArea,
    IntoLogRange, LineSeries, PathElement, Polygon, RGBColor, Rectangle, SVGBackend,
    SeriesLabelPosition, WHITE,
};

use super::model::{
    Distribution, Finding, FindingKind, Report, ReportStatus, Series, Severity, Thresholds, Window,
};
use crate::time::{NANOS_PER_SECOND, go_duration};

/// Why a report could not be rendered as HTML.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// plotters failed to draw one of a finding's charts.
    #[error("drawing the {chart} chart of finding {finding} failed: {message}")]
    Chart {
        finding: String,
        chart: &'static str,
        message: String,
    },
    /// A finding's latency distribution is not a histogram that can be drawn.
    #[error(
        "finding {finding} has a latency distribution that cannot be drawn: {reason}; \
         upper_ms must be finite and increasing, with one current and one baseline share per bucket"
    )]
    Distribution { finding: String, reason: String },
}

/// The report as pretty JSON (the stable schema of model.rs).
pub fn json(report: &Report) -> String {
    // A report has only string map keys and derived serializers, and serde_json writes a
    // non-finite float as `null`: serializing it cannot fail.
    serde_json::to_string_pretty(report).expect("a Report always serializes to JSON")
}

/// The report as Markdown: the header facts, the outcome in one sentence, then one section per
/// finding with its summary, table of measures, detail and exemplar traces.
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "# Anomaly report for tenant {}\n\n",
        md_text(&report.tenant)
    );
    for (name, value) in header_facts(report) {
        out.push_str(&format!("- **{name}:** {}\n", md_text(&value)));
    }
    out.push_str(&format!("\n{}\n", md_text(&outcome(report))));
    for (index, finding) in report.findings.iter().enumerate() {
        out.push('\n');
        out.push_str(&markdown_finding(index + 1, finding));
    }
    out
}

/// The report as one self-contained HTML file: inline CSS, no scripts, no external resources;
/// one `<section class="finding">` per finding with its table and, where the finding has them,
/// a time-series chart and a latency-distribution chart (`<svg class="chart">`).
pub fn html(report: &Report) -> Result<String, RenderError> {
    let title = format!("Anomaly report for tenant {}", report.tenant);
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
    );
    out.push_str(&format!("<title>{}</title>\n", html_text(&title)));
    out.push_str(&format!(
        "<style>\n{STYLE}</style>\n</head>\n<body>\n<header>\n"
    ));
    out.push_str(&format!(
        "<h1>{}</h1>\n<dl class=\"facts\">\n",
        html_text(&title)
    ));
    for (name, value) in header_facts(report) {
        out.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>\n",
            html_text(name),
            html_text(&value)
        ));
    }
    out.push_str(&format!(
        "</dl>\n<p class=\"outcome\">{}</p>\n</header>\n<main>\n",
        html_text(&outcome(report))
    ));
    for (index, finding) in report.findings.iter().enumerate() {
        out.push_str(&html_finding(report, index + 1, finding)?);
    }
    out.push_str(&format!(
        "</main>\n<footer>spanlake anomaly report, schema version {}, generated at {}</footer>\n\
         </body>\n</html>\n",
        report.schema_version,
        html_text(&report.generated_at)
    ));
    Ok(out)
}

/// The HTML file's whole style sheet. Severity colours: critical red, warning amber.
const STYLE: &str = "\
body { font-family: system-ui, sans-serif; color: #1f2328; background: #fff;
       max-width: 62rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; line-height: 1.45; }
h1 { font-size: 1.5rem; margin: 0.5rem 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
p.outcome { font-weight: 600; }
section.finding { border-top: 1px solid #d0d7de; margin-top: 1.5rem; padding-top: 0.25rem; }
section.finding h2 { font-size: 1.15rem; overflow-wrap: anywhere; }
section.finding[data-severity=\"critical\"] h2 { color: #b42318; }
section.finding[data-severity=\"warning\"] h2 { color: #b54708; }
table { border-collapse: collapse; margin: 0.5rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; text-align: left; }
td.number { text-align: right; }
figure { margin: 0.75rem 0; }
svg.chart { display: block; max-width: 100%; height: auto; }
ul.exemplars { font-family: ui-monospace, monospace; }
footer { margin-top: 2rem; color: #59636e; font-size: 0.85rem; }
";

/// Shown where a cell has no value (no baseline, no test).
const DASH: &str = "—";

// ---------------------------------------------------------------------------------------------
// What every format says

/// The facts a report's header states, as (name, plain text).
fn header_facts(report: &Report) -> Vec<(&'static str, String)> {
    let group_by = if report.group_by.is_empty() {
        "nothing (all spans are one group)".to_string()
    } else {
        report.group_by.join(", ")
    };
    vec![
        ("Tenant", report.tenant.clone()),
        ("Current window", window_text(&report.current)),
        ("Baseline window", window_text(&report.baseline)),
        (
            "Filter",
            report
                .filter
                .clone()
                .unwrap_or_else(|| "none (all spans)".to_string()),
        ),
        ("Group by", group_by),
        ("Status", status_name(report.status).to_string()),
        ("Groups compared", report.groups_compared.to_string()),
        ("Tests run", report.tests_run.to_string()),
        ("Thresholds", thresholds_text(&report.thresholds)),
        ("Generated at", report.generated_at.clone()),
    ]
}

/// The report's outcome in one sentence.
fn outcome(report: &Report) -> String {
    if report.status == ReportStatus::NoData {
        return "No data in the current or baseline window: nothing was compared.".to_string();
    }
    if report.findings.is_empty() {
        return "No findings: no difference between the windows passed the thresholds.".to_string();
    }
    let count = |severity: Severity| {
        report
            .findings
            .iter()
            .filter(|finding| finding.severity == severity)
            .count()
    };
    let total = report.findings.len();
    format!(
        "{total} finding{}: {} critical, {} warning, {} info.",
        if total == 1 { "" } else { "s" },
        count(Severity::Critical),
        count(Severity::Warning),
        count(Severity::Info),
    )
}

/// One cell of a finding's table of measures.
struct Cell {
    heading: &'static str,
    text: String,
    /// Right-aligned.
    numeric: bool,
}

/// A finding's table row: measure, current, baseline, effect, p, q, test, severity.
fn measure_cells(finding: &Finding) -> [Cell; 8] {
    let cell = |heading, text, numeric| Cell {
        heading,
        text,
        numeric,
    };
    [
        cell("measure", finding.measure.clone(), false),
        cell(
            "current",
            measure_value(&finding.measure, finding.current),
            true,
        ),
        cell(
            "baseline",
            measure_value(&finding.measure, finding.baseline),
            true,
        ),
        cell("effect", effect_text(finding), true),
        cell("p", probability(finding.p_value), true),
        cell("q", probability(finding.q_value), true),
        cell(
            "test",
            finding.test.clone().unwrap_or_else(|| DASH.to_string()),
            false,
        ),
        cell(
            "severity",
            severity_name(finding.severity).to_string(),
            false,
        ),
    ]
}

/// `latency · service.name=checkout, name=GET /cart`
fn finding_title(finding: &Finding) -> String {
    let group = if finding.group.is_empty() {
        "all spans".to_string()
    } else {
        finding
            .group
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{} · {group}", kind_name(finding.kind))
}

/// How an error message names a finding: its number in the report and its title.
fn finding_name(number: usize, finding: &Finding) -> String {
    format!("#{number} ({})", finding_title(finding))
}

fn kind_name(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::Latency => "latency",
        FindingKind::Errors => "error rate",
        FindingKind::Traffic => "traffic",
        FindingKind::NewError => "new error",
        FindingKind::NewAttributeValue => "new attribute value",
        FindingKind::Disappeared => "disappeared",
    }
}

/// The severity as the JSON spells it.
fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// The status as the JSON spells it.
fn status_name(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Ok => "ok",
        ReportStatus::NoData => "no_data",
    }
}

/// `2024-05-01T11:00:00Z .. 2024-05-01T12:00:00Z (1h0m0s)`
fn window_text(window: &Window) -> String {
    let length = u64::try_from(window.end_ns.saturating_sub(window.start_ns)).unwrap_or(0);
    let length = Duration::from_nanos(length);
    format!(
        "{} .. {} ({})",
        rfc3339(window.start_ns),
        rfc3339(window.end_ns),
        go_duration(length)
    )
}

fn thresholds_text(thresholds: &Thresholds) -> String {
    format!(
        "min_requests {}, max_q {}, min_ratio {}, min_error_rate_delta {}",
        thresholds.min_requests,
        thresholds.max_q,
        thresholds.min_ratio,
        thresholds.min_error_rate_delta
    )
}

/// Unix nanoseconds as RFC 3339 in UTC, fractional seconds only when there are some.
fn rfc3339(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A measure's value with its unit: `error_rate` is a share shown in percent, `*_ms` a
/// duration, `*_per_s` a rate, anything else a count.
fn measure_value(measure: &str, value: f64) -> String {
    if measure == "error_rate" {
        format!("{} %", short_number(value * 100.0))
    } else if measure.ends_with("_ms") {
        duration_ms(value)
    } else if measure.ends_with("_per_s") {
        format!("{}/s", short_number(value))
    } else {
        short_number(value)
    }
}

/// An effect: a difference in percentage points for error rates (current − baseline), a
/// factor for everything else (current / baseline).
fn effect_text(finding: &Finding) -> String {
    match finding.effect {
        None => DASH.to_string(),
        Some(delta) if finding.kind == FindingKind::Errors => {
            let sign = if delta < 0.0 { "-" } else { "+" };
            format!("{sign}{} pp", short_number(delta.abs() * 100.0))
        }
        Some(factor) => format!("×{}", short_number(factor)),
    }
}

/// A p- or q-value: scientific below 0.001, where the digits that matter are the exponent's.
fn probability(value: Option<f64>) -> String {
    match value {
        None => DASH.to_string(),
        Some(value) if value < 1e-3 => format!("{value:.1e}"),
        Some(value) => short_number(value),
    }
}

/// Milliseconds as `0.25 ms`, `480 ms` or `1.5 s`.
fn duration_ms(ms: f64) -> String {
    if ms.abs() >= 1000.0 {
        format!("{} s", short_number(ms / 1000.0))
    } else {
        format!("{} ms", short_number(ms))
    }
}

/// About three significant digits, without trailing zeros: `0.0123`, `4.5`, `480`, `12345`.
fn short_number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    if !value.is_finite() {
        return value.to_string();
    }
    if value.abs() < 1e-3 {
        return format!("{value:.2e}");
    }
    let decimals = (2 - value.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Whether an exemplar link may become a hyperlink: web and same-site links only, never
/// `javascript:` or `data:`.
fn is_web_link(link: &str) -> bool {
    let lower = link.trim_start().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with('/')
}

// ---------------------------------------------------------------------------------------------
// Markdown

fn markdown_finding(number: usize, finding: &Finding) -> String {
    let mut out = format!(
        "## {number}. {}: {}\n\n{}\n\n",
        severity_name(finding.severity).to_uppercase(),
        md_text(&finding_title(finding)),
        md_text(&finding.summary)
    );
    let cells = measure_cells(finding);
    let row = |texts: Vec<String>| format!("| {} |\n", texts.join(" | "));
    out.push_str(&row(cells
        .iter()
        .map(|cell| cell.heading.to_string())
        .collect()));
    out.push_str(&row(cells
        .iter()
        .map(|cell| (if cell.numeric { "---:" } else { "---" }).to_string())
        .collect()));
    out.push_str(&row(cells.iter().map(|cell| md_text(&cell.text)).collect()));
    if let Some(detail) = &finding.detail {
        out.push_str(&format!("\n**Detail:** {}\n", md_text(detail)));
    }
    if !finding.exemplars.is_empty() {
        out.push_str("\nExemplar traces:\n\n");
        for exemplar in &finding.exemplars {
            let id = md_text(&exemplar.trace_id);
            let shown = match exemplar.link.as_deref().filter(|link| is_web_link(link)) {
                Some(link) => format!("[{id}](<{}>)", md_destination(link)),
                None => id,
            };
            out.push_str(&format!(
                "- {shown}: {}, {}\n",
                md_text(&exemplar.why),
                duration_ms(exemplar.duration_ms)
            ));
        }
    }
    out
}

/// Text that Markdown shows as written: HTML and Markdown syntax escaped, one line, safe in a
/// table cell.
fn md_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A link for a `<…>` Markdown destination, which may hold neither angle brackets nor line
/// breaks.
fn md_destination(link: &str) -> String {
    link.chars()
        .filter(|c| *c != '\n' && *c != '\r')
        .map(|c| match c {
            '<' => "%3C".to_string(),
            '>' => "%3E".to_string(),
            ' ' => "%20".to_string(),
            c => c.to_string(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTML

fn html_finding(report: &Report, number: usize, finding: &Finding) -> Result<String, RenderError> {
    let severity = severity_name(finding.severity);
    let mut out = format!(
        "<section class=\"finding\" id=\"finding-{number}\" data-severity=\"{severity}\">\n\
         <h2>{number}. {}: {}</h2>\n<p class=\"summary\">{}</p>\n",
        severity.to_uppercase(),
        html_text(&finding_title(finding)),
        html_text(&finding.summary)
    );
    let cells = measure_cells(finding);
    out.push_str("<table>\n<thead><tr>");
    for cell in &cells {
        out.push_str(&format!("<th>{}</th>", html_text(cell.heading)));
    }
    out.push_str("</tr></thead>\n<tbody><tr>");
    for cell in &cells {
        let class = if cell.numeric {
            " class=\"number\""
        } else {
            ""
        };
        out.push_str(&format!("<td{class}>{}</td>", html_text(&cell.text)));
    }
    out.push_str("</tr></tbody>\n</table>\n");
    if let Some(detail) = &finding.detail {
        out.push_str(&format!(
            "<p class=\"detail\"><strong>Detail:</strong> {}</p>\n",
            html_text(detail)
        ));
    }

    let chart_error = |chart: &'static str| {
        move |error: DrawError| RenderError::Chart {
            finding: finding_name(number, finding),
            chart,
            message: error.to_string(),
        }
    };
    if let Some(series) = &finding.series {
        let label = format!("{} over time, baseline and current window", finding.measure);
        let svg =
            series_svg(report, &finding.measure, series).map_err(chart_error("time series"))?;
        out.push_str(&figure(&svg, &label));
    }
    if let Some(distribution) = &finding.distribution {
        let histogram =
            Histogram::of(distribution).map_err(|reason| RenderError::Distribution {
                finding: finding_name(number, finding),
                reason,
            })?;
        let svg = distribution_svg(&histogram).map_err(chart_error("latency distribution"))?;
        out.push_str(&figure(
            &svg,
            "latency distribution, baseline and current window",
        ));
    }

    if !finding.exemplars.is_empty() {
        out.push_str("<h3>Exemplar traces</h3>\n<ul class=\"exemplars\">\n");
        for exemplar in &finding.exemplars {
            let id = html_text(&exemplar.trace_id);
            let shown = match exemplar.link.as_deref().filter(|link| is_web_link(link)) {
                Some(link) => format!(
                    "<a href=\"{}\" rel=\"noreferrer\">{id}</a>",
                    html_text(link)
                ),
                None => id,
            };
            out.push_str(&format!(
                "<li>{shown}: {}, {}</li>\n",
                html_text(&exemplar.why),
                html_text(&duration_ms(exemplar.duration_ms))
            ));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
    Ok(out)
}

/// A chart in a `<figure>`, its root element marked `class="chart"` and labelled for screen
/// readers.
fn figure(svg: &str, label: &str) -> String {
    let attributes = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" ",
        html_text(label)
    );
    format!(
        "<figure>\n{}</figure>\n",
        svg.replacen("<svg ", &attributes, 1)
    )
}

/// Text safe in HTML content and in quoted attribute values.
fn html_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Charts

/// Every chart's size in pixels.
const CHART_SIZE: (u32, u32) = (720, 260);
/// A generic family, so that no font has to be found or embedded (see the module docs).
const FONT: &str = "sans-serif";
const CAPTION_SIZE: u32 = 16;
const LABEL_SIZE: u32 = 13;
const BASELINE_COLOUR: RGBColor = RGBColor(140, 140, 140);
const CURRENT_COLOUR: RGBColor = RGBColor(29, 78, 216);

/// What plotters' SVG backend fails with.
type DrawError = DrawingAreaErrorKind<std::io::Error>;

/// Draws one chart of [`CHART_SIZE`] on a white background and returns its `<svg>` element.
fn svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), DrawError>,
) -> Result<String, DrawError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// A legend entry's sample: a short line in the series' colour.
fn legend_line(colour: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
}

/// A chart's value axis: from 0 (or the lowest value, when negative) to a tenth above the
/// highest value.
fn value_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|value| value.is_finite())
        .fold((0.0_f64, 0.0_f64), |(low, high), value| {
            (low.min(value), high.max(value))
        });
    let pad = (high - low) / 10.0;
    if pad > 0.0 {
        (if low < 0.0 { low - pad } else { 0.0 }, high + pad)
    } else {
        (low, low + 1.0)
    }
}

/// A finding's measure over both windows on one UTC time axis, baseline grey, current in
/// colour, the current window shaded. Each value is drawn at the middle of its bucket.
fn series_svg(report: &Report, measure: &str, series: &Series) -> Result<String, DrawError> {
    let half_bucket = series.bucket_ns.max(0) / 2;
    let line = |points: &[(i64, f64)]| -> Vec<(i64, f64)> {
        points
            .iter()
            .filter(|(_, value)| value.is_finite())
            .map(|&(start, value)| (start.saturating_add(half_bucket), value))
            .collect()
    };
    let (baseline, current) = (line(&series.baseline), line(&series.current));
    let (low, high) = value_range(baseline.iter().chain(&current).map(|&(_, value)| value));

    let mut start = report.baseline.start_ns.min(report.current.start_ns);
    let mut end = report.baseline.end_ns.max(report.current.end_ns);
    for &(time, _) in baseline.iter().chain(&current) {
        start = start.min(time.saturating_sub(half_bucket));
        end = end.max(time.saturating_add(half_bucket));
    }
    let axis = TimeAxis::covering(start, end);
    let shaded = [
        (report.current.start_ns, low),
        (report.current.end_ns, high),
    ];

    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{measure}: baseline and current"),
                (FONT, CAPTION_SIZE),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(72)
            .build_cartesian_2d(
                (axis.start..axis.end).with_key_points(axis.ticks.clone()),
                low..high,
            )?;
        chart
            .configure_mesh()
            .label_style((FONT, LABEL_SIZE))
            .x_label_formatter(&|ns: &i64| axis.label(*ns))
            .y_label_formatter(&|value: &f64| measure_value(measure, *value))
            .x_desc(axis.description())
            .y_desc(measure)
            .draw()?;
        chart.draw_series(iter::once(Rectangle::new(
            shaded,
            CURRENT_COLOUR.mix(0.07).filled(),
        )))?;
        chart
            .draw_series(LineSeries::new(baseline, BASELINE_COLOUR.stroke_width(2)))?
            .label("baseline")
            .legend(legend_line(BASELINE_COLOUR));
        chart
            .draw_series(LineSeries::new(current, CURRENT_COLOUR.stroke_width(2)))?
            .label("current")
            .legend(legend_line(CURRENT_COLOUR));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, LABEL_SIZE))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

/// The x axis of a time-series chart: Unix nanoseconds with ticks on round UTC times.
struct TimeAxis {
    start: i64,
    end: i64,
    step: i64,
    ticks: Vec<i64>,
    /// The UTC date of the whole axis, when it lies within one day.
    date: Option<NaiveDate>,
}

impl TimeAxis {
    /// Tick spacings, in seconds, from which the first giving at most [`Self::MAX_TICKS`] is
    /// taken; every one divides a day, so ticks fall on the same times each day.
    const STEPS_S: [i64; 18] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200,
        86_400,
    ];
    const MAX_TICKS: i64 = 8;
    const DAY: i64 = 86_400 * NANOS_PER_SECOND;

    fn covering(start: i64, end: i64) -> Self {
        let end = if end > start {
            end
        } else {
            start.saturating_add(NANOS_PER_SECOND)
        };
        let span = end.saturating_sub(start);
        let step = Self::STEPS_S
            .iter()
            .map(|seconds| seconds * NANOS_PER_SECOND)
            .find(|step| span / step <= Self::MAX_TICKS)
            .unwrap_or_else(|| Self::DAY * (span / Self::DAY / Self::MAX_TICKS + 1));
        let first = start.saturating_add(step - 1).div_euclid(step) * step;
        let ticks = iter::successors(Some(first), |tick| tick.checked_add(step))
            .take_while(|tick| *tick <= end)
            .collect();
        let day = |ns: i64| DateTime::from_timestamp_nanos(ns).date_naive();
        let date = (day(start) == day(end - 1)).then(|| day(start));
        Self {
            start,
            end,
            step,
            ticks,
            date,
        }
    }

    fn label(&self, ns: i64) -> String {
        let format = if self.step % Self::DAY == 0 {
            "%m-%d"
        } else if self.step < 60 * NANOS_PER_SECOND {
            "%H:%M:%S"
        } else if self.date.is_some() {
            "%H:%M"
        } else {
            "%m-%d %H:%M"
        };
        DateTime::from_timestamp_nanos(ns)
            .format(format)
            .to_string()
    }

    fn description(&self) -> String {
        match self.date {
            Some(date) => format!("time (UTC, {date})"),
            None => "time (UTC)".to_string(),
        }
    }
}

/// A latency distribution ready to draw: bucket edges in milliseconds, all above 0 so that
/// they fit a log axis, and each window's share per bucket.
struct Histogram {
    /// `edges[i]..edges[i + 1]` is bucket `i`.
    edges: Vec<f64>,
    current: Vec<f64>,
    baseline: Vec<f64>,
}

impl Histogram {
    /// Checks a distribution and fits it to a log axis: buckets ending at or below 0 ms join
    /// the first bucket above, whose lower edge is guessed with its upper neighbour's ratio.
    fn of(distribution: &Distribution) -> Result<Self, String> {
        let upper = &distribution.upper_ms;
        if upper.is_empty() {
            return Err("it has no bucket".to_string());
        }
        if distribution.current.len() != upper.len() || distribution.baseline.len() != upper.len() {
            return Err(format!(
                "upper_ms has {} buckets, current {} and baseline {}",
                upper.len(),
                distribution.current.len(),
                distribution.baseline.len()
            ));
        }
        if upper.iter().any(|bound| !bound.is_finite()) || upper.windows(2).any(|w| w[0] >= w[1]) {
            return Err("upper_ms is not finite and increasing".to_string());
        }
        let first = upper
            .iter()
            .position(|bound| *bound > 0.0)
            .ok_or_else(|| "no bucket ends above 0 ms".to_string())?;
        let upper = &upper[first..];
        let lowest = match upper.get(1) {
            Some(next) => upper[0] * upper[0] / next,
            None => upper[0] / 2.0,
        };
        let shares = |all: &[f64]| {
            let share = |value: &f64| {
                if value.is_finite() && *value > 0.0 {
                    *value
                } else {
                    0.0
                }
            };
            let mut kept: Vec<f64> = all[first..].iter().map(share).collect();
            kept[0] += all[..first].iter().map(share).sum::<f64>();
            kept
        };
        Ok(Self {
            edges: iter::once(lowest).chain(upper.iter().copied()).collect(),
            current: shares(&distribution.current),
            baseline: shares(&distribution.baseline),
        })
    }

    /// The outline of one window's bars as a closed step line along the axis.
    fn outline(&self, shares: &[f64]) -> Vec<(f64, f64)> {
        let mut points = vec![(self.edges[0], 0.0)];
        for (bucket, share) in shares.iter().enumerate() {
            points.push((self.edges[bucket], *share));
            points.push((self.edges[bucket + 1], *share));
        }
        points.push((self.edges[self.edges.len() - 1], 0.0));
        points
    }

    /// Ticks at 1, 2 and 5 times powers of ten, or only the powers when the axis spans more
    /// than three decades; the ends of the axis when no such tick falls inside.
    fn ticks(&self) -> Vec<f64> {
        let (low, high) = (self.edges[0], self.edges[self.edges.len() - 1]);
        let first_decade = low.log10().floor() as i32;
        let last_decade = high.log10().floor() as i32;
        let multiples: &[f64] = if last_decade - first_decade > 3 {
            &[1.0]
        } else {
            &[1.0, 2.0, 5.0]
        };
        let ticks: Vec<f64> = (first_decade..=last_decade)
            .flat_map(|decade| multiples.iter().map(move |m| m * 10f64.powi(decade)))
            .filter(|tick| (low..=high).contains(tick))
            .collect();
        if ticks.len() < 2 {
            vec![low, high]
        } else {
            ticks
        }
    }
}

/// Both windows' latency distributions overlaid on a log-scaled millisecond axis: the baseline
/// as grey filled steps, the current window as a coloured step line.
fn distribution_svg(histogram: &Histogram) -> Result<String, DrawError> {
    let (low, high) = (
        histogram.edges[0],
        histogram.edges[histogram.edges.len() - 1],
    );
    let (_, top) = value_range(histogram.current.iter().chain(&histogram.baseline).copied());
    let baseline = histogram.outline(&histogram.baseline);
    let current = histogram.outline(&histogram.current);
    let ticks = histogram.ticks();

    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "latency distribution: share of spans per bucket",
                (FONT, CAPTION_SIZE),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(72)
            .build_cartesian_2d((low..high).log_scale().with_key_points(ticks), 0.0..top)?;
        chart
            .configure_mesh()
            .label_style((FONT, LABEL_SIZE))
            .x_label_formatter(&|ms: &f64| duration_ms(*ms))
            .y_label_formatter(&|share: &f64| format!("{} %", short_number(*share * 100.0)))
            .x_desc("span duration (log scale)")
            .y_desc("share of spans")
            .draw()?;
        chart.draw_series(iter::once(Polygon::new(
            baseline.clone(),
            BASELINE_COLOUR.mix(0.25).filled(),
        )))?;
        chart
            .draw_series(LineSeries::new(baseline, BASELINE_COLOUR.stroke_width(2)))?
            .label("baseline")
            .legend(legend_line(BASELINE_COLOUR));
        chart
            .draw_series(LineSeries::new(current, CURRENT_COLOUR.stroke_width(2)))?
            .label("current")
            .legend(legend_line(CURRENT_COLOUR));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, LABEL_SIZE))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::model::{Direction, Exemplar, SCHEMA_VERSION};

    const HOUR: i64 = 3_600 * NANOS_PER_SECOND;
    /// 2024-05-01T12:00:00Z
    const NOW: i64 = 1_714_564_800 * NANOS_PER_SECOND;
    const LINK: &str = "https://traces.example.com/trace/4bf92f3577b34da6a3ce929d0e0e4736";

    fn finding(kind: FindingKind, service: &str, measure: &str, severity: Severity) -> Finding {
        Finding {
            kind,
            group: BTreeMap::from([
                ("service.name".to_string(), service.to_string()),
                ("name".to_string(), "GET /cart".to_string()),
            ]),
            measure: measure.to_string(),
            direction: Direction::Up,
            current: 0.0,
            baseline: 0.0,
            effect: None,
            p_value: None,
            q_value: None,
            test: None,
            severity,
            summary: String::new(),
            detail: None,
            exemplars: Vec::new(),
            series: None,
            distribution: None,
        }
    }

    /// Five-minute buckets: a baseline day, then the current hour. (Constant values, so that
    /// the JSON test compares floats that read back exactly.)
    fn series(baseline: f64, current: f64) -> Series {
        let bucket = 300 * NANOS_PER_SECOND;
        Series {
            bucket_ns: bucket,
            baseline: (0..288)
                .map(|i| (NOW - 25 * HOUR + i * bucket, baseline))
                .collect(),
            current: (0..12)
                .map(|i| (NOW - HOUR + i * bucket, current))
                .collect(),
        }
    }

    /// A critical latency finding with both charts, a warning error-rate finding with a time
    /// series, and a new status message, with no chart, whose service name is a script.
    fn report() -> Report {
        let mut latency = finding(
            FindingKind::Latency,
            "checkout",
            "p99_ms",
            Severity::Critical,
        );
        latency.current = 480.0;
        latency.baseline = 120.0;
        latency.effect = Some(4.0);
        latency.p_value = Some(1.5e-8);
        latency.q_value = Some(3e-7);
        latency.test = Some("rank_sum".to_string());
        latency.summary = "p99 latency of checkout rose from 120 ms to 480 ms".to_string();
        latency.exemplars = vec![Exemplar {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
            why: "slowest".to_string(),
            duration_ms: 1250.0,
            link: Some(LINK.to_string()),
        }];
        latency.series = Some(series(120.0, 400.0));
        latency.distribution = Some(Distribution {
            upper_ms: vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            baseline: vec![0.0, 0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05, 0.0, 0.0],
            current: vec![0.0, 0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.15, 0.1, 0.05],
        });

        let mut errors = finding(FindingKind::Errors, "cart", "error_rate", Severity::Warning);
        errors.current = 0.05;
        errors.baseline = 0.01;
        errors.effect = Some(0.04);
        errors.p_value = Some(0.0004);
        errors.q_value = Some(0.002);
        errors.test = Some("two_proportion_z".to_string());
        errors.summary = "error rate of cart rose from 1 % to 5 %".to_string();
        errors.exemplars = vec![Exemplar {
            trace_id: "0af7651916cd43dd8448eb211c80319c".to_string(),
            why: "errored".to_string(),
            duration_ms: 35.0,
            link: None,
        }];
        errors.series = Some(series(0.01, 0.05));

        let mut new_error = finding(
            FindingKind::NewError,
            "<script>alert(1)</script>",
            "error_count",
            Severity::Info,
        );
        new_error.direction = Direction::New;
        new_error.current = 17.0;
        new_error.summary = "a new status message appeared".to_string();
        new_error.detail = Some("status message: connection refused".to_string());

        Report {
            schema_version: SCHEMA_VERSION,
            tenant: "acme".to_string(),
            generated_at: "2024-05-01T12:00:05Z".to_string(),
            current: Window {
                start_ns: NOW - HOUR,
                end_ns: NOW,
            },
            baseline: Window {
                start_ns: NOW - 25 * HOUR,
                end_ns: NOW - HOUR,
            },
            filter: Some("{ span.http.method = \"GET\" }".to_string()),
            group_by: vec!["service.name".to_string(), "name".to_string()],
            thresholds: Thresholds::default(),
            status: ReportStatus::Ok,
            groups_compared: 12,
            tests_run: 60,
            findings: vec![latency, errors, new_error],
        }
    }

    /// The part of `html` that belongs to each finding's section, in order.
    fn sections(html: &str) -> Vec<&str> {
        html.split("<section class=\"finding\"").skip(1).collect()
    }

    #[test]
    fn json_is_the_model_schema_and_reads_back_as_the_same_report() {
        let report = report();
        let text = json(&report);
        assert!(text.contains("\n  \"schema_version\": 1,"), "{text}");
        let read: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(read, report);
    }

    #[test]
    fn markdown_names_every_finding_and_its_q_value() {
        let markdown = markdown(&report());
        assert!(
            markdown.contains("## 1. CRITICAL: latency · name=GET /cart, service.name=checkout")
        );
        assert!(markdown.contains("p99 latency of checkout rose from 120 ms to 480 ms"));
        assert!(markdown.contains("| 3.0e-7 |"), "{markdown}");
        assert!(markdown.contains("## 2. WARNING: error rate"));
        assert!(markdown.contains("| 0.002 |"), "{markdown}");
        assert!(markdown.contains("## 3. INFO: new error"));
        assert!(markdown.contains("**Detail:** status message: connection refused"));
    }

    #[test]
    fn markdown_states_the_header_facts() {
        let markdown = markdown(&report());
        for fact in [
            "- **Tenant:** acme",
            "- **Current window:** 2024-05-01T11:00:00Z .. 2024-05-01T12:00:00Z (1h0m0s)",
            "- **Baseline window:** 2024-04-30T11:00:00Z .. 2024-05-01T11:00:00Z (24h0m0s)",
            "- **Group by:** service.name, name",
            "- **Status:** ok",
            "- **Groups compared:** 12",
            "- **Tests run:** 60",
            "min\\_ratio 1.25",
            "3 findings: 1 critical, 1 warning, 1 info.",
        ] {
            assert!(markdown.contains(fact), "{fact:?} missing from\n{markdown}");
        }
    }

    #[test]
    fn markdown_links_exemplars_that_have_a_link() {
        let markdown = markdown(&report());
        assert!(markdown.contains(&format!(
            "- [4bf92f3577b34da6a3ce929d0e0e4736](<{LINK}>): slowest, 1.25 s"
        )));
        assert!(markdown.contains("- 0af7651916cd43dd8448eb211c80319c: errored, 35 ms"));
    }

    #[test]
    fn markdown_says_plainly_when_nothing_was_found() {
        let mut report = report();
        report.findings.clear();
        assert!(markdown(&report).contains("\nNo findings: "));
    }

    #[test]
    fn markdown_says_plainly_when_a_window_had_no_data() {
        let mut report = report();
        report.findings.clear();
        report.status = ReportStatus::NoData;
        assert!(markdown(&report).contains("\nNo data in the current or baseline window"));
    }

    #[test]
    fn html_has_one_finding_section_per_finding() {
        let html = html(&report()).unwrap();
        assert_eq!(html.matches("class=\"finding\"").count(), 3);
        assert!(sections(&html)[0].contains("data-severity=\"critical\""));
    }

    #[test]
    fn html_draws_one_chart_per_series_and_one_per_distribution() {
        let html = html(&report()).unwrap();
        assert_eq!(html.matches("<svg").count(), 3);
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 3);
        let sections = sections(&html);
        assert_eq!(sections[0].matches("<svg").count(), 2);
        assert_eq!(sections[1].matches("<svg").count(), 1);
    }

    #[test]
    fn html_gives_a_finding_without_series_its_table() {
        let html = html(&report()).unwrap();
        let third = sections(&html)[2];
        assert!(third.contains("<table>"));
        assert!(third.contains("<td class=\"number\">17</td>"), "{third}");
        assert!(!third.contains("<svg"));
    }

    #[test]
    fn html_charts_label_their_axes_in_utc_without_a_font_file() {
        let html = html(&report()).unwrap();
        let first = sections(&html)[0];
        assert!(first.contains("<text"), "{first}");
        assert!(first.contains("05-01 06:00"), "{first}");
        assert!(first.contains("time (UTC)"));
        assert!(first.contains("100 ms"), "{first}");
    }

    #[test]
    fn html_loads_no_external_resource() {
        let html = html(&report()).unwrap();
        let rest = html
            .replace("xmlns=\"http://www.w3.org/2000/svg\"", "")
            .replace(&format!("href=\"{}\"", html_text(LINK)), "");
        assert!(
            !rest.contains("http://") && !rest.contains("https://"),
            "{rest}"
        );
        for forbidden in ["<script", "<link", "<img", "url(", "@import", "@font-face"] {
            assert!(!rest.contains(forbidden), "{forbidden} in\n{rest}");
        }
    }

    #[test]
    fn html_escapes_a_script_in_a_group_value() {
        let html = html(&report()).unwrap();
        assert!(!html.contains("<script"));
        assert!(html.contains("service.name=&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn html_links_only_web_addresses() {
        let mut report = report();
        report.findings[0].exemplars[0].link = Some("javascript:alert(1)".to_string());
        let html = html(&report).unwrap();
        assert!(!html.contains("javascript:"));
        assert!(html.contains("<li>4bf92f3577b34da6a3ce929d0e0e4736: slowest"));
    }

    #[test]
    fn a_distribution_with_a_share_per_bucket_missing_names_the_finding() {
        let mut report = report();
        if let Some(distribution) = &mut report.findings[0].distribution {
            distribution.current.pop();
        }
        match html(&report) {
            Err(RenderError::Distribution { finding, .. }) => assert!(finding.starts_with("#1 ")),
            other => panic!("expected a distribution error, got {other:?}"),
        }
    }

    #[test]
    fn numbers_read_with_their_units() {
        assert_eq!(measure_value("p99_ms", 480.0), "480 ms");
        assert_eq!(measure_value("p50_ms", 1250.0), "1.25 s");
        assert_eq!(measure_value("error_rate", 0.0123), "1.23 %");
        assert_eq!(measure_value("rate_per_s", 12.5), "12.5/s");
        assert_eq!(probability(Some(3e-7)), "3.0e-7");
        assert_eq!(probability(Some(0.0123)), "0.0123");
        assert_eq!(probability(None), DASH);
    }
}
