//! Deterministic synthetic telemetry: a small shop of services calling each other over HTTP,
//! gRPC, a database and a queue. Traces carry typed attributes, errors, events and links;
//! [`Generator::logs_for`] writes the log records those services would write inside the spans
//! of a trace, and [`MetricsAggregator`] turns the traces into the RED metrics (requests,
//! errors, durations) their SDKs would export, with exemplars pointing back at the spans.
//!
//! Traces come in two [`TraceShape`]s: the small shop the tests are written against, about four
//! spans a request, and a wide one, about fourteen spans a request across ten services, Redis
//! and PostgreSQL, which the search benchmark runs its queries on.
//!
//! The same seed and start times give byte-identical telemetry on every machine: the
//! generator uses its own SplitMix64 streams rather than a library RNG whose algorithm may
//! change. Logs draw from a stream of their own, so asking for them leaves a seed's traces
//! unchanged.
//!
//! [`Injection`]s plant known anomalies, so that tests can compare a baseline window with a
//! current one: slower spans, failing servers, more or less traffic through a service, each
//! from a given time on. Their draws come from a third stream: a generator without injections
//! makes exactly the traces it always made, and one with injections changes only what they
//! touch.

use std::collections::BTreeMap;
use std::str::FromStr;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// SplitMix64: tiny, fast and fully specified.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A uniform draw from [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A trace or span id of `bytes` bytes, never all zero.
    fn id(&mut self, bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes);
        while out.len() < bytes {
            out.extend_from_slice(&self.next().to_be_bytes());
        }
        out.truncate(bytes);
        if out.iter().all(|b| *b == 0) {
            out[bytes - 1] = 1;
        }
        out
    }
}

/// Generates traces, and the logs written inside them, from a seed, with the faults of its
/// injections.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    /// Draws for logs, apart from `rng` so that traces do not depend on whether logs are made.
    log_rng: Rng,
    /// Draws for injections, apart from `rng` so that injecting leaves the rest of a trace as
    /// it was.
    inject_rng: Rng,
    injections: Vec<Injection>,
    shape: TraceShape,
    /// The last producer span, linked from the next queue consumer.
    last_producer: Option<(Vec<u8>, Vec<u8>)>,
}

/// What the generated traces look like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceShape {
    /// Small web-shop requests, about 4 spans each: the traces the tests are written against.
    #[default]
    Shop,
    /// A richer microservice shop, about 14 spans each: the search benchmark's dataset.
    Wide,
}

/// Mixed into the seed of the log stream.
const LOG_STREAM: u64 = 0x6c6f_6773_2d67_656e;
/// Mixed into the seed of the injection stream.
const INJECT_STREAM: u64 = 0x696e_6a65_6374_696f;

/// A fault the generator injects into the traces it makes.
///
/// Whether an injection applies is decided per trace, by the trace's start time. Parse one
/// from text (the syntax of `--inject`, see its `FromStr`) to have its values checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// Spans of `service` named `operation` (every operation when None) take `factor` times as
    /// long, from `from_ns` on. Their own time grows, so the spans enclosing them grow by as
    /// much.
    Latency {
        service: String,
        operation: Option<String>,
        factor: f64,
        from_ns: i64,
    },
    /// Server (and queue consumer) spans of `service` fail with probability `rate` from
    /// `from_ns` on, with status message [`INJECTED_ERROR_MESSAGE`] and span attribute
    /// `error.type` = [`INJECTED_ERROR_TYPE`], in place of any error of their own. Their
    /// callers carry on as before.
    Errors {
        service: String,
        rate: f64,
        from_ns: i64,
    },
    /// Traces through `service` are sent `factor` times as often from `from_ns` on (0.5 halves
    /// them, 3 triples them).
    Traffic {
        service: String,
        factor: f64,
        from_ns: i64,
    },
}

/// The status message of a span failed by [`Injection::Errors`].
pub const INJECTED_ERROR_MESSAGE: &str = "injected: upstream unavailable";
/// The `error.type` attribute of a span failed by [`Injection::Errors`].
pub const INJECTED_ERROR_TYPE: &str = "InjectedFault";

impl Injection {
    /// Whether the injection applies to a trace starting at `start_ns`.
    fn applies_at(&self, start_ns: i64) -> bool {
        let from_ns = match self {
            Injection::Latency { from_ns, .. }
            | Injection::Errors { from_ns, .. }
            | Injection::Traffic { from_ns, .. } => *from_ns,
        };
        start_ns >= from_ns
    }
}

/// Why the text of an injection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectionError {
    /// The part before `:` is no kind of injection.
    #[error("unknown injection kind `{0}`: use latency, errors or traffic")]
    UnknownKind(String),
    /// A field without `=` or without a value.
    #[error("expected key=value in {kind} injection, got `{part}`")]
    NotKeyValue { kind: &'static str, part: String },
    /// A key the kind does not take.
    #[error("unknown key `{key}` in {kind} injection: use {accepted}")]
    UnknownKey {
        kind: &'static str,
        key: String,
        accepted: String,
    },
    /// A key given twice.
    #[error("{key}= given twice in {kind} injection")]
    Repeated { kind: &'static str, key: String },
    /// A key the kind needs is not there.
    #[error("missing {key}= in {kind} injection")]
    Missing {
        kind: &'static str,
        key: &'static str,
    },
    /// `factor` is not a finite number above zero.
    #[error("factor must be a positive number, got `{0}`")]
    Factor(String),
    /// `rate` is not a number from 0 to 1.
    #[error("rate must be between 0 and 1, got `{0}`")]
    Rate(String),
    /// `from` is no time.
    #[error(
        "from must be Unix nanoseconds or an RFC 3339 time such as 2024-05-01T12:00:00Z, got `{0}`"
    )]
    Time(String),
}

impl FromStr for Injection {
    type Err = InjectionError;

    /// Reads `kind:key=value,...`, as the `--inject` flag takes it:
    ///
    /// - `latency:service=S[,op=O],factor=F[,from=T]`
    /// - `errors:service=S,rate=R[,from=T]`
    /// - `traffic:service=S,factor=F[,from=T]`
    ///
    /// A factor is a finite number above 0, a rate one from 0 to 1, and `T` Unix nanoseconds or
    /// an RFC 3339 time; without `from` the injection applies to every trace.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, body) = text.split_once(':').unwrap_or((text, ""));
        match kind.trim() {
            "latency" => {
                let fields = Fields::parse("latency", body, &["service", "op", "factor", "from"])?;
                Ok(Injection::Latency {
                    service: fields.service()?,
                    operation: fields.get("op").map(str::to_string),
                    factor: fields.factor()?,
                    from_ns: fields.start_ns()?,
                })
            }
            "errors" => {
                let fields = Fields::parse("errors", body, &["service", "rate", "from"])?;
                Ok(Injection::Errors {
                    service: fields.service()?,
                    rate: fields.rate()?,
                    from_ns: fields.start_ns()?,
                })
            }
            "traffic" => {
                let fields = Fields::parse("traffic", body, &["service", "factor", "from"])?;
                Ok(Injection::Traffic {
                    service: fields.service()?,
                    factor: fields.factor()?,
                    from_ns: fields.start_ns()?,
                })
            }
            other => Err(InjectionError::UnknownKind(other.to_string())),
        }
    }
}

/// The `key=value` fields of an injection's text, each key one its kind takes.
struct Fields<'a> {
    kind: &'static str,
    values: BTreeMap<&'a str, &'a str>,
}

impl<'a> Fields<'a> {
    /// Reads the comma-separated fields of a `kind` injection, refusing keys not in `keys`.
    fn parse(kind: &'static str, text: &'a str, keys: &[&str]) -> Result<Self, InjectionError> {
        let mut values = BTreeMap::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let Some((key, value)) = part
                .split_once('=')
                .map(|(key, value)| (key.trim(), value.trim()))
                .filter(|(key, value)| !key.is_empty() && !value.is_empty())
            else {
                return Err(InjectionError::NotKeyValue {
                    kind,
                    part: part.to_string(),
                });
            };
            if !keys.contains(&key) {
                return Err(InjectionError::UnknownKey {
                    kind,
                    key: key.to_string(),
                    accepted: keys.join(", "),
                });
            }
            if values.insert(key, value).is_some() {
                return Err(InjectionError::Repeated {
                    kind,
                    key: key.to_string(),
                });
            }
        }
        Ok(Self { kind, values })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.values.get(key).copied()
    }

    fn required(&self, key: &'static str) -> Result<&'a str, InjectionError> {
        self.get(key).ok_or(InjectionError::Missing {
            kind: self.kind,
            key,
        })
    }

    fn service(&self) -> Result<String, InjectionError> {
        Ok(self.required("service")?.to_string())
    }

    fn factor(&self) -> Result<f64, InjectionError> {
        let text = self.required("factor")?;
        text.parse::<f64>()
            .ok()
            .filter(|factor| factor.is_finite() && *factor > 0.0)
            .ok_or_else(|| InjectionError::Factor(text.to_string()))
    }

    fn rate(&self) -> Result<f64, InjectionError> {
        let text = self.required("rate")?;
        text.parse::<f64>()
            .ok()
            .filter(|rate| (0.0..=1.0).contains(rate))
            .ok_or_else(|| InjectionError::Rate(text.to_string()))
    }

    /// `from` in Unix nanoseconds; the earliest time there is when not given.
    fn start_ns(&self) -> Result<i64, InjectionError> {
        let Some(text) = self.get("from") else {
            return Ok(i64::MIN);
        };
        text.parse::<i64>()
            .ok()
            .or_else(|| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .ok()
                    .and_then(|time| time.timestamp_nanos_opt())
            })
            .ok_or_else(|| InjectionError::Time(text.to_string()))
    }
}

const ROUTES: &[&str] = &["/", "/cart", "/checkout", "/product/{id}", "/search"];
const PRODUCTS: &[&str] = &[
    "OLJCESPC7Z",
    "66VCHSJNUP",
    "1YMWWN1N4O",
    "L9ECAV7KIM",
    "2ZYFJ3GM2N",
];
/// The frontend routes of the wide shape, each with how many traces in a hundred take it.
const WIDE_ROUTES: &[(&str, u64)] = &[
    ("/api/cart", 20),
    ("/api/checkout", 24),
    ("/api/products", 12),
    ("/api/products/{id}", 22),
    ("/api/search", 12),
    ("/api/recommendations", 10),
];

