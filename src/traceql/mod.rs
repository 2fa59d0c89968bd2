//! The TraceQL language: text in, checked syntax tree out.
//!
//! Queries are written in Grafana Tempo's TraceQL. This module owns the [`lexer`], the
//! recursive-descent [`parser`], the [`ast`], the static checks of [`validate`], canonical
//! printing (`Display` on every AST node, in `print`) and constant folding ([`rewrite`]). It
//! knows nothing of tables or plans and never evaluates a query: [`crate::query::traceql`]
//! lowers a checked [`Query`] to DataFusion plans, and [`crate::query::search`] runs them.
//!
//! Errors come in three kinds, as in Tempo's conformance list: [`ParseError`] (with line and
//! column), [`ValidateError::Invalid`] (the query is ill-typed) and
//! [`ValidateError::Unsupported`] (valid TraceQL that Tempo does not run either).
//!
//! ```
//! use spanlake::traceql::{self, CheckError};
//!
//! let query = traceql::check(r#"{ span.http.status_code >= 500 } | count() > 2"#).unwrap();
//! assert_eq!(query.to_string(), "{ span.http.status_code >= 500 } | count() > 2");
//!
//! assert!(matches!(traceql::check("{ .a < 3"), Err(CheckError::Parse(_))));
//! assert!(matches!(traceql::check("{ 1 + 1 }"), Err(CheckError::Validate(_))));
//! ```

pub mod ast;
pub mod lexer;
pub mod parser;
mod print;
pub mod rewrite;
pub mod validate;

pub use ast::Query;
pub use lexer::Pos;
pub use validate::{ValidateError, validate};

/// How deeply expressions may nest before the parser refuses the query.
pub const MAX_NESTING: usize = 100;

/// A query that is not TraceQL, with the place where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error at line {line}, col {col}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What was found and what was expected.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }
}

/// Why [`check`] rejected a query.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    /// The text is not TraceQL.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The text parses but is ill-typed or unsupported.
    #[error(transparent)]
    Validate(#[from] ValidateError),
}

impl CheckError {
    /// True when the query is valid TraceQL that is not supported.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Validate(ValidateError::Unsupported(_)))
    }
}

/// A regex pattern that matches as a plain string test does, TraceQL anchoring the regex
/// to the whole value: a literal, a literal prefix (`GET.*`), suffix (`.*/cart`) or infix
/// (`.*cart.*`). `.*` matches any text there, newlines included, as in the anchored regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralRegex<'a> {
    /// The whole value is the text.
    Equals(&'a str),
    /// The value contains the text.
    Contains(&'a str),
    /// The value starts with the text.
    StartsWith(&'a str),
    /// The value ends with the text.
    EndsWith(&'a str),
}

impl<'a> LiteralRegex<'a> {
    /// The string test `pattern` amounts to; `None` when it needs the regex engine.
    pub fn of(pattern: &'a str) -> Option<Self> {
        let literal = |text: &'a str| (regex::escape(text) == text).then_some(text);
        let prefix = pattern.strip_suffix(".*");
        let infix = prefix.and_then(|p| p.strip_prefix(".*"));
        let suffix = pattern.strip_prefix(".*");
        literal(pattern)
            .map(Self::Equals)
            .or_else(|| infix.and_then(literal).map(Self::Contains))
            .or_else(|| prefix.and_then(literal).map(Self::StartsWith))
            .or_else(|| suffix.and_then(literal).map(Self::EndsWith))
    }

    /// Whether `value` passes the test: what the anchored regex would answer.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Equals(text) => value == *text,
            Self::Contains(text) => value.contains(text),
            Self::StartsWith(text) => value.starts_with(text),
            Self::EndsWith(text) => value.ends_with(text),
        }
    }
}

/// Parses a query without validating it.
pub fn parse(input: &str) -> Result<Query, ParseError> {
    parser::parse(input)
}

/// Parses and validates a query.
pub fn check(input: &str) -> Result<Query, CheckError> {
    let query = parse(input)?;
    validate(&query)?;
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::LiteralRegex;

    #[test]
    fn literal_regexes_answer_as_the_anchored_regex() {
        let values = [
            "",
            "GET",
            "GET /cart",
            "POST /get",
            "x\nGET",
            "GET\n",
            "unknown_service",
        ];
        let patterns = [
            "GET",
            "GET.*",
            ".*GET",
            ".*GET.*",
            ".*",
            ".*.*",
            "unknown_service",
            "",
        ];
        for pattern in patterns {
            let shape =
                LiteralRegex::of(pattern).unwrap_or_else(|| panic!("{pattern:?} is a string test"));
            let regex = regex::Regex::new(&format!("^(?s:{pattern})$")).unwrap();
            for value in values {
                assert_eq!(
                    shape.matches(value),
                    regex.is_match(value),
                    "{pattern:?} on {value:?}"
                );
            }
        }
        for pattern in ["G.T", "GET|POST", "a\\.b", "(GET)", "GET.+"] {
            assert_eq!(LiteralRegex::of(pattern), None, "{pattern:?}");
        }
    }
}
