//! DataFusion functions for trace analytics, usable by any DataFusion application.
//!
//! - `to_trace_id(text)` / `to_span_id(text)`: a hex id (as OTLP JSON and Tempo print it) to the
//!   16- or 8-byte binary stored in `trace_id` / `span_id` columns. With a constant argument the
//!   call folds to a literal during planning, so `WHERE trace_id = to_trace_id('…')` still prunes
//!   Parquet row groups by statistics and bloom filter.
//! - `id_hex(binary)`: any binary id back to lowercase hex.
//!
//! ```
//! # use datafusion::prelude::SessionContext;
//! let ctx = SessionContext::new();
//! spanlake_udfs::register(&ctx);
//! ```

mod ids;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use ids::{IdError, IdHex, ToId, parse_hex_id};

/// Every scalar function of this crate.
pub fn scalar_functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(ToId::trace_id()),
        ScalarUDF::new_from_impl(ToId::span_id()),
        ScalarUDF::new_from_impl(IdHex::default()),
    ]
}

/// Registers every function of this crate with `ctx`.
pub fn register(ctx: &SessionContext) {
    for udf in scalar_functions() {
        ctx.register_udf(udf);
    }
}