struct Call<'a> {
    service: &'static str,
    name: String,
    kind: SpanKind,
    attrs: Vec<KeyValue>,
    children: Vec<Call<'a>>,
    /// Own time in microseconds, before children.
    self_us: u64,
    error: Option<&'a str>,
    link_to_producer: bool,
    producer: bool,
}

impl Call<'_> {
    /// A call of `service` taking `self_us` of its own, without children, error or queue
    /// links.
    fn leaf(
        service: &'static str,
        name: impl Into<String>,
        kind: SpanKind,
        attrs: Vec<KeyValue>,
        self_us: u64,
    ) -> Self {
        Self {
            service,
            name: name.into(),
            kind,
            attrs,
            children: vec![],
            self_us,
            error: None,
            link_to_producer: false,
            producer: false,
        }
    }

    /// Calls `f` on this call, then on every call below it, depth first.
    fn for_each_mut(&mut self, f: &mut impl FnMut(&mut Self)) {
        f(self);
        for child in &mut self.children {
            child.for_each_mut(f);
        }
    }

    /// Whether this call or one below it is served by `service`.
    fn involves(&self, service: &str) -> bool {
        self.service == service || self.children.iter().any(|child| child.involves(service))
    }

    /// Fails as [`Injection::Errors`] makes a call fail, reporting the status its protocol
    /// gives an unavailable upstream (HTTP 503, gRPC UNAVAILABLE) so that metrics count it.
    fn fail_injected(&mut self) {
        self.error = Some(INJECTED_ERROR_MESSAGE);
        set_attr(&mut self.attrs, s("error.type", INJECTED_ERROR_TYPE));
        for (key, code) in [
            ("http.response.status_code", 503),
            ("http.status_code", 503),
            ("rpc.grpc.status_code", 14),
        ] {
            if attr(&self.attrs, key).is_some() {
                set_attr(&mut self.attrs, i(key, code));
            }
        }
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}
fn f(key: &str, v: f64) -> KeyValue {
    kv(key, Value::DoubleValue(v))
}
fn b(key: &str, v: bool) -> KeyValue {
    kv(key, Value::BoolValue(v))
}

/// The error of an HTTP span answered with `status`: servers fail from 500 on.
fn http_error(status: i64) -> Option<&'static str> {
    match status {
        503 => Some("service unavailable"),
        500.. => Some("internal server error"),
        _ => None,
    }
}

/// The instrumentation scope of everything generated.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "spanlake-gen".into(),
        version: "1".into(),
        ..Default::default()
    }
}

/// The value of attribute `key`, if set.
fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The value of string attribute `key`, if set.
fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(Value::StringValue(v)) => Some(v.as_str()),
        _ => None,
    }
}

/// Sets attribute `value.key` to `value`, in place of the value it had.
fn set_attr(attrs: &mut Vec<KeyValue>, value: KeyValue) {
    match attrs.iter_mut().find(|kv| kv.key == value.key) {
        Some(old) => *old = value,
        None => attrs.push(value),
    }
}

/// The attributes of `attrs` named in `keys`, as they are.
fn copy_attrs(attrs: &[KeyValue], keys: &[&str]) -> Vec<KeyValue> {
    attrs
        .iter()
        .filter(|kv| keys.contains(&kv.key.as_str()))
        .cloned()
        .collect()
}

/// Every span of an export request.
fn spans_of(request: &ExportTraceServiceRequest) -> impl Iterator<Item = &Span> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
}

/// Whether `span` failed.
fn is_error(span: &Span) -> bool {
    span.status
        .as_ref()
        .is_some_and(|status| status.code == StatusCode::Error as i32)
}

