//! Turns query text into tokens (reference §1).
//!
//! Owns the lexical rules only: numbers, durations, strings, comments, operators, scope prefixes
//! and attribute-name mode. Keywords stay [`Token::Word`]s; the parser decides what a word means.

use super::ParseError;
use super::ast::AttrScope;
use crate::time::{DurationSyntax, parse_duration_ns};

/// A position in the query text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line number.
    pub line: usize,
    /// Column, counted in characters.
    pub col: usize,
}

/// The intrinsic namespaces written `scope:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrinsicScope {
    /// `trace:`
    Trace,
    /// `span:`
    Span,
    /// `event:`
    Event,
    /// `link:`
    Link,
    /// `instrumentation:`
    Instrumentation,
}

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// An identifier or keyword.
    Word(String),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A duration literal, in nanoseconds.
    Duration(i64),
    /// A string literal, unescaped.
    Str(String),
    /// An attribute: prefix and name.
    Attr {
        /// True after `parent.`.
        parent: bool,
        /// The scope prefix.
        scope: AttrScope,
        /// The name, with quotes and escapes resolved.
        name: String,
    },
    /// `trace:`, `span:`, `event:`, `link:`, `instrumentation:`.
    Scope(IntrinsicScope),
    /// An operator or punctuation, e.g. `{`, `!>>`.
    Punct(&'static str),
    /// End of input.
    Eof,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(w) => write!(f, "'{w}'"),
            Token::Int(v) => write!(f, "integer {v}"),
            Token::Float(v) => write!(f, "float {v}"),
            Token::Duration(_) => write!(f, "duration"),
            Token::Str(s) => write!(f, "string {s:?}"),
            Token::Attr { .. } => write!(f, "attribute"),
            Token::Scope(_) => write!(f, "scoped intrinsic"),
            Token::Punct(p) => write!(f, "'{p}'"),
            Token::Eof => write!(f, "end of query"),
        }
    }
}

/// Every operator and punctuation token, for longest-match lexing.
const PUNCTS: &[&str] = &[
    "{", "}", "(", ")", ",", "=", "!=", "<", "<=", ">", ">=", "=~", "!~", "+", "-", "*", "/", "%",
    "^", "!", "&&", "||", "|", ">>", "<<", "~", "!>", "!<", "!>>", "!<<", "&>", "&<", "&>>", "&<<",
    "&~",
];

/// Characters that end an unquoted attribute name.
const NAME_TERMINATORS: &[char] = &[
    '{', '}', '(', ')', '=', '~', '!', '<', '>', '&', '|', '^', ',',
];

/// Whether `c` ends an unquoted attribute name.
pub(crate) fn ends_attribute_name(c: char) -> bool {
    c.is_whitespace() || NAME_TERMINATORS.contains(&c)
}

