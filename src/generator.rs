//! Deterministic synthetic traces: a small shop of services calling each other over HTTP, gRPC,
//! a database and a queue, with typed attributes, errors, events and links.
//!
//! The same seed and start times give byte-identical traces on every machine: the generator
//! uses its own SplitMix64 stream rather than a library RNG whose algorithm may change.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
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
}

/// Generates traces from a seed.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    /// The last producer span, linked from the next queue consumer.
    last_producer: Option<(Vec<u8>, Vec<u8>)>,
}

const ROUTES: &[&str] = &["/", "/cart", "/checkout", "/product/{id}", "/search"];
const PRODUCTS: &[&str] = &[
    "OLJCESPC7Z",
    "66VCHSJNUP",
    "1YMWWN1N4O",
    "L9ECAV7KIM",
    "2ZYFJ3GM2N",
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

impl Generator {
    /// A generator whose output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            last_producer: None,
        }
    }

    fn id(&mut self, bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes);
        while out.len() < bytes {
            out.extend_from_slice(&self.rng.next().to_be_bytes());
        }
        out.truncate(bytes);
        if out.iter().all(|b| *b == 0) {
            out[bytes - 1] = 1;
        }
        out
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

    /// One whole trace starting at `start_ns` (Unix nanoseconds), as an export request with
    /// one resource per service.
    pub fn trace_at(&mut self, start_ns: i64) -> ExportTraceServiceRequest {
        let tree = self.request_tree();
        let trace_id = self.id(16);
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
                        scope: Some(InstrumentationScope {
                            name: "spanlake-gen".into(),
                            version: "1".into(),
                            ..Default::default()
                        }),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
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
        let span_id = self.id(8);
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
                    s("exception.type", "PaymentError"),
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

#[cfg(test)]
mod tests {
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
}