impl Generator {
    /// A generator whose output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            log_rng: Rng(seed ^ LOG_STREAM),
            inject_rng: Rng(seed ^ INJECT_STREAM),
            injections: Vec::new(),
            shape: TraceShape::Shop,
            last_producer: None,
        }
    }

    /// This generator, making traces of `shape` from now on.
    pub fn with_shape(mut self, shape: TraceShape) -> Self {
        self.shape = shape;
        self
    }

    /// This generator, injecting `injections` (in place of any it had) into the traces it
    /// makes from now on.
    pub fn with_injections(mut self, injections: Vec<Injection>) -> Self {
        self.injections = injections;
        self
    }

    fn db(&mut self, service: &'static str, table: &str) -> Call<'static> {
        let op = *self.rng.pick(&["SELECT", "UPDATE", "INSERT"]);
        Call {
            service,
            name: format!("{op} shop.{table}"),
            kind: SpanKind::Client,
            attrs: vec![
                s("db.system.name", "postgresql"),
                s("db.namespace", "shop"),
                s("db.operation.name", op),
                s(
                    "db.query.text",
                    &format!("{op} * FROM {table} WHERE id = $1"),
                ),
                i("server.port", 5432),
            ],
            children: vec![],
            self_us: 300 + self.rng.below(4_000),
            error: None,
            link_to_producer: false,
            producer: false,
        }
    }

    fn rpc(
        &mut self,
        client: &'static str,
        server: &'static str,
        rpc_service: &str,
        method: &str,
        mut children: Vec<Call<'static>>,
        error: Option<&'static str>,
    ) -> Call<'static> {
        let attrs = vec![
            s("rpc.system", "grpc"),
            s("rpc.service", rpc_service),
            s("rpc.method", method),
        ];
        let mut server_attrs = attrs.clone();
        server_attrs.push(i(
            "rpc.grpc.status_code",
            if error.is_some() { 13 } else { 0 },
        ));
        let server_span = Call {
            service: server,
            name: format!("{rpc_service}/{method}"),
            kind: SpanKind::Server,
            attrs: server_attrs,
            children: std::mem::take(&mut children),
            self_us: 200 + self.rng.below(3_000),
            error,
            link_to_producer: false,
            producer: false,
        };
        Call {
            service: client,
            name: format!("{rpc_service}/{method}"),
            kind: SpanKind::Client,
            attrs,
            children: vec![server_span],
            self_us: 100 + self.rng.below(500),
            error,
            link_to_producer: false,
            producer: false,
        }
    }

    fn request_tree(&mut self) -> Call<'static> {
        let route = *self.rng.pick(ROUTES);
        let mut children = Vec::new();
        let mut status = 200;
        let mut error = None;
        match route {
            "/cart" => {
                let db = self.db("cart", "carts");
                children.push(self.rpc(
                    "frontend",
                    "cart",
                    "CartService",
                    "GetCart",
                    vec![db],
                    None,
                ));
            }
            "/checkout" => {
                let payment_fails = self.rng.chance(8);
                let payment_error = payment_fails.then_some("card declined");
                let charge = self.rpc(
                    "checkout",
                    "payment",
                    "PaymentService",
                    "Charge",
                    vec![],
                    payment_error,
                );
                let reserve_db = self.db("inventory", "stock");
                let reserve = self.rpc(
                    "checkout",
                    "inventory",
                    "InventoryService",
                    "Reserve",
                    vec![reserve_db],
                    None,
                );
                let mut checkout_children = vec![reserve, charge];
                if !payment_fails {
                    checkout_children.push(Call {
                        service: "checkout",
                        name: "orders publish".into(),
                        kind: SpanKind::Producer,
                        attrs: vec![
                            s("messaging.system", "kafka"),
                            s("messaging.destination.name", "orders"),
                        ],
                        children: vec![],
                        self_us: 150,
                        error: None,
                        link_to_producer: false,
                        producer: true,
                    });
                }
                if payment_fails {
                    status = 500;
                    error = Some("checkout failed: card declined");
                }
                children.push(self.rpc(
                    "frontend",
                    "checkout",
                    "CheckoutService",
                    "PlaceOrder",
                    checkout_children,
                    error,
                ));
            }
            "/product/{id}" | "/search" => {
                let db = self.db("product-catalog", "products");
                let method = if route == "/search" {
                    "SearchProducts"
                } else {
                    "GetProduct"
                };
                children.push(self.rpc(
                    "frontend",
                    "product-catalog",
                    "ProductCatalogService",
                    method,
                    vec![db],
                    None,
                ));
                if route == "/search" && self.rng.chance(5) {
                    status = 404;
                }
            }
            _ => {
                let db = self.db("product-catalog", "products");
                children.push(self.rpc(
                    "frontend",
                    "product-catalog",
                    "ProductCatalogService",
                    "ListProducts",
                    vec![db],
                    None,
                ));
            }
        }
        let product = *self.rng.pick(PRODUCTS);
        let path = route.replace("{id}", product);
        let method = if route == "/checkout" { "POST" } else { "GET" };
        let mut attrs = vec![
            s("http.request.method", method),
            s("http.route", route),
            s("url.full", &format!("https://shop.example.com{path}")),
            i("http.response.status_code", status),
            b("app.user.premium", self.rng.chance(20)),
            f(
                "app.request.size_kb",
                (self.rng.below(5_000) as f64) / 100.0,
            ),
            kv(
                "app.tags",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("web".into())),
                    }],
                }),
            ),
        ];
        if route == "/cart" || route == "/checkout" {
            attrs.push(i("app.cart.items", 1 + self.rng.below(8) as i64));
        }
        if route == "/checkout" {
            attrs.push(f(
                "app.order.total",
                (500 + self.rng.below(50_000)) as f64 / 100.0,
            ));
        }
        let root = Call {
            service: "frontend",
            name: format!("{method} {route}"),
            kind: SpanKind::Server,
            attrs,
            children,
            self_us: 500 + self.rng.below(5_000),
            error: if status >= 500 { error } else { None },
            link_to_producer: false,
            producer: false,
        };
        if self.last_producer.is_some() && self.rng.chance(30) {
            // A queue consumer in its own trace, linked to the order that was published.
            let db = self.db("email", "outbox");
            return Call {
                service: "email",
                name: "orders process".into(),
                kind: SpanKind::Consumer,
                attrs: vec![
                    s("messaging.system", "kafka"),
                    s("messaging.destination.name", "orders"),
                ],
                children: vec![db],
                self_us: 1_000 + self.rng.below(2_000),
                error: None,
                link_to_producer: true,
                producer: false,
            };
        }
        root
    }

    /// A request of the wide shape: a frontend route of [`WIDE_ROUTES`], most checking the
    /// session in Redis first; or, now and then, an order taken off the queue.
    fn wide_tree(&mut self) -> Call<'static> {
        if self.last_producer.is_some() && self.rng.chance(4) {
            return self.order_confirmation();
        }
        let route = self.wide_route();
        let user = self.rng.below(100_000);
        let mut calls = Vec::new();
        if self.rng.chance(80) {
            calls.push(self.redis("frontend", "GET", &format!("session:{user}")));
        }
        let (method, status) = match route {
            "/api/cart" => self.cart_page(user, &mut calls),
            "/api/checkout" => self.checkout_page(user, &mut calls),
            "/api/products" => self.products_page(&mut calls),
            "/api/products/{id}" => self.product_page(&mut calls),
            "/api/search" => self.search_page(&mut calls),
            _ => self.recommendations_page(&mut calls),
        };
        let product: &&str = self.rng.pick(PRODUCTS);
        let target = route.replace("{id}", product);
        let attrs = vec![
            s("http.method", method),
            s("http.route", route),
            s("http.target", &target),
            i("http.status_code", status),
        ];
        let name = format!("{method} {route}");
        let self_us = 500 + self.rng.below(5_000);
        Call {
            children: calls,
            error: http_error(status),
            ..Call::leaf("frontend", name, SpanKind::Server, attrs, self_us)
        }
    }

    /// A route of [`WIDE_ROUTES`], drawn by its weight.
    fn wide_route(&mut self) -> &'static str {
        let total: u64 = WIDE_ROUTES.iter().map(|(_, weight)| weight).sum();
        let mut draw = self.rng.below(total);
        for (route, weight) in WIDE_ROUTES {
            if draw < *weight {
                return route;
            }
            draw -= *weight;
        }
        WIDE_ROUTES[0].0
    }

    /// `/api/cart`: adds an item to the cart (POST), or shows it (GET) with the product of
    /// every item, the total in the user's currency and a shipping quote.
    fn cart_page(&mut self, user: u64, calls: &mut Vec<Call<'static>>) -> (&'static str, i64) {
        let key = format!("cart:{user}");
        if self.rng.chance(30) {
            let writes = vec![
                self.redis("cart", "HSET", &key),
                self.redis("cart", "EXPIRE", &key),
            ];
            calls.push(self.rpc("frontend", "cart", "CartService", "AddItem", writes, None));
            return ("POST", 200);
        }
        let read = vec![self.redis("cart", "HGETALL", &key)];
        calls.push(self.rpc("frontend", "cart", "CartService", "GetCart", read, None));
        for _ in 0..1 + self.rng.below(3) {
            calls.push(self.catalog("frontend", "GetProduct", vec![]));
        }
        calls.push(self.convert("frontend"));
        calls.extend(self.http_get("frontend", "shipping", "/quote", vec![]));
        ("GET", 200)
    }

    /// `/api/checkout`: the checkout service reads the cart, converts the total, quotes
    /// shipping and charges the card. Unless the card is declined, which fails the request
    /// with a 500, it then empties the cart, stores the order and publishes it.
    fn checkout_page(&mut self, user: u64, calls: &mut Vec<Call<'static>>) -> (&'static str, i64) {
        let key = format!("cart:{user}");
        let read = vec![self.redis("cart", "HGETALL", &key)];
        let mut steps = vec![
            self.rpc("checkout", "cart", "CartService", "GetCart", read, None),
            self.convert("checkout"),
        ];
        steps.extend(self.http_get("checkout", "shipping", "/quote", vec![]));
        let declined = self.rng.chance(5);
        steps.push(self.charge(declined));
        let status = if declined {
            500
        } else {
            let empty = vec![self.redis("cart", "DEL", &key)];
            steps.push(self.rpc("checkout", "cart", "CartService", "EmptyCart", empty, None));
            steps.push(self.postgres(
                "checkout",
                "orders",
                "INSERT INTO orders VALUES ($1, $2, $3)",
            ));
            let attrs = vec![
                s("messaging.system", "kafka"),
                s("messaging.destination.name", "orders"),
            ];
            let self_us = 100 + self.rng.below(300);
            steps.push(Call {
                producer: true,
                ..Call::leaf(
                    "checkout",
                    "orders publish",
                    SpanKind::Producer,
                    attrs,
                    self_us,
                )
            });
            200
        };
        calls.push(self.http("frontend", "checkout", "POST", "/orders", steps, status));
        ("POST", status)
    }

    /// `/api/products`: the catalog, with the price of every product shown converted by a
    /// call of its own, so that long pages make traces of more than 20 spans.
    fn products_page(&mut self, calls: &mut Vec<Call<'static>>) -> (&'static str, i64) {
        let query = self.postgres("product-catalog", "products", "SELECT * FROM products");
        calls.push(self.catalog("frontend", "ListProducts", vec![query]));
        for _ in 0..4 + self.rng.below(9) {
            calls.push(self.convert("frontend"));
        }
        ("GET", 200)
    }

    /// `/api/products/{id}`: one product, its price, recommendations and an ad.
    fn product_page(&mut self, calls: &mut Vec<Call<'static>>) -> (&'static str, i64) {
        let query = self.postgres(
            "product-catalog",
            "products",
            "SELECT * FROM products WHERE id = $1",
        );
        calls.push(self.catalog("frontend", "GetProduct", vec![query]));
        calls.push(self.convert("frontend"));
        calls.extend(self.recommendations());
        calls.push(self.ad());
        ("GET", 200)
    }

    /// `/api/search`: a text search, slow now and then, then one query per hit (the N+1
    /// pattern), and an ad.
    fn search_page(&mut self, calls: &mut Vec<Call<'static>>) -> (&'static str, i64) {
        let mut search = self.postgres(
            "product-catalog",
            "products",
            "SELECT * FROM products WHERE name ILIKE $1",
        );
        if self.rng.chance(10) {
            search.self_us = self.slow_us();
        }
        let mut queries = vec![search];
        for _ in 0..self.rng.below(7) {
            queries.push(self.postgres(
                "product-catalog",
                "product_images",
                "SELECT * FROM product_images WHERE product_id = $1",
            ));
        }
        calls.push(self.catalog("frontend", "SearchProducts", queries));
        calls.push(self.ad());
        ("GET", 200)
    }

    /// `/api/recommendations`: the recommendations alone, as the page's script fetches them.
    fn recommendations_page(&mut self, calls: &mut Vec<Call<'static>>) -> (&'static str, i64) {
        calls.extend(self.recommendations());
        ("GET", 200)
    }

    /// The frontend's GET of recommendations: the recommendation service lists the catalog
    /// and ranks it.
    fn recommendations(&mut self) -> Vec<Call<'static>> {
        let query = self.postgres("product-catalog", "products", "SELECT * FROM products");
        let list = self.catalog("recommendation", "ListProducts", vec![query]);
        let rank = Call::leaf(
            "recommendation",
            "rank products",
            SpanKind::Internal,
            vec![i("app.recommendations.count", 5)],
            200 + self.rng.below(2_000),
        );
        self.http_get(
            "frontend",
            "recommendation",
            "/api/recommendations",
            vec![list, rank],
        )
    }

    /// The checkout service charging the card through the payment service, which calls its
    /// card processor: declined (402) when `declined`, and now and then slow.
    fn charge(&mut self, declined: bool) -> Call<'static> {
        let error = declined.then_some("card declined");
        let attrs = vec![
            s("http.method", "POST"),
            s("http.url", "https://cards.example.com/v1/charges"),
            i("http.status_code", if declined { 402 } else { 200 }),
            b("retry", false),
        ];
        let self_us = if self.rng.chance(5) {
            self.slow_us()
        } else {
            5_000 + self.rng.below(35_000)
        };
        let processor = Call {
            error,
            ..Call::leaf(
                "payment",
                "POST /v1/charges",
                SpanKind::Client,
                attrs,
                self_us,
            )
        };
        self.rpc(
            "checkout",
            "payment",
            "PaymentService",
            "Charge",
            vec![processor],
            error,
        )
    }

    /// The frontend fetching an ad, which fails now and then (the page shows none).
    fn ad(&mut self) -> Call<'static> {
        let error = self.rng.chance(3).then_some("ad service unavailable");
        self.rpc("frontend", "ad", "AdService", "GetAds", vec![], error)
    }

    /// A `method` call of `client` to the product catalog, which runs `queries`.
    fn catalog(
        &mut self,
        client: &'static str,
        method: &str,
        queries: Vec<Call<'static>>,
    ) -> Call<'static> {
        let service = "ProductCatalogService";
        self.rpc(client, "product-catalog", service, method, queries, None)
    }

    /// `client` converting a price to the user's currency.
    fn convert(&mut self, client: &'static str) -> Call<'static> {
        let service = "CurrencyService";
        self.rpc(client, "currency", service, "Convert", vec![], None)
    }

    /// The email service taking an order off the queue, in a trace of its own linked to the
    /// checkout that published it, and sending the confirmation.
    fn order_confirmation(&mut self) -> Call<'static> {
        let order = self.postgres("email", "orders", "SELECT * FROM orders WHERE id = $1");
        let render = Call::leaf(
            "email",
            "render confirmation",
            SpanKind::Internal,
            vec![s("app.template", "order_confirmation")],
            300 + self.rng.below(2_000),
        );
        let sent = self.redis("email", "SET", "confirmation:sent");
        let attrs = vec![
            s("messaging.system", "kafka"),
            s("messaging.destination.name", "orders"),
        ];
        let self_us = 1_000 + self.rng.below(2_000);
        Call {
            children: vec![order, render, sent],
            link_to_producer: true,
            ..Call::leaf(
                "email",
                "orders process",
                SpanKind::Consumer,
                attrs,
                self_us,
            )
        }
    }

    /// An own time over the search benchmark's 200 ms: from 210 to 610 ms.
    fn slow_us(&mut self) -> u64 {
        210_000 + self.rng.below(400_000)
    }

    /// An HTTP call from `client` to `server`'s `route`, as a client and a server span named
    /// `method route` with the older semantic conventions' attributes (`http.status_code`),
    /// the server running `children`. Both spans fail from status 500 on.
    fn http(
        &mut self,
        client: &'static str,
        server: &'static str,
        method: &str,
        route: &str,
        children: Vec<Call<'static>>,
        status: i64,
    ) -> Call<'static> {
        let name = format!("{method} {route}");
        let error = http_error(status);
        let server_attrs = vec![
            s("http.method", method),
            s("http.route", route),
            i("http.status_code", status),
        ];
        let server_us = 200 + self.rng.below(3_000);
        let server_span = Call {
            children,
            error,
            ..Call::leaf(
                server,
                name.clone(),
                SpanKind::Server,
                server_attrs,
                server_us,
            )
        };
        let client_attrs = vec![
            s("http.method", method),
            s("http.url", &format!("http://{server}:8080{route}")),
            i("http.status_code", status),
            b("retry", false),
        ];
        let client_us = 100 + self.rng.below(500);
        Call {
            children: vec![server_span],
            error,
            ..Call::leaf(client, name, SpanKind::Client, client_attrs, client_us)
        }
    }

    /// A GET from `client` to `server`'s `route`, the server running `children`. Now and
    /// then the first attempt fails with a 503 and the client sends the request again,
    /// marked `retry`.
    fn http_get(
        &mut self,
        client: &'static str,
        server: &'static str,
        route: &str,
        children: Vec<Call<'static>>,
    ) -> Vec<Call<'static>> {
        let mut calls = Vec::new();
        let retried = self.rng.chance(3);
        if retried {
            calls.push(self.http(client, server, "GET", route, vec![], 503));
        }
        let mut call = self.http(client, server, "GET", route, children, 200);
        set_attr(&mut call.attrs, b("retry", retried));
        calls.push(call);
        calls
    }

    /// A Redis `command` of `service` on `key`.
    fn redis(&mut self, service: &'static str, command: &str, key: &str) -> Call<'static> {
        let attrs = vec![
            s("db.system", "redis"),
            s("db.operation", command),
            s("db.statement", &format!("{command} {key}")),
            s("net.peer.name", "redis"),
            i("net.peer.port", 6379),
        ];
        let self_us = 80 + self.rng.below(600);
        Call::leaf(service, command, SpanKind::Client, attrs, self_us)
    }

    /// A PostgreSQL `statement` of `service` on `table`, with the older semantic conventions'
    /// attributes (`db.system`) as the wide shape's services record them.
    fn postgres(&mut self, service: &'static str, table: &str, statement: &str) -> Call<'static> {
        let operation = statement.split_once(' ').map_or(statement, |(op, _)| op);
        let attrs = vec![
            s("db.system", "postgresql"),
            s("db.name", "shop"),
            s("db.operation", operation),
            s("db.sql.table", table),
            s("db.statement", statement),
            s("net.peer.name", "postgres"),
            i("net.peer.port", 5432),
        ];
        let name = format!("{operation} shop.{table}");
        let self_us = 300 + self.rng.below(4_000);
        Call::leaf(service, name, SpanKind::Client, attrs, self_us)
    }

    /// One whole trace of the generator's shape starting at `start_ns` (Unix nanoseconds), as
    /// an export request with one resource per service. Injections change the trace, and
    /// traffic injections may send it several times (each copy a trace of its own) or not at
    /// all (an empty request).
    pub fn trace_at(&mut self, start_ns: i64) -> ExportTraceServiceRequest {
        let mut tree = match self.shape {
            TraceShape::Shop => self.request_tree(),
            TraceShape::Wide => self.wide_tree(),
        };
        self.inject_faults(&mut tree, start_ns);
        let trace_id = self.rng.id(16);
        let mut by_service: BTreeMap<&'static str, Vec<Span>> = BTreeMap::new();
        self.emit(
            &tree,
            &trace_id,
            None,
            start_ns.max(0) as u64,
            &mut by_service,
        );
        let resource_spans = by_service
            .into_iter()
            .map(|(service, spans)| {
                let pod = format!("{service}-{}", 7 + self.rng.below(3));
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            s("service.name", service),
                            s("service.version", "1.4.2"),
                            s("deployment.environment.name", "production"),
                            s("k8s.namespace.name", "shop"),
                            s("k8s.pod.name", &pod),
                            i("process.pid", 1000 + self.rng.below(100) as i64),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope()),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        let mut request = ExportTraceServiceRequest { resource_spans };
        let copies = self.copies(&tree, start_ns);
        self.send_copies(&mut request, copies);
        request
    }

    /// Applies the latency and error injections due at `start_ns` to the calls of `tree`.
    fn inject_faults(&mut self, tree: &mut Call<'_>, start_ns: i64) {
        let Self {
            injections,
            inject_rng,
            ..
        } = self;
        for injection in injections.iter().filter(|inj| inj.applies_at(start_ns)) {
            match injection {
                Injection::Latency {
                    service,
                    operation,
                    factor,
                    ..
                } => tree.for_each_mut(&mut |call| {
                    if call.service == service.as_str()
                        && operation.as_deref().is_none_or(|op| op == call.name)
                    {
                        call.self_us = (call.self_us as f64 * *factor).round() as u64;
                    }
                }),
                Injection::Errors { service, rate, .. } => tree.for_each_mut(&mut |call| {
                    let serves = matches!(call.kind, SpanKind::Server | SpanKind::Consumer);
                    if call.service == service.as_str() && serves && inject_rng.unit() < *rate {
                        call.fail_injected();
                    }
                }),
                Injection::Traffic { .. } => {}
            }
        }
    }

    /// How many times the traffic injections due at `start_ns` send the trace of `tree`: for
    /// each through one of their services, floor(factor) times, and once more with the
    /// probability of factor's fraction. Once when none is.
    fn copies(&mut self, tree: &Call<'_>, start_ns: i64) -> u64 {
        let Self {
            injections,
            inject_rng,
            ..
        } = self;
        let mut copies: u64 = 1;
        for injection in injections.iter().filter(|inj| inj.applies_at(start_ns)) {
            if let Injection::Traffic {
                service, factor, ..
            } = injection
                && tree.involves(service)
            {
                let factor = factor.max(0.0);
                let whole = factor.floor();
                let extra = inject_rng.unit() < factor - whole;
                copies = copies.saturating_mul(whole as u64 + u64::from(extra));
            }
        }
        copies
    }

    /// Makes `request`, which holds one trace, hold `copies` of it: the same spans at the same
    /// times, every copy past the first under a fresh trace id and fresh span ids, in the
    /// resources of their services.
    fn send_copies(&mut self, request: &mut ExportTraceServiceRequest, copies: u64) {
        match copies {
            0 => request.resource_spans.clear(),
            1 => {}
            _ => {
                let original = request.clone();
                for _ in 1..copies {
                    self.add_copy(request, &original);
                }
            }
        }
    }

    /// Adds the spans of `original` to `request` under fresh ids.
    fn add_copy(
        &mut self,
        request: &mut ExportTraceServiceRequest,
        original: &ExportTraceServiceRequest,
    ) {
        let trace_id = self.inject_rng.id(16);
        let span_ids: BTreeMap<&[u8], Vec<u8>> = spans_of(original)
            .map(|span| (span.span_id.as_slice(), self.inject_rng.id(8)))
            .collect();
        // A root's empty parent id is no span's id, and stays empty.
        let renamed = |id: &[u8]| span_ids.get(id).cloned().unwrap_or_else(|| id.to_vec());
        let resources = request.resource_spans.iter_mut();
        for (resource, original_resource) in resources.zip(&original.resource_spans) {
            let scopes = resource.scope_spans.iter_mut();
            for (scope, original_scope) in scopes.zip(&original_resource.scope_spans) {
                scope
                    .spans
                    .extend(original_scope.spans.iter().map(|span| Span {
                        trace_id: trace_id.clone(),
                        span_id: renamed(span.span_id.as_slice()),
                        parent_span_id: renamed(span.parent_span_id.as_slice()),
                        ..span.clone()
                    }));
            }
        }
    }

    /// The log records the services of `trace` write while serving it (every trace of the
    /// request, if it holds several), as an export request with the trace's resources (one per
    /// service that logged). Every record carries the ids of the span it was written in and a
    /// time inside that span: an INFO line when a server span ends (now and then with a
    /// structured body), an ERROR line with the status message of every failed span, and
    /// sometimes a DEBUG line with the statement of a database call.
    pub fn logs_for(&mut self, trace: &ExportTraceServiceRequest) -> ExportLogsServiceRequest {
        let mut resource_logs = Vec::new();
        for resource_spans in &trace.resource_spans {
            let mut log_records = Vec::new();
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                self.log_span(span, &mut log_records);
            }
            if log_records.is_empty() {
                continue;
            }
            resource_logs.push(ResourceLogs {
                resource: resource_spans.resource.clone(),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records,
                    ..Default::default()
                }],
                schema_url: resource_spans.schema_url.clone(),
            });
        }
        ExportLogsServiceRequest { resource_logs }
    }

    /// Appends the records written inside `span`, in time order.
    fn log_span(&mut self, span: &Span, out: &mut Vec<LogRecord>) {
        let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
        let attrs = &span.attributes;
        // The function that wrote the line: the RPC method, or the HTTP handler.
        let function = str_attr(attrs, "rpc.method").unwrap_or("ServeHTTP");
        if span.kind == SpanKind::Client as i32
            && let Some(statement) = str_attr(attrs, "db.query.text")
            && self.log_rng.chance(30)
        {
            let mut attributes = copy_attrs(attrs, &["db.system.name", "db.operation.name"]);
            attributes.push(s("code.function", "query"));
            let body = Value::StringValue(statement.to_string());
            out.push(self.log_record(span, start, SeverityNumber::Debug, body, attributes));
        }
        if is_error(span) {
            let message = span
                .status
                .as_ref()
                .map_or("", |status| status.message.as_str());
            // With the attributes of the exception event the span recorded, at its time.
            let mut attributes = span
                .events
                .iter()
                .find(|e| e.name == "exception")
                .map(|e| copy_attrs(&e.attributes, &["exception.type"]))
                .unwrap_or_default();
            attributes.push(s("code.function", function));
            let time = end.saturating_sub(10_000).max(start);
            let body = Value::StringValue(message.to_string());
            out.push(self.log_record(span, time, SeverityNumber::Error, body, attributes));
        }
        if span.kind == SpanKind::Server as i32 {
            let ms = end.saturating_sub(start) as f64 / 1e6;
            let message = format!("{} handled in {ms:.1} ms", span.name);
            let body = if self.log_rng.chance(10) {
                Value::KvlistValue(KeyValueList {
                    values: vec![
                        s("message", &message),
                        f("duration_ms", ms),
                        b("error", is_error(span)),
                    ],
                })
            } else {
                Value::StringValue(message)
            };
            let mut attributes = copy_attrs(
                attrs,
                &[
                    "http.request.method",
                    "http.route",
                    "http.response.status_code",
                    "rpc.method",
                ],
            );
            attributes.push(s("code.function", function));
            out.push(self.log_record(span, end, SeverityNumber::Info, body, attributes));
        }
    }

    /// A record written at `time` inside `span`, observed a little later.
    fn log_record(
        &mut self,
        span: &Span,
        time: u64,
        severity: SeverityNumber,
        body: Value,
        attributes: Vec<KeyValue>,
    ) -> LogRecord {
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + 100_000 + self.log_rng.below(2_000_000),
            severity_number: severity as i32,
            severity_text: severity
                .as_str_name()
                .trim_start_matches("SEVERITY_NUMBER_")
                .to_string(),
            body: Some(AnyValue { value: Some(body) }),
            attributes,
            trace_id: span.trace_id.clone(),
            span_id: span.span_id.clone(),
            ..Default::default()
        }
    }

    /// Emits `call` and its subtree; returns the end time.
    fn emit(
        &mut self,
        call: &Call<'_>,
        trace_id: &[u8],
        parent: Option<&[u8]>,
        start: u64,
        out: &mut BTreeMap<&'static str, Vec<Span>>,
    ) -> u64 {
        let span_id = self.rng.id(8);
        let mut at = start + call.self_us * 1_000 / 2;
        for child in &call.children {
            at = self.emit(child, trace_id, Some(&span_id), at + 50_000, out);
        }
        let end = at + call.self_us * 1_000 / 2;
        let mut events = Vec::new();
        if let Some(message) = call.error {
            events.push(Event {
                time_unix_nano: end.saturating_sub(10_000),
                name: "exception".into(),
                attributes: vec![
                    s(
                        "exception.type",
                        str_attr(&call.attrs, "error.type").unwrap_or("PaymentError"),
                    ),
                    s("exception.message", message),
                ],
                ..Default::default()
            });
        }
        let mut links = Vec::new();
        if call.link_to_producer
            && let Some((t, sp)) = &self.last_producer
        {
            links.push(Link {
                trace_id: t.clone(),
                span_id: sp.clone(),
                attributes: vec![s("link.kind", "follows_from")],
                ..Default::default()
            });
        }
        if call.producer {
            self.last_producer = Some((trace_id.to_vec(), span_id.clone()));
        }
        out.entry(call.service).or_default().push(Span {
            trace_id: trace_id.to_vec(),
            span_id,
            parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
            name: call.name.clone(),
            kind: call.kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: call.attrs.clone(),
            events,
            links,
            status: Some(Status {
                code: if call.error.is_some() {
                    StatusCode::Error as i32
                } else {
                    StatusCode::Unset as i32
                },
                message: call.error.unwrap_or_default().to_string(),
            }),
            ..Default::default()
        });
        end
    }
}