/// Lexes the whole input.
pub fn tokenize(input: &str) -> Result<Vec<(Token, Pos)>, ParseError> {
    let mut lexer = Lexer {
        chars: input.chars().collect(),
        at: 0,
        line: 1,
        col: 1,
    };
    let mut tokens = Vec::new();
    loop {
        let (token, pos) = lexer.next_token()?;
        let end = token == Token::Eof;
        tokens.push((token, pos));
        if end {
            return Ok(tokens);
        }
    }
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: usize,
    col: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn error(pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError::new(pos, message)
    }

    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.pos();
                    self.bump();
                    self.bump();
                    loop {
                        match (self.peek(0), self.peek(1)) {
                            (Some('*'), Some('/')) => {
                                self.bump();
                                self.bump();
                                break;
                            }
                            (Some(_), _) => {
                                self.bump();
                            }
                            (None, _) => {
                                return Err(Self::error(start, "unterminated /* comment"));
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn next_token(&mut self) -> Result<(Token, Pos), ParseError> {
        self.skip_trivia()?;
        let pos = self.pos();
        let Some(c) = self.peek(0) else {
            return Ok((Token::Eof, pos));
        };
        let token = if c.is_ascii_digit()
            || (c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit()))
        {
            self.number(pos)?
        } else if c == '.' {
            self.bump();
            self.attribute(pos, false, AttrScope::None)?
        } else if c == '"' {
            self.bump();
            Token::Str(self.quoted_string(pos)?)
        } else if c == '`' {
            self.bump();
            Token::Str(self.raw_string(pos)?)
        } else if c == '\'' {
            return Err(Self::error(
                pos,
                "single quotes do not make a string; use \"…\" or `…`",
            ));
        } else if c.is_alphabetic() || c == '_' {
            self.word(pos)?
        } else {
            self.punct(pos)?
        };
        Ok((token, pos))
    }

    fn punct(&mut self, pos: Pos) -> Result<Token, ParseError> {
        let mut best: Option<&'static str> = None;
        let mut text = String::new();
        for ahead in 0..3 {
            let Some(c) = self.peek(ahead) else { break };
            text.push(c);
            if let Some(p) = PUNCTS.iter().find(|p| **p == text) {
                best = Some(p);
            }
        }
        let Some(p) = best else {
            let c = self.peek(0).unwrap_or(' ');
            return Err(Self::error(pos, format!("unexpected character '{c}'")));
        };
        for _ in 0..p.chars().count() {
            self.bump();
        }
        Ok(Token::Punct(p))
    }

    fn word(&mut self, pos: Pos) -> Result<Token, ParseError> {
        let mut word = String::new();
        while let Some(c) = self.peek(0).filter(|c| c.is_alphanumeric() || *c == '_') {
            word.push(c);
            self.bump();
        }
        let next = self.peek(0);
        if next == Some('.') {
            let scope = match word.as_str() {
                "span" => Some(AttrScope::Span),
                "resource" => Some(AttrScope::Resource),
                "event" => Some(AttrScope::Event),
                "link" => Some(AttrScope::Link),
                "instrumentation" => Some(AttrScope::Instrumentation),
                _ => None,
            };
            if let Some(scope) = scope {
                self.bump();
                return self.attribute(pos, false, scope);
            }
            if word == "parent" {
                self.bump();
                let scope = if self.followed_by("span.") {
                    AttrScope::Span
                } else if self.followed_by("resource.") {
                    AttrScope::Resource
                } else {
                    AttrScope::None
                };
                return self.attribute(pos, true, scope);
            }
        }
        if next == Some(':') {
            let scope = match word.as_str() {
                "trace" => Some(IntrinsicScope::Trace),
                "span" => Some(IntrinsicScope::Span),
                "event" => Some(IntrinsicScope::Event),
                "link" => Some(IntrinsicScope::Link),
                "instrumentation" => Some(IntrinsicScope::Instrumentation),
                _ => None,
            };
            if let Some(scope) = scope {
                self.bump();
                return Ok(Token::Scope(scope));
            }
        }
        Ok(Token::Word(word))
    }

    /// Consumes `text` if the input continues with it.
    fn followed_by(&mut self, text: &str) -> bool {
        let matches = text
            .chars()
            .enumerate()
            .all(|(i, c)| self.peek(i) == Some(c));
        if matches {
            for _ in text.chars() {
                self.bump();
            }
        }
        matches
    }

    /// Reads an attribute name after its prefix (reference §1.9).
    fn attribute(&mut self, pos: Pos, parent: bool, scope: AttrScope) -> Result<Token, ParseError> {
        let mut name = String::new();
        while let Some(c) = self.peek(0) {
            if c == '"' {
                let quote = self.pos();
                self.bump();
                loop {
                    match self.bump() {
                        Some('"') => break,
                        Some('\\') => match self.bump() {
                            Some(e @ ('"' | '\\')) => name.push(e),
                            _ => {
                                return Err(Self::error(
                                    quote,
                                    "invalid escape sequence in quoted attribute name; only \\\" and \\\\ are allowed",
                                ));
                            }
                        },
                        Some(c) => name.push(c),
                        None => {
                            return Err(Self::error(quote, "unterminated quoted attribute name"));
                        }
                    }
                }
            } else if ends_attribute_name(c) {
                break;
            } else {
                name.push(c);
                self.bump();
            }
        }
        if name.is_empty() {
            return Err(Self::error(
                pos,
                "expected an attribute name right after the scope prefix, e.g. `span.http.url`",
            ));
        }
        Ok(Token::Attr {
            parent,
            scope,
            name,
        })
    }

    /// Reads a number, and a duration when unit runes follow it (reference §1.5–1.6).
    fn number(&mut self, pos: Pos) -> Result<Token, ParseError> {
        let mut text = String::new();
        let mut is_float = false;
        while let Some(c) = self.peek(0).filter(char::is_ascii_digit) {
            text.push(c);
            self.bump();
        }
        if self.peek(0) == Some('.') {
            is_float = true;
            text.push('.');
            self.bump();
            while let Some(c) = self.peek(0).filter(char::is_ascii_digit) {
                text.push(c);
                self.bump();
            }
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            let sign = usize::from(matches!(self.peek(1), Some('+' | '-')));
            if self.peek(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                is_float = true;
                for _ in 0..=sign {
                    text.extend(self.bump());
                }
                while let Some(c) = self.peek(0).filter(char::is_ascii_digit) {
                    text.push(c);
                    self.bump();
                }
            }
        }

        let mut run = 0;
        while self
            .peek(run)
            .is_some_and(|c| c.is_ascii_digit() || ".nsumhµdwy".contains(c))
        {
            run += 1;
        }
        if run > 0 {
            let mut candidate = text.clone();
            candidate.extend((0..run).filter_map(|i| self.peek(i)));
            if let Some(nanos) = parse_duration_ns(&candidate, DurationSyntax::Either) {
                for _ in 0..run {
                    self.bump();
                }
                return Ok(Token::Duration(nanos));
            }
        }

        if is_float {
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Token::Float(v)),
                _ => Err(Self::error(
                    pos,
                    format!("float literal {text} is out of range"),
                )),
            }
        } else {
            text.parse::<i64>().map(Token::Int).map_err(|_| {
                Self::error(
                    pos,
                    format!("integer literal {text} does not fit in 64 bits"),
                )
            })
        }
    }

    fn quoted_string(&mut self, pos: Pos) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            let here = self.pos();
            match self.bump() {
                None | Some('\n') => return Err(Self::error(pos, "unterminated string literal")),
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape(here)?),
                Some(c) => out.push(c),
            }
        }
    }

    fn escape(&mut self, pos: Pos) -> Result<char, ParseError> {
        let bad =
            |what: &str| Self::error(pos, format!("invalid escape sequence in string: {what}"));
        let c = self.bump().ok_or_else(|| bad("input ends after \\"))?;
        let simple = match c {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            _ => None,
        };
        if let Some(s) = simple {
            return Ok(s);
        }
        let (digits, radix) = match c {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => return Err(bad(&format!("\\{c}"))),
        };
        let mut value: u32 = if radix == 8 {
            c.to_digit(8).unwrap_or(0)
        } else {
            0
        };
        for _ in 0..digits {
            let d = self
                .bump()
                .and_then(|d| d.to_digit(radix))
                .ok_or_else(|| bad(&format!("\\{c} needs {digits} more digits")))?;
            value = value.saturating_mul(radix).saturating_add(d);
        }
        if matches!(c, 'x' | '0'..='7') && value > 0x7f {
            return Err(bad("byte escapes above \\x7f would not be valid UTF-8"));
        }
        char::from_u32(value).ok_or_else(|| bad("not a Unicode code point"))
    }

    fn raw_string(&mut self, pos: Pos) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(Self::error(pos, "unterminated raw string literal")),
                Some('`') => return Ok(out),
                // Go drops carriage returns from raw strings.
                Some('\r') => {}
                Some(c) => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: &str) -> Vec<Token> {
        tokenize(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    fn first(input: &str) -> Token {
        tokens(input).into_iter().next().unwrap_or(Token::Eof)
    }

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn durations_accept_prometheus_and_go_forms() {
        assert_eq!(first("1s"), Token::Duration(SECOND));
        assert_eq!(first("250ms"), Token::Duration(250_000_000));
        assert_eq!(first("1h30m"), Token::Duration(5_400 * SECOND));
        assert_eq!(first("1d12h"), Token::Duration(36 * 3_600 * SECOND));
        assert_eq!(first("1w"), Token::Duration(7 * 86_400 * SECOND));
        assert_eq!(first("1y"), Token::Duration(365 * 86_400 * SECOND));
        assert_eq!(first("1.5m"), Token::Duration(90 * SECOND));
        assert_eq!(first("10ns"), Token::Duration(10));
        assert_eq!(first("3us"), Token::Duration(3_000));
        assert_eq!(first("3µs"), Token::Duration(3_000));
        assert_eq!(first(".24h"), Token::Duration(864 * SECOND));
        assert_eq!(
            first("1h15m30.918273645s"),
            Token::Duration(4_530 * SECOND + 918_273_645)
        );
        assert_eq!(first("1s500ms"), Token::Duration(1_500_000_000));
        assert_eq!(first("1ms500us"), Token::Duration(1_500_000));
    }

    #[test]
    fn number_followed_by_unknown_unit_stays_a_number() {
        assert_eq!(
            tokens("1t"),
            vec![Token::Int(1), Token::Word("t".into()), Token::Eof]
        );
        assert_eq!(first("1.5d").to_string(), "float 1.5");
    }

    #[test]
    fn numbers_follow_go_syntax() {
        assert_eq!(first("42"), Token::Int(42));
        assert_eq!(first(".99"), Token::Float(0.99));
        assert_eq!(first("1."), Token::Float(1.0));
        assert_eq!(first("2.5E-3"), Token::Float(0.0025));
        assert_eq!(first("1e3"), Token::Float(1000.0));
        assert!(tokenize("100000000000000000000000000000").is_err());
    }

    #[test]
    fn quoted_attribute_names_keep_their_content() {
        let attr = |scope, name: &str| Token::Attr {
            parent: false,
            scope,
            name: name.into(),
        };
        assert_eq!(first(r#"span."foo bar""#), attr(AttrScope::Span, "foo bar"));
        assert_eq!(first(r#"."a\"b""#), attr(AttrScope::None, "a\"b"));
        assert_eq!(first(r#"."a\\b""#), attr(AttrScope::None, "a\\b"));
        assert_eq!(
            first(r#"span.attribute."x y""#),
            attr(AttrScope::Span, "attribute.x y")
        );
        assert_eq!(
            first(r#"."foo".baz."bar""#),
            attr(AttrScope::None, "foo.baz.bar")
        );
        assert!(tokenize(r#"."a\nb""#).is_err());
        assert!(tokenize(r#"."ab"#).is_err());
    }

    #[test]
    fn attribute_names_end_only_at_terminators() {
        let attr = |name: &str| Token::Attr {
            parent: false,
            scope: AttrScope::None,
            name: name.into(),
        };
        assert_eq!(first(".foo+bar"), attr("foo+bar"));
        assert_eq!(first(".a/2"), attr("a/2"));
        assert_eq!(
            tokens(".a=2"),
            vec![attr("a"), Token::Punct("="), Token::Int(2), Token::Eof]
        );
        assert_eq!(
            first("span.resource.foo"),
            Token::Attr {
                parent: false,
                scope: AttrScope::Span,
                name: "resource.foo".into()
            }
        );
        assert_eq!(
            first("parent.resource.foo"),
            Token::Attr {
                parent: true,
                scope: AttrScope::Resource,
                name: "foo".into()
            }
        );
        assert!(tokenize("span. ").is_err());
        assert!(tokenize(". foo").is_err());
    }

    #[test]
    fn comments_are_skipped_outside_attribute_names() {
        assert_eq!(
            tokens("{ // line\n true /* block */ }"),
            vec![
                Token::Punct("{"),
                Token::Word("true".into()),
                Token::Punct("}"),
                Token::Eof
            ]
        );
        assert!(tokenize("{ /* open").is_err());
    }

    #[test]
    fn string_escapes_follow_go() {
        assert_eq!(first(r#""a\tb\n\"\\""#), Token::Str("a\tb\n\"\\".into()));
        assert_eq!(
            first(r#""\x41\101\u00e9\U0001F600""#),
            Token::Str("AAé😀".into())
        );
        assert_eq!(first("`raw \\n`"), Token::Str("raw \\n".into()));
        assert!(tokenize(r#""\q""#).is_err());
        assert!(tokenize("'a'").is_err());
        assert!(tokenize("\"open").is_err());
    }

    #[test]
    fn operators_match_longest_first() {
        assert_eq!(
            tokens("!>> &<< &~ !~ >= =~"),
            vec![
                Token::Punct("!>>"),
                Token::Punct("&<<"),
                Token::Punct("&~"),
                Token::Punct("!~"),
                Token::Punct(">="),
                Token::Punct("=~"),
                Token::Eof
            ]
        );
        assert_eq!(tokens("==")[..2], [Token::Punct("="), Token::Punct("=")]);
        assert!(tokenize("&").is_err());
    }

    #[test]
    fn scope_colon_is_one_token() {
        assert_eq!(
            tokens("trace:id"),
            vec![
                Token::Scope(IntrinsicScope::Trace),
                Token::Word("id".into()),
                Token::Eof
            ]
        );
    }
}