/// Bucket bounds of the request duration histograms, in seconds: OpenTelemetry's advice for
/// `http.server.request.duration`.
pub const DURATION_BOUNDS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Accumulates RED metrics per service from generated traces and exports them as an
/// instrumented service's SDK would: cumulative, one resource per service.
///
/// Every server span counts one request in its series (its service, route or RPC method and
/// status) and adds its duration to that series' histogram; both points carry an exemplar
/// pointing at the latest span of the series. Each service also reports a memory gauge.
/// Counts only grow from one export to the next, and every cumulative point starts at the
/// first observation.
#[derive(Debug, Clone, Default)]
pub struct MetricsAggregator {
    /// The start of every cumulative point: the earliest span start of the first trace.
    start_ns: Option<u64>,
    /// The latest span end observed: no point is stamped before its exemplars.
    latest_ns: u64,
    services: BTreeMap<String, ServiceMetrics>,
}

impl MetricsAggregator {
    /// Counts the server spans of `trace`, however many traces the request holds.
    pub fn observe(&mut self, trace: &ExportTraceServiceRequest) {
        if let Some(first) = spans_of(trace).map(|s| s.start_time_unix_nano).min() {
            self.start_ns = self.start_ns.or(Some(first));
        }
        if let Some(last) = spans_of(trace).map(|s| s.end_time_unix_nano).max() {
            self.latest_ns = self.latest_ns.max(last);
        }
        for resource_spans in &trace.resource_spans {
            let Some(resource) = &resource_spans.resource else {
                continue;
            };
            let Some(service) = str_attr(&resource.attributes, "service.name") else {
                continue;
            };
            // A service keeps the resource it was first seen with, as a process would.
            let metrics = self
                .services
                .entry(service.to_string())
                .or_insert_with(|| ServiceMetrics::new(resource.clone()));
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                metrics.observe(span);
            }
        }
    }

    /// Everything accumulated so far, as points stamped `time_ns`, or the end of the latest
    /// span observed if that is later. Empty until a trace was observed.
    pub fn export_at(&self, time_ns: i64) -> ExportMetricsServiceRequest {
        let time = (time_ns.max(0) as u64).max(self.latest_ns);
        let start = self.start_ns.unwrap_or(time);
        let resource_metrics = self
            .services
            .values()
            .map(|service| ResourceMetrics {
                resource: Some(service.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics: service.metrics(start, time),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }
}

/// The kinds of server span that count as requests, each with its own metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ServerKind {
    Http,
    Rpc,
}

impl ServerKind {
    const ALL: [ServerKind; 2] = [ServerKind::Http, ServerKind::Rpc];

    fn of(span: &Span) -> Option<Self> {
        if span.kind != SpanKind::Server as i32 {
            None
        } else if attr(&span.attributes, "http.route").is_some() {
            Some(ServerKind::Http)
        } else if attr(&span.attributes, "rpc.method").is_some() {
            Some(ServerKind::Rpc)
        } else {
            None
        }
    }

    fn requests_metric(self) -> &'static str {
        match self {
            ServerKind::Http => "http.server.requests",
            ServerKind::Rpc => "rpc.server.requests",
        }
    }

    fn duration_metric(self) -> &'static str {
        match self {
            ServerKind::Http => "http.server.request.duration",
            ServerKind::Rpc => "rpc.server.call.duration",
        }
    }

    /// The span attributes that tell the series of this kind apart.
    fn series_keys(self) -> &'static [&'static str] {
        match self {
            ServerKind::Http => &[
                "http.request.method",
                "http.route",
                "http.response.status_code",
                // The same, as the wide shape's older instrumentation names them.
                "http.method",
                "http.status_code",
            ],
            ServerKind::Rpc => &[
                "rpc.system",
                "rpc.service",
                "rpc.method",
                "rpc.grpc.status_code",
            ],
        }
    }
}

/// What one service has served so far.
#[derive(Debug, Clone)]
struct ServiceMetrics {
    resource: Resource,
    /// By kind, then by the series' attributes rendered as text.
    series: BTreeMap<(ServerKind, String), Series>,
    requests: u64,
}

impl ServiceMetrics {
    fn new(resource: Resource) -> Self {
        Self {
            resource,
            series: BTreeMap::new(),
            requests: 0,
        }
    }

    fn observe(&mut self, span: &Span) {
        let Some(kind) = ServerKind::of(span) else {
            return;
        };
        let mut attributes = copy_attrs(&span.attributes, kind.series_keys());
        attributes.sort_by(|a, b| a.key.cmp(&b.key));
        let key = format!("{attributes:?}");
        self.series
            .entry((kind, key))
            .or_insert_with(|| Series::new(attributes))
            .observe(span);
        self.requests += 1;
    }

    /// A memory use that grows with requests and drops at every (pretend) collection.
    fn memory_bytes(&self) -> f64 {
        const MIB: f64 = 1024.0 * 1024.0;
        64.0 * MIB + (self.requests % 97) as f64 * 0.25 * MIB
    }

    fn metrics(&self, start: u64, time: u64) -> Vec<Metric> {
        let mut metrics = Vec::new();
        for kind in ServerKind::ALL {
            let series: Vec<&Series> = self
                .series
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|(_, series)| series)
                .collect();
            if series.is_empty() {
                continue;
            }
            metrics.push(Metric {
                name: kind.requests_metric().into(),
                description: "Requests served.".into(),
                unit: "{request}".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: series.iter().map(|s| s.requests(start, time)).collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            });
            metrics.push(Metric {
                name: kind.duration_metric().into(),
                description: "Duration of the requests served.".into(),
                unit: "s".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: series.iter().map(|s| s.durations(start, time)).collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            });
        }
        metrics.push(Metric {
            name: "process.runtime.memory".into(),
            description: "Memory in use.".into(),
            unit: "By".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: time,
                    value: Some(number_data_point::Value::AsDouble(self.memory_bytes())),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        });
        metrics
    }
}

/// The requests of one series: a counter and a duration histogram.
#[derive(Debug, Clone)]
struct Series {
    attributes: Vec<KeyValue>,
    count: u64,
    /// One more than [`DURATION_BOUNDS_S`]: the last bucket is above the last bound.
    bucket_counts: Vec<u64>,
    sum: f64,
    min: f64,
    max: f64,
    latest: Option<LatestSpan>,
}

/// The span the exemplars of a series point at.
#[derive(Debug, Clone)]
struct LatestSpan {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    end_ns: u64,
    seconds: f64,
}

impl Series {
    fn new(attributes: Vec<KeyValue>) -> Self {
        Self {
            attributes,
            count: 0,
            bucket_counts: vec![0; DURATION_BOUNDS_S.len() + 1],
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            latest: None,
        }
    }

    fn observe(&mut self, span: &Span) {
        let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
        let seconds = end.saturating_sub(start) as f64 / 1e9;
        // Bucket i holds (bound[i - 1], bound[i]].
        let bucket = DURATION_BOUNDS_S
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BOUNDS_S.len());
        self.bucket_counts[bucket] += 1;
        self.count += 1;
        self.sum += seconds;
        self.min = self.min.min(seconds);
        self.max = self.max.max(seconds);
        self.latest = Some(LatestSpan {
            trace_id: span.trace_id.clone(),
            span_id: span.span_id.clone(),
            end_ns: end,
            seconds,
        });
    }

    fn exemplars(&self, value: exemplar::Value) -> Vec<Exemplar> {
        self.latest
            .iter()
            .map(|span| Exemplar {
                time_unix_nano: span.end_ns,
                span_id: span.span_id.clone(),
                trace_id: span.trace_id.clone(),
                value: Some(value),
                ..Default::default()
            })
            .collect()
    }

    fn requests(&self, start: u64, time: u64) -> NumberDataPoint {
        NumberDataPoint {
            attributes: self.attributes.clone(),
            start_time_unix_nano: start,
            time_unix_nano: time,
            exemplars: self.exemplars(exemplar::Value::AsInt(1)),
            value: Some(number_data_point::Value::AsInt(
                i64::try_from(self.count).unwrap_or(i64::MAX),
            )),
            ..Default::default()
        }
    }

    fn durations(&self, start: u64, time: u64) -> HistogramDataPoint {
        let seconds = self.latest.as_ref().map_or(0.0, |span| span.seconds);
        HistogramDataPoint {
            attributes: self.attributes.clone(),
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: self.count,
            sum: Some(self.sum),
            bucket_counts: self.bucket_counts.clone(),
            explicit_bounds: DURATION_BOUNDS_S.to_vec(),
            exemplars: self.exemplars(exemplar::Value::AsDouble(seconds)),
            min: Some(self.min),
            max: Some(self.max),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_traces() {
        let a: Vec<_> = (0..20).map(|n| Generator::new(7).trace_at(n)).collect();
        let b: Vec<_> = (0..20).map(|n| Generator::new(7).trace_at(n)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn traces_convert_to_valid_spans_with_one_root() {
        let mut generator = Generator::new(1);
        for n in 0..50 {
            let spans = crate::schema::otlp::spans_from_request(&generator.trace_at(n)).unwrap();
            assert_eq!(
                spans.iter().filter(|s| s.parent_span_id.is_none()).count(),
                1
            );
        }
    }

    /// The log records of an export request.
    fn records(logs: &ExportLogsServiceRequest) -> impl Iterator<Item = &LogRecord> {
        logs.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
    }

    fn service_name(resource: Option<&Resource>) -> &str {
        resource
            .and_then(|r| str_attr(&r.attributes, "service.name"))
            .unwrap_or_default()
    }

    #[test]
    fn the_same_seed_gives_the_same_logs() {
        let logs = |seed| {
            let mut generator = Generator::new(seed);
            (0..50)
                .map(|n| {
                    let trace = generator.trace_at(n * 10_000_000);
                    generator.logs_for(&trace)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(logs(7), logs(7));
        assert_ne!(logs(7), logs(8));
    }

    #[test]
    fn asking_for_logs_leaves_the_traces_unchanged() {
        let mut plain = Generator::new(7);
        let mut logging = Generator::new(7);
        for n in 0..50 {
            let trace = logging.trace_at(n);
            logging.logs_for(&trace);
            assert_eq!(plain.trace_at(n), trace);
        }
    }

    #[test]
    fn log_records_carry_the_ids_and_a_time_of_a_span_of_their_trace() {
        let mut generator = Generator::new(3);
        let mut checked = 0;
        for n in 0..100 {
            let trace = generator.trace_at(n * 10_000_000);
            let logs = generator.logs_for(&trace);
            let spans: Vec<&Span> = spans_of(&trace).collect();
            for record in records(&logs) {
                let span = spans
                    .iter()
                    .find(|s| s.trace_id == record.trace_id && s.span_id == record.span_id)
                    .unwrap_or_else(|| panic!("{record:?} is in no span of its trace"));
                assert!(
                    (span.start_time_unix_nano..=span.end_time_unix_nano)
                        .contains(&record.time_unix_nano)
                );
                assert!(record.observed_time_unix_nano > record.time_unix_nano);
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} records");
    }

    #[test]
    fn logs_come_with_the_resource_of_their_service_in_the_trace() {
        let mut generator = Generator::new(4);
        for n in 0..50 {
            let trace = generator.trace_at(n);
            let logs = generator.logs_for(&trace);
            for resource_logs in &logs.resource_logs {
                let service = service_name(resource_logs.resource.as_ref());
                let resource_spans = trace
                    .resource_spans
                    .iter()
                    .find(|r| service_name(r.resource.as_ref()) == service)
                    .unwrap_or_else(|| panic!("{service} logged but has no spans"));
                assert_eq!(resource_logs.resource, resource_spans.resource);
                assert_eq!(resource_logs.scope_logs.len(), 1);
                assert_eq!(resource_logs.scope_logs[0].scope, Some(scope()));
            }
        }
    }

    #[test]
    fn server_spans_log_info_and_failed_spans_log_their_status_message() {
        let mut generator = Generator::new(5);
        let (mut errors, mut structured, mut debug) = (0, 0, 0);
        for n in 0..1000 {
            let trace = generator.trace_at(n * 10_000_000);
            let logs = generator.logs_for(&trace);
            let with_severity = |severity: SeverityNumber| {
                records(&logs)
                    .filter(|r| r.severity_number == severity as i32)
                    .collect::<Vec<_>>()
            };
            let server_spans = spans_of(&trace)
                .filter(|s| s.kind == SpanKind::Server as i32)
                .count();
            let info = with_severity(SeverityNumber::Info);
            assert_eq!(info.len(), server_spans);
            assert!(info.iter().all(|r| r.severity_text == "INFO"));
            structured += info
                .iter()
                .filter(|r| {
                    matches!(
                        r.body.as_ref().and_then(|b| b.value.as_ref()),
                        Some(Value::KvlistValue(_))
                    )
                })
                .count();
            let failed: Vec<&Span> = spans_of(&trace).filter(|s| is_error(s)).collect();
            let error = with_severity(SeverityNumber::Error);
            assert_eq!(error.len(), failed.len());
            for (record, span) in error.iter().zip(&failed) {
                assert_eq!(record.severity_text, "ERROR");
                let message = span.status.as_ref().map(|s| s.message.clone());
                let body = record.body.as_ref().and_then(|b| b.value.clone());
                assert_eq!(body, message.map(Value::StringValue));
            }
            errors += error.len();
            debug += with_severity(SeverityNumber::Debug).len();
        }
        assert!(errors > 0 && structured > 0 && debug > 0);
    }

    /// The cumulative counts of an export: sum values and histogram counts, by service,
    /// metric and attributes.
    fn cumulative_counts(export: &ExportMetricsServiceRequest) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for resource_metrics in &export.resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for metric in resource_metrics
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
            {
                let mut count = |attributes: &[KeyValue], value: u64| {
                    counts.insert(format!("{service} {} {attributes:?}", metric.name), value);
                };
                match &metric.data {
                    Some(metric::Data::Sum(sum)) => {
                        assert!(sum.is_monotonic);
                        for point in &sum.data_points {
                            let Some(number_data_point::Value::AsInt(value)) = point.value else {
                                panic!("{} is not an integer sum: {point:?}", metric.name);
                            };
                            count(&point.attributes, value as u64);
                        }
                    }
                    Some(metric::Data::Histogram(histogram)) => {
                        for point in &histogram.data_points {
                            count(&point.attributes, point.count);
                        }
                    }
                    _ => {}
                }
            }
        }
        counts
    }

    #[test]
    fn cumulative_counts_never_decrease_between_exports() {
        let mut generator = Generator::new(5);
        let mut aggregator = MetricsAggregator::default();
        let mut previous: BTreeMap<String, u64> = BTreeMap::new();
        for round in 0..5 {
            for n in 0..40 {
                aggregator.observe(&generator.trace_at((round * 40 + n) * 10_000_000));
            }
            let counts = cumulative_counts(&aggregator.export_at((round + 1) * 400_000_000));
            for (series, before) in &previous {
                let now = counts
                    .get(series)
                    .unwrap_or_else(|| panic!("{series} vanished"));
                assert!(now >= before, "{series} went from {before} to {now}");
            }
            assert!(counts.values().sum::<u64>() > previous.values().sum::<u64>());
            previous = counts;
        }
    }

    #[test]
    fn cumulative_points_start_at_the_first_observation() {
        let mut generator = Generator::new(6);
        let mut aggregator = MetricsAggregator::default();
        let first = generator.trace_at(1_000);
        let first_start = spans_of(&first).map(|s| s.start_time_unix_nano).min();
        aggregator.observe(&first);
        for n in 1..50 {
            aggregator.observe(&generator.trace_at(1_000 + n * 10_000_000));
        }
        let export = aggregator.export_at(0);
        let metrics = export
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        for metric in metrics {
            let starts: Vec<u64> = match &metric.data {
                Some(metric::Data::Sum(sum)) => sum
                    .data_points
                    .iter()
                    .map(|p| p.start_time_unix_nano)
                    .collect(),
                Some(metric::Data::Histogram(histogram)) => histogram
                    .data_points
                    .iter()
                    .map(|p| p.start_time_unix_nano)
                    .collect(),
                _ => continue,
            };
            assert!(starts.iter().all(|start| Some(*start) == first_start));
        }
    }

    #[test]
    fn histogram_buckets_cover_every_bound_and_add_up_to_the_count() {
        let mut generator = Generator::new(6);
        let mut aggregator = MetricsAggregator::default();
        for n in 0..200 {
            aggregator.observe(&generator.trace_at(n * 10_000_000));
        }
        let export = aggregator.export_at(0);
        let metrics = export
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        let mut points = 0;
        for metric in metrics {
            let Some(metric::Data::Histogram(histogram)) = &metric.data else {
                continue;
            };
            assert_eq!(
                histogram.aggregation_temporality,
                AggregationTemporality::Cumulative as i32
            );
            for point in &histogram.data_points {
                assert_eq!(point.explicit_bounds, DURATION_BOUNDS_S);
                assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
                assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
                points += 1;
            }
        }
        assert!(points > 1);
    }

    #[test]
    fn exemplars_point_at_an_observed_server_span() {
        let mut generator = Generator::new(8);
        let mut aggregator = MetricsAggregator::default();
        let mut server_spans = Vec::new();
        for n in 0..100 {
            let trace = generator.trace_at(n * 10_000_000);
            aggregator.observe(&trace);
            server_spans.extend(
                spans_of(&trace)
                    .filter(|s| s.kind == SpanKind::Server as i32)
                    .map(|s| (s.trace_id.clone(), s.span_id.clone())),
            );
        }
        let export = aggregator.export_at(0);
        let services: Vec<&str> = export
            .resource_metrics
            .iter()
            .map(|r| service_name(r.resource.as_ref()))
            .collect();
        let mut unique = services.clone();
        unique.dedup();
        assert_eq!(services, unique, "one resource per service");
        let mut exemplars = Vec::new();
        for metric in export
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            match &metric.data {
                Some(metric::Data::Sum(sum)) => {
                    exemplars.extend(sum.data_points.iter().flat_map(|p| &p.exemplars));
                }
                Some(metric::Data::Histogram(histogram)) => {
                    exemplars.extend(histogram.data_points.iter().flat_map(|p| &p.exemplars));
                }
                _ => {}
            }
        }
        assert!(!exemplars.is_empty());
        for example in exemplars {
            let ids = (example.trace_id.clone(), example.span_id.clone());
            assert!(server_spans.contains(&ids), "{example:?}");
        }
    }

    /// Traces in the injection tests start this far apart.
    const SPACING_NS: i64 = 10_000_000;

    /// The first `count` traces of seed 7 with `injections`, one every [`SPACING_NS`].
    fn traces(injections: Vec<Injection>, count: i64) -> Vec<ExportTraceServiceRequest> {
        let mut generator = Generator::new(7).with_injections(injections);
        (0..count)
            .map(|n| generator.trace_at(n * SPACING_NS))
            .collect()
    }

    /// Every span of `request` with the service of its resource.
    fn spans_with_service(
        request: &ExportTraceServiceRequest,
    ) -> impl Iterator<Item = (&str, &Span)> {
        request.resource_spans.iter().flat_map(|resource_spans| {
            let service = service_name(resource_spans.resource.as_ref());
            resource_spans
                .scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .map(move |span| (service, span))
        })
    }

    /// The ids of the traces of `request` with a span of `service`.
    fn traces_through<'a>(
        request: &'a ExportTraceServiceRequest,
        service: &str,
    ) -> BTreeSet<&'a [u8]> {
        spans_with_service(request)
            .filter(|(s, _)| *s == service)
            .map(|(_, span)| span.trace_id.as_slice())
            .collect()
    }

    /// How many traces of `requests` have a span of `service`.
    fn count_through(requests: &[ExportTraceServiceRequest], service: &str) -> usize {
        requests
            .iter()
            .map(|r| traces_through(r, service).len())
            .sum()
    }

    fn duration(span: &Span) -> u64 {
        span.end_time_unix_nano - span.start_time_unix_nano
    }

    /// The spans of `request` by span id.
    fn by_span_id(request: &ExportTraceServiceRequest) -> BTreeMap<Vec<u8>, &Span> {
        spans_of(request)
            .map(|span| (span.span_id.clone(), span))
            .collect()
    }

    /// Asserts that no span id is used twice in `request` and that every trace in it is a
    /// tree: one root, and every parent a span of the same trace.
    fn assert_whole_traces(request: &ExportTraceServiceRequest) {
        let spans: Vec<&Span> = spans_of(request).collect();
        let ids: BTreeSet<(&[u8], &[u8])> = spans
            .iter()
            .map(|s| (s.trace_id.as_slice(), s.span_id.as_slice()))
            .collect();
        let span_ids: BTreeSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
        assert_eq!(span_ids.len(), spans.len(), "a span id used twice");
        let mut roots: BTreeMap<&[u8], usize> = BTreeMap::new();
        for span in &spans {
            let root = roots.entry(span.trace_id.as_slice()).or_default();
            if span.parent_span_id.is_empty() {
                *root += 1;
            } else {
                let parent = (span.trace_id.as_slice(), span.parent_span_id.as_slice());
                assert!(ids.contains(&parent), "{span:?} has no parent in its trace");
            }
        }
        assert!(
            roots.values().all(|n| *n == 1),
            "roots per trace: {roots:?}"
        );
    }

    #[test]
    fn injections_parse_from_the_flag_syntax() {
        // 2024-05-01T12:00:00Z
        const MAY_DAY_NOON_NS: i64 = 1_714_564_800_000_000_000;
        let cases = [
            (
                "latency:service=cart,op=CartService/GetCart,factor=3,from=1700000000000000000",
                Injection::Latency {
                    service: "cart".into(),
                    operation: Some("CartService/GetCart".into()),
                    factor: 3.0,
                    from_ns: 1_700_000_000_000_000_000,
                },
            ),
            (
                "latency:service=cart,factor=1.5",
                Injection::Latency {
                    service: "cart".into(),
                    operation: None,
                    factor: 1.5,
                    from_ns: i64::MIN,
                },
            ),
            (
                "errors:service=payment,rate=0.25",
                Injection::Errors {
                    service: "payment".into(),
                    rate: 0.25,
                    from_ns: i64::MIN,
                },
            ),
            (
                "errors: service=payment, rate=1, from=2024-05-01T12:00:00Z",
                Injection::Errors {
                    service: "payment".into(),
                    rate: 1.0,
                    from_ns: MAY_DAY_NOON_NS,
                },
            ),
            (
                "traffic:service=checkout,factor=0.5,from=2024-05-01T14:00:00+02:00",
                Injection::Traffic {
                    service: "checkout".into(),
                    factor: 0.5,
                    from_ns: MAY_DAY_NOON_NS,
                },
            ),
        ];
        for (text, injection) in cases {
            assert_eq!(text.parse::<Injection>(), Ok(injection), "{text}");
        }
    }

    #[test]
    fn malformed_injections_are_refused_with_what_is_accepted() {
        let cases = [
            (
                "slow:service=cart",
                "unknown injection kind `slow`: use latency, errors or traffic",
            ),
            ("latency:factor=3", "missing service= in latency injection"),
            ("errors:service=cart", "missing rate= in errors injection"),
            (
                "traffic:service=cart",
                "missing factor= in traffic injection",
            ),
            (
                "latency:service=cart,factor=-2",
                "factor must be a positive number, got `-2`",
            ),
            (
                "traffic:service=cart,factor=0",
                "factor must be a positive number, got `0`",
            ),
            (
                "latency:service=cart,factor=inf",
                "factor must be a positive number, got `inf`",
            ),
            (
                "latency:service=cart,factor=fast",
                "factor must be a positive number, got `fast`",
            ),
            (
                "errors:service=cart,rate=1.5",
                "rate must be between 0 and 1, got `1.5`",
            ),
            (
                "latency:service=cart,factor=3,foo=1",
                "unknown key `foo` in latency injection: use service, op, factor, from",
            ),
            (
                "errors:service=cart,rate=0.1,op=GetCart",
                "unknown key `op` in errors injection: use service, rate, from",
            ),
            (
                "latency:service=cart,factor",
                "expected key=value in latency injection, got `factor`",
            ),
            (
                "traffic:service=cart,factor=",
                "expected key=value in traffic injection, got `factor=`",
            ),
            (
                "traffic:service=a,service=b,factor=2",
                "service= given twice in traffic injection",
            ),
            (
                "errors:service=cart,rate=0.1,from=yesterday",
                "from must be Unix nanoseconds or an RFC 3339 time such as \
                 2024-05-01T12:00:00Z, got `yesterday`",
            ),
        ];
        for (text, message) in cases {
            match text.parse::<Injection>() {
                Err(e) => assert_eq!(e.to_string(), message, "{text}"),
                Ok(injection) => panic!("{text} was read as {injection:?}"),
            }
        }
    }

    #[test]
    fn no_injections_leave_a_seeds_traces_as_they_were() {
        let mut plain = Generator::new(7);
        let mut injecting = Generator::new(7).with_injections(vec![]);
        for n in 0..100 {
            let t = n * SPACING_NS;
            assert_eq!(injecting.trace_at(t), plain.trace_at(t));
        }
    }

    #[test]
    fn latency_multiplies_the_spans_of_the_service_and_lengthens_what_encloses_them() {
        let slow = Injection::Latency {
            service: "payment".into(),
            operation: None,
            factor: 3.0,
            from_ns: i64::MIN,
        };
        let mut slowed_spans = 0;
        for (plain, slowed) in traces(vec![], 100).iter().zip(&traces(vec![slow], 100)) {
            let before = by_span_id(plain);
            let parents: BTreeSet<&[u8]> = spans_of(plain)
                .map(|s| s.parent_span_id.as_slice())
                .collect();
            // Payment spans are leaves: each grows by twice its duration, and so does the root.
            let added: u64 = spans_with_service(plain)
                .filter(|(service, _)| *service == "payment")
                .map(|(_, span)| 2 * duration(span))
                .sum();
            for (service, span) in spans_with_service(slowed) {
                let was = duration(before[&span.span_id]);
                if service == "payment" {
                    assert_eq!(duration(span), 3 * was, "{span:?}");
                    slowed_spans += 1;
                } else if !parents.contains(span.span_id.as_slice()) {
                    assert_eq!(duration(span), was, "a leaf of {service}: {span:?}");
                } else if span.parent_span_id.is_empty() {
                    assert_eq!(duration(span), was + added, "the root {span:?}");
                }
            }
        }
        assert!(slowed_spans > 0);
    }

    #[test]
    fn latency_on_an_operation_leaves_the_other_operations_of_the_service_alone() {
        const SEARCH: &str = "ProductCatalogService/SearchProducts";
        let slow = Injection::Latency {
            service: "product-catalog".into(),
            operation: Some(SEARCH.into()),
            factor: 3.0,
            from_ns: i64::MIN,
        };
        let (mut slowed, mut others) = (0, 0);
        for (plain, injected) in traces(vec![], 100).iter().zip(&traces(vec![slow], 100)) {
            let before = by_span_id(plain);
            for (service, span) in spans_with_service(injected) {
                let was = duration(before[&span.span_id]);
                if service != "product-catalog" {
                    continue;
                }
                if span.name == SEARCH {
                    assert!(duration(span) > was, "{span:?}");
                    slowed += 1;
                } else {
                    assert_eq!(duration(span), was, "{span:?}");
                    others += 1;
                }
            }
        }
        assert!(slowed > 0 && others > 0);
    }

    #[test]
    fn errors_at_rate_one_fail_every_server_span_of_the_service_and_nothing_else() {
        let failing = Injection::Errors {
            service: "payment".into(),
            rate: 1.0,
            from_ns: i64::MIN,
        };
        let mut failed = 0;
        for (plain, injected) in traces(vec![], 200).iter().zip(&traces(vec![failing], 200)) {
            let before = by_span_id(plain);
            for (service, span) in spans_with_service(injected) {
                if service != "payment" {
                    assert_eq!(span, before[&span.span_id]);
                    continue;
                }
                if span.kind != SpanKind::Server as i32 {
                    continue;
                }
                assert!(is_error(span), "{span:?}");
                let message = span.status.as_ref().map(|s| s.message.as_str());
                assert_eq!(message, Some(INJECTED_ERROR_MESSAGE));
                let error_type = str_attr(&span.attributes, "error.type");
                assert_eq!(error_type, Some(INJECTED_ERROR_TYPE));
                failed += 1;
            }
        }
        assert!(failed > 0);
    }

    #[test]
    fn traffic_factor_two_sends_each_trace_through_the_service_twice() {
        let doubled = Injection::Traffic {
            service: "checkout".into(),
            factor: 2.0,
            from_ns: i64::MIN,
        };
        let plain = traces(vec![], 200);
        let injected = traces(vec![doubled], 200);
        assert!(count_through(&plain, "checkout") > 0);
        assert_eq!(
            count_through(&injected, "checkout"),
            2 * count_through(&plain, "checkout")
        );
        for (plain, injected) in plain.iter().zip(&injected) {
            if traces_through(plain, "checkout").is_empty() {
                assert_eq!(injected, plain);
            } else {
                assert_eq!(spans_of(injected).count(), 2 * spans_of(plain).count());
                assert_whole_traces(injected);
            }
        }
    }

    #[test]
    fn traffic_factor_one_and_a_half_sends_about_half_as_many_traces_again() {
        let more = Injection::Traffic {
            service: "frontend".into(),
            factor: 1.5,
            from_ns: i64::MIN,
        };
        let before = count_through(&traces(vec![], 200), "frontend") as f64;
        let after = count_through(&traces(vec![more], 200), "frontend") as f64;
        let ratio = after / before;
        assert!(
            (1.35..=1.65).contains(&ratio),
            "{after} traces after {before}"
        );
    }

    #[test]
    fn traffic_factor_zero_drops_the_traces_through_the_service() {
        let none = Injection::Traffic {
            service: "checkout".into(),
            factor: 0.0,
            from_ns: i64::MIN,
        };
        let mut dropped = 0;
        for (plain, injected) in traces(vec![], 200).iter().zip(&traces(vec![none], 200)) {
            if traces_through(plain, "checkout").is_empty() {
                assert_eq!(injected, plain);
            } else {
                assert!(injected.resource_spans.is_empty(), "{injected:?}");
                dropped += 1;
            }
        }
        assert!(dropped > 0);
    }

    #[test]
    fn injections_apply_to_traces_starting_from_their_time() {
        let from_ns = 100 * SPACING_NS;
        let failing = Injection::Errors {
            service: "frontend".into(),
            rate: 1.0,
            from_ns,
        };
        let plain = traces(vec![], 200);
        let injected = traces(vec![failing], 200);
        let mut changed = 0;
        for (n, (plain, injected)) in (0..).zip(plain.iter().zip(&injected)) {
            if n * SPACING_NS < from_ns || traces_through(plain, "frontend").is_empty() {
                assert_eq!(injected, plain, "trace {n}");
            } else {
                assert_ne!(injected, plain, "trace {n}");
                changed += 1;
            }
        }
        assert!(changed > 0);
        let never = vec![
            Injection::Latency {
                service: "frontend".into(),
                operation: None,
                factor: 3.0,
                from_ns: i64::MAX,
            },
            Injection::Errors {
                service: "frontend".into(),
                rate: 1.0,
                from_ns: i64::MAX,
            },
            Injection::Traffic {
                service: "frontend".into(),
                factor: 2.0,
                from_ns: i64::MAX,
            },
        ];
        assert_eq!(traces(never, 200), plain);
    }

    #[test]
    fn logs_and_metrics_cover_every_trace_of_a_request_however_many_it_holds() {
        let injections = vec![
            Injection::Traffic {
                service: "frontend".into(),
                factor: 3.0,
                from_ns: i64::MIN,
            },
            Injection::Traffic {
                service: "email".into(),
                factor: 0.0,
                from_ns: i64::MIN,
            },
        ];
        let mut generator = Generator::new(7).with_injections(injections);
        let mut aggregator = MetricsAggregator::default();
        let (mut server_spans, mut empty) = (0, 0);
        for n in 0..100 {
            let trace = generator.trace_at(n * SPACING_NS);
            let logs = generator.logs_for(&trace);
            aggregator.observe(&trace);
            let servers: BTreeSet<(&[u8], &[u8])> = spans_of(&trace)
                .filter(|s| s.kind == SpanKind::Server as i32)
                .map(|s| (s.trace_id.as_slice(), s.span_id.as_slice()))
                .collect();
            let logged: BTreeSet<(&[u8], &[u8])> = records(&logs)
                .filter(|r| r.severity_number == SeverityNumber::Info as i32)
                .map(|r| (r.trace_id.as_slice(), r.span_id.as_slice()))
                .collect();
            assert_eq!(logged, servers);
            server_spans += servers.len() as u64;
            if trace.resource_spans.is_empty() {
                assert!(logs.resource_logs.is_empty());
                empty += 1;
            }
        }
        assert!(empty > 0);
        // Each server span counts once in a request counter and once in a histogram.
        let counted: u64 = cumulative_counts(&aggregator.export_at(0)).values().sum();
        assert_eq!(counted, 2 * server_spans);
    }

    /// The first `count` traces of seed 7 in the wide shape, one every [`SPACING_NS`].
    fn wide_traces(count: i64) -> Vec<ExportTraceServiceRequest> {
        let mut generator = Generator::new(7).with_shape(TraceShape::Wide);
        (0..count)
            .map(|n| generator.trace_at(n * SPACING_NS))
            .collect()
    }

    /// Whether a span of `service` encloses `span` among `spans`, the spans of its trace.
    fn has_ancestor_of(spans: &[(&str, &Span)], span: &Span, service: &str) -> bool {
        let mut parent = span.parent_span_id.as_slice();
        while let Some((parent_service, parent_span)) =
            spans.iter().find(|(_, s)| s.span_id.as_slice() == parent)
        {
            if *parent_service == service {
                return true;
            }
            parent = parent_span.parent_span_id.as_slice();
        }
        false
    }

    #[test]
    fn the_shop_shape_is_the_default() {
        let mut plain = Generator::new(7);
        let mut shop = Generator::new(7).with_shape(TraceShape::Shop);
        for n in 0..200 {
            let t = n * SPACING_NS;
            assert_eq!(shop.trace_at(t), plain.trace_at(t));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_wide_traces() {
        assert_eq!(wide_traces(100), wide_traces(100));
    }

    #[test]
    fn wide_traces_are_whole_and_hold_about_fourteen_spans() {
        let traces = wide_traces(2000);
        for trace in &traces {
            assert_whole_traces(trace);
        }
        let counts: Vec<usize> = traces.iter().map(|t| spans_of(t).count()).collect();
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        assert!((12.0..=16.0).contains(&mean), "{mean} spans per trace");
        let least = counts.iter().min().copied().unwrap_or_default();
        let most = counts.iter().max().copied().unwrap_or_default();
        assert!(
            least >= 4 && most <= 40,
            "from {least} to {most} spans per trace"
        );
    }

    #[test]
    fn each_query_of_the_search_benchmark_matches_its_share_of_wide_traces() {
        // The benchmark's TraceQL queries, each with the least and the most percent of the
        // traces it should match; the conditions below check the same on the spans.
        let queries = [
            (r#"{ resource.service.name = "payment" }"#, 18.0, 30.0),
            ("{ status = error }", 2.0, 7.0),
            (
                r#"{ span.http.status_code >= 500 && resource.service.name = "checkout" }"#,
                0.5,
                5.0,
            ),
            ("{ duration > 200ms }", 0.5, 4.0),
            (
                r#"{ span.http.route = "/api/cart" && kind = server }"#,
                15.0,
                25.0,
            ),
            (
                r#"{ resource.service.name = "frontend" } >> { span.db.system = "redis" }"#,
                50.0,
                100.0,
            ),
            ("{ } | count() > 20", 4.0, 10.0),
            (r#"{ name =~ "GET.*" && span.retry = true }"#, 0.5, 5.0),
        ];
        let traces = wide_traces(2000);
        let mut matched = [0_u32; 8];
        for trace in &traces {
            let spans: Vec<(&str, &Span)> = spans_with_service(trace).collect();
            let any = |test: &dyn Fn(&str, &Span) -> bool| {
                spans.iter().any(|&(service, span)| test(service, span))
            };
            let hits = [
                any(&|service, _| service == "payment"),
                any(&|_, span| is_error(span)),
                any(&|service, span| {
                    let status = attr(&span.attributes, "http.status_code");
                    let failed = matches!(status, Some(Value::IntValue(code)) if *code >= 500);
                    service == "checkout" && failed
                }),
                any(&|_, span| duration(span) > 200_000_000),
                any(&|_, span| {
                    span.kind == SpanKind::Server as i32
                        && str_attr(&span.attributes, "http.route") == Some("/api/cart")
                }),
                any(&|_, span| {
                    str_attr(&span.attributes, "db.system") == Some("redis")
                        && has_ancestor_of(&spans, span, "frontend")
                }),
                spans.len() > 20,
                any(&|_, span| {
                    span.name.starts_with("GET")
                        && attr(&span.attributes, "retry") == Some(&Value::BoolValue(true))
                }),
            ];
            for (count, hit) in matched.iter_mut().zip(hits) {
                *count += u32::from(hit);
            }
        }
        for ((query, least, most), count) in queries.iter().zip(matched) {
            let percent = 100.0 * f64::from(count) / traces.len() as f64;
            assert!(
                (*least..=*most).contains(&percent),
                "{query} matched {percent}% of the traces, not {least}% to {most}%"
            );
        }
    }
}
