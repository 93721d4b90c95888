//! Kong's value templates (`pl.template` with `$(...)`), without Lua.
//!
//! Kong renders `$(expr)` in request-transformer values by running `expr` as Lua in a sandbox
//! whose globals are `headers`, `query_params`, `uri_captures`, `shared` and `type`. Users
//! write expressions such as `$(headers.host)`, `$(headers['x-id'])`, `$(uri_captures[1])`,
//! `$(query_params.q or 'none')` and `$(type(headers.x) == "table" and headers.x[1] or
//! headers.x)`. This module parses Lua's expression grammar (so what Kong refuses at write
//! time is refused here too) and evaluates it over those globals. What needs more than the
//! sandbox gives — calling any function but `type`, indexing something that is not a table,
//! arithmetic on text that is not a number — is a render error, which the plugin turns into
//! Kong's 500, as Kong does. Nothing here loops on input: parsing is recursive descent with a
//! depth bound, and evaluation walks the parsed tree once.

use std::fmt::Write;

/// Deepest expression nesting accepted.
const MAX_DEPTH: usize = 64;
/// Longest template accepted.
pub const MAX_TEMPLATE: usize = 8 * 1024;

/// A compiled template: text and expressions, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Nil,
    Bool(bool),
    Num(f64),
    Str(String),
    Name(String),
    Index(Box<Expr>, Box<Expr>),
    Call(Box<Expr>, Vec<Expr>),
    Method(Box<Expr>, String, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Len(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    /// A table constructor: parsed (it is valid Lua), unusable here.
    Table,
    /// `...` or a function literal: valid Lua, unusable here.
    Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Concat,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Num(f64),
    Str(String),
    /// A repeated header or query argument (a Lua array of strings).
    List(Vec<String>),
    /// One of the environment's tables.
    Global(Global),
    /// The `type` function.
    TypeFn,
}

/// The sandbox's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    Headers,
    QueryParams,
    UriCaptures,
    Shared,
}

/// What templates read: the request as the client sent it.
pub trait Env {
    /// A header by name (any case; `_` reads as `-`, as `ngx.req.get_headers` allows).
    fn header(&self, name: &str) -> Value;
    /// A query argument by exact name.
    fn query(&self, name: &str) -> Value;
    /// A regex path capture by position (0 is the whole match) or name.
    fn capture(&self, key: &Value) -> Value;
}

impl Value {
    fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "boolean",
            Value::Num(_) => "number",
            Value::Str(_) => "string",
            Value::List(_) | Value::Global(_) => "table",
            Value::TypeFn => "function",
        }
    }

    /// Lua's string coercion of numbers (`tonumber` of a numeric string for arithmetic).
    fn number(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Str(s) => {
                let t = s.trim();
                if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    return i64::from_str_radix(hex, 16).ok().map(|n| n as f64);
                }
                t.parse::<f64>().ok()
            }
            _ => None,
        }
    }

    /// Lua's `tostring`, as the template writes a value.
    pub fn render(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("nil"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Num(n) => out.push_str(&lua_number(*n)),
            Value::Str(s) => out.push_str(s),
            Value::List(_) | Value::Global(_) => out.push_str("table"),
            Value::TypeFn => out.push_str("function: builtin"),
        }
    }
}

/// `tostring` of a Lua number (`%.14g`, integers without a fraction).
pub fn lua_number(n: f64) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf" } else { "-inf" }.into();
    }
    if n.fract() == 0.0 && n.abs() < 1e15 {
        return format!("{}", n as i64);
    }
    let mut s = format!("{:.13e}", n);
    // Shorten like %.14g: parse back the mantissa and trim zeros.
    if let Some((m, e)) = s.split_once('e') {
        let exp: i32 = e.parse().unwrap_or(0);
        if (-5..15).contains(&exp) {
            s = format!("{}", (n * 1e14).round() / 1e14);
        } else {
            let m = m.trim_end_matches('0').trim_end_matches('.');
            s = format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        }
    }
    s
}

/// Why a template does not compile (Kong's `pl.template.compile` error), or fails to render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl Template {
    /// Compiles `src`: text with `$(expr)` parts (balanced parentheses, as Lua's `%b()`).
    pub fn compile(src: &str) -> Result<Template, TemplateError> {
        if src.len() > MAX_TEMPLATE {
            return Err(TemplateError(format!(
                "template longer than {MAX_TEMPLATE} bytes"
            )));
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = src;
        while let Some(at) = rest.find("$(") {
            let after = &rest[at + 1..];
            let Some(close) = balanced(after) else {
                break;
            };
            text.push_str(&rest[..at]);
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            let inner = &after[1..close];
            parts.push(Part::Expr(parse(inner)?));
            rest = &after[close + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// Whether the template is plain text (no expression).
    pub fn is_plain(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    pub fn render(&self, env: &dyn Env) -> Result<String, TemplateError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => eval(e, env, 0)?.render(&mut out),
            }
        }
        Ok(out)
    }
}

/// The index of the `)` closing the `(` at `s[0]`.
fn balanced(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Num(f64),
    Str(String),
    Sym(&'static str),
}

const KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];

const SYMBOLS: &[&str] = &[
    "...", "..", "==", "~=", "<=", ">=", "::", "<", ">", "=", "+", "-", "*", "/", "%", "^", "#",
    "(", ")", "{", "}", "[", "]", ";", ":", ",", ".",
];

fn lex(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let err = |m: &str| TemplateError(format!("[string \"template\"]: {m}"));
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("--") {
            // A comment runs to the end of the line.
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Name(src[start..i].to_string()));
            continue;
        }
        if c.is_ascii_digit() || c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            let start = i;
            if src[i..].starts_with("0x") || src[i..].starts_with("0X") {
                i += 2;
                while i < b.len() && b[i].is_ascii_hexdigit() {
                    i += 1;
                }
                let n = i64::from_str_radix(&src[start + 2..i], 16)
                    .map_err(|_| err("malformed number"))?;
                out.push(Tok::Num(n as f64));
                continue;
            }
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'.'
                    || (b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E'))
            {
                i += 1;
            }
            let n: f64 = src[start..i]
                .parse()
                .map_err(|_| err(&format!("malformed number near '{}'", &src[start..i])))?;
            out.push(Tok::Num(n));
            continue;
        }
        if c == b'"' || c == b'\'' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&d) = b.get(i) else {
                    return Err(err("unfinished string"));
                };
                if d == c {
                    i += 1;
                    break;
                }
                if d == b'\n' {
                    return Err(err("unfinished string"));
                }
                if d == b'\\' {
                    let e = *b.get(i + 1).ok_or_else(|| err("unfinished string"))?;
                    i += 2;
                    match e {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'r' => s.push('\r'),
                        b'a' => s.push('\x07'),
                        b'b' => s.push('\x08'),
                        b'f' => s.push('\x0c'),
                        b'v' => s.push('\x0b'),
                        b'\\' | b'"' | b'\'' | b'\n' => s.push(e as char),
                        b'0'..=b'9' => {
                            let mut n = (e - b'0') as u32;
                            for _ in 0..2 {
                                match b.get(i) {
                                    Some(d @ b'0'..=b'9') => {
                                        n = n * 10 + (d - b'0') as u32;
                                        i += 1;
                                    }
                                    _ => break,
                                }
                            }
                            let ch = char::from_u32(n)
                                .filter(|_| n < 256)
                                .ok_or_else(|| err("escape sequence too large"))?;
                            s.push(ch);
                        }
                        _ => return Err(err("invalid escape sequence")),
                    }
                    continue;
                }
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                s.push(ch);
                i += ch.len_utf8();
            }
            out.push(Tok::Str(s));
            continue;
        }
        if src[i..].starts_with("[[") || src[i..].starts_with("[=") {
            // A long string: [[...]] or [==[...]==].
            let level = src[i + 1..].bytes().take_while(|&x| x == b'=').count();
            if b.get(i + 1 + level) == Some(&b'[') {
                let close = format!("]{}]", "=".repeat(level));
                let body_start = i + 2 + level;
                let end = src[body_start..]
                    .find(&close)
                    .ok_or_else(|| err("unfinished long string"))?;
                out.push(Tok::Str(src[body_start..body_start + end].to_string()));
                i = body_start + end + close.len();
                continue;
            }
        }
        match SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            Some(s) => {
                out.push(Tok::Sym(s));
                i += s.len();
            }
            None => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(err(&format!("unexpected symbol near '{ch}'")));
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- parser

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

fn parse(src: &str) -> Result<Expr, TemplateError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr(0)?;
    if p.pos != p.toks.len() {
        return Err(p.error("')' expected"));
    }
    Ok(e)
}

/// Binary operators by Lua's precedence (left, right binding power).
fn binary(t: &Tok) -> Option<(Op, u8, u8)> {
    Some(match t {
        Tok::Name(n) if n == "or" => (Op::Or, 1, 1),
        Tok::Name(n) if n == "and" => (Op::And, 2, 2),
        Tok::Sym("<") => (Op::Lt, 3, 3),
        Tok::Sym(">") => (Op::Gt, 3, 3),
        Tok::Sym("<=") => (Op::Le, 3, 3),
        Tok::Sym(">=") => (Op::Ge, 3, 3),
        Tok::Sym("~=") => (Op::Ne, 3, 3),
        Tok::Sym("==") => (Op::Eq, 3, 3),
        // Right associative: the right side binds at the same level.
        Tok::Sym("..") => (Op::Concat, 5, 4),
        Tok::Sym("+") => (Op::Add, 6, 6),
        Tok::Sym("-") => (Op::Sub, 6, 6),
        Tok::Sym("*") => (Op::Mul, 7, 7),
        Tok::Sym("/") => (Op::Div, 7, 7),
        Tok::Sym("%") => (Op::Mod, 7, 7),
        Tok::Sym("^") => (Op::Pow, 10, 9),
        _ => return None,
    })
}

/// Unary operators bind tighter than any binary one but `^`.
const UNARY: u8 = 8;

impl Parser {
    fn error(&self, m: &str) -> TemplateError {
        let near = match self.toks.get(self.pos) {
            Some(Tok::Name(n)) => n.clone(),
            Some(Tok::Sym(s)) => s.to_string(),
            Some(Tok::Str(s)) => s.clone(),
            Some(Tok::Num(n)) => lua_number(*n),
            None => "<eof>".into(),
        };
        TemplateError(format!("[string \"template\"]: {m} near '{near}'"))
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str) -> Result<(), TemplateError> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(self.error(&format!("'{s}' expected")))
        }
    }

    fn expr(&mut self, min: u8) -> Result<Expr, TemplateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nests too deeply"));
        }
        let mut left = match self.peek() {
            Some(Tok::Name(n)) if n == "not" => {
                self.pos += 1;
                Expr::Not(Box::new(self.expr(UNARY)?))
            }
            Some(Tok::Sym("-")) => {
                self.pos += 1;
                Expr::Neg(Box::new(self.expr(UNARY)?))
            }
            Some(Tok::Sym("#")) => {
                self.pos += 1;
                Expr::Len(Box::new(self.expr(UNARY)?))
            }
            _ => self.simple()?,
        };
        while let Some((op, l, r)) = self.peek().and_then(binary) {
            if l <= min {
                break;
            }
            self.pos += 1;
            let right = self.expr(r)?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn simple(&mut self) -> Result<Expr, TemplateError> {
        let tok = self.peek().cloned();
        match tok {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Num(n))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Some(Tok::Name(n)) if n == "nil" => {
                self.pos += 1;
                Ok(Expr::Nil)
            }
            Some(Tok::Name(n)) if n == "true" || n == "false" => {
                self.pos += 1;
                Ok(Expr::Bool(n == "true"))
            }
            Some(Tok::Sym("...")) => {
                self.pos += 1;
                Ok(Expr::Unsupported)
            }
            Some(Tok::Sym("{")) => {
                self.table()?;
                Ok(Expr::Table)
            }
            Some(Tok::Name(n)) if n == "function" => Err(self.error("function literals are not supported")),
            _ => self.suffixed(),
        }
    }

    fn table(&mut self) -> Result<(), TemplateError> {
        self.expect("{")?;
        while !self.eat("}") {
            if self.eat("[") {
                self.expr(0)?;
                self.expect("]")?;
                self.expect("=")?;
            } else if matches!(self.peek(), Some(Tok::Name(_)))
                && matches!(self.toks.get(self.pos + 1), Some(Tok::Sym("=")))
            {
                self.pos += 2;
            }
            self.expr(0)?;
            if !self.eat(",") && !self.eat(";") {
                self.expect("}")?;
                break;
            }
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Expr, TemplateError> {
        match self.peek().cloned() {
            Some(Tok::Name(n)) if !KEYWORDS.contains(&n.as_str()) => {
                self.pos += 1;
                Ok(Expr::Name(n))
            }
            Some(Tok::Sym("(")) => {
                self.pos += 1;
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            _ => Err(self.error("unexpected symbol")),
        }
    }

    fn args(&mut self) -> Result<Vec<Expr>, TemplateError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(vec![Expr::Str(s)])
            }
            Some(Tok::Sym("{")) => {
                self.table()?;
                Ok(vec![Expr::Table])
            }
            _ => {
                self.expect("(")?;
                let mut args = Vec::new();
                if !self.eat(")") {
                    loop {
                        args.push(self.expr(0)?);
                        if self.eat(")") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Ok(args)
            }
        }
    }

    fn suffixed(&mut self) -> Result<Expr, TemplateError> {
        let mut e = self.primary()?;
        loop {
            match self.peek().cloned() {
                Some(Tok::Sym(".")) => {
                    self.pos += 1;
                    match self.peek().cloned() {
                        Some(Tok::Name(n)) if !KEYWORDS.contains(&n.as_str()) => {
                            self.pos += 1;
                            e = Expr::Index(Box::new(e), Box::new(Expr::Str(n)));
                        }
                        _ => return Err(self.error("<name> expected")),
                    }
                }
                Some(Tok::Sym("[")) => {
                    self.pos += 1;
                    let k = self.expr(0)?;
                    self.expect("]")?;
                    e = Expr::Index(Box::new(e), Box::new(k));
                }
                Some(Tok::Sym(":")) => {
                    self.pos += 1;
                    let Some(Tok::Name(m)) = self.peek().cloned() else {
                        return Err(self.error("<name> expected"));
                    };
                    self.pos += 1;
                    let args = self.args()?;
                    e = Expr::Method(Box::new(e), m, args);
                }
                Some(Tok::Sym("(")) | Some(Tok::Str(_)) | Some(Tok::Sym("{")) => {
                    let args = self.args()?;
                    e = Expr::Call(Box::new(e), args);
                }
                _ => return Ok(e),
            }
        }
    }
}

// ---------------------------------------------------------------- evaluation

fn fail(m: impl Into<String>) -> TemplateError {
    TemplateError(m.into())
}

fn eval(e: &Expr, env: &dyn Env, depth: usize) -> Result<Value, TemplateError> {
    if depth > MAX_DEPTH {
        return Err(fail("expression nests too deeply"));
    }
    let ev = |e: &Expr| eval(e, env, depth + 1);
    Ok(match e {
        Expr::Nil => Value::Nil,
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Num(n) => Value::Num(*n),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Name(n) => match n.as_str() {
            "headers" => Value::Global(Global::Headers),
            "query_params" => Value::Global(Global::QueryParams),
            "uri_captures" => Value::Global(Global::UriCaptures),
            "shared" => Value::Global(Global::Shared),
            "type" => Value::TypeFn,
            // The sandbox has no other global.
            _ => Value::Nil,
        },
        Expr::Index(t, k) => {
            let t = ev(t)?;
            let k = ev(k)?;
            match t {
                Value::Global(Global::Headers) => match &k {
                    Value::Str(s) => env.header(s),
                    _ => Value::Nil,
                },
                Value::Global(Global::QueryParams) => match &k {
                    Value::Str(s) => env.query(s),
                    Value::Num(n) => env.query(&lua_number(*n)),
                    _ => Value::Nil,
                },
                Value::Global(Global::UriCaptures) => env.capture(&k),
                Value::Global(Global::Shared) => Value::Nil,
                Value::List(items) => match k.number() {
                    Some(n) if n.fract() == 0.0 && n >= 1.0 => items
                        .get(n as usize - 1)
                        .map(|s| Value::Str(s.clone()))
                        .unwrap_or(Value::Nil),
                    _ => Value::Nil,
                },
                other => {
                    return Err(fail(format!(
                        "attempt to index a {} value",
                        other.type_name()
                    )))
                }
            }
        }
        Expr::Call(f, args) => match ev(f)? {
            Value::TypeFn => {
                let v = match args.first() {
                    Some(a) => ev(a)?,
                    None => return Err(fail("bad argument #1 to 'type' (value expected)")),
                };
                Value::Str(v.type_name().to_string())
            }
            other => {
                return Err(fail(format!(
                    "attempt to call a {} value",
                    other.type_name()
                )))
            }
        },
        Expr::Method(o, m, _) => {
            let o = ev(o)?;
            return Err(fail(format!(
                "attempt to call method '{m}' of a {} value",
                o.type_name()
            )));
        }
        Expr::Not(x) => Value::Bool(!ev(x)?.truthy()),
        Expr::Neg(x) => {
            let v = ev(x)?;
            match v.number() {
                Some(n) => Value::Num(-n),
                None => {
                    return Err(fail(format!(
                        "attempt to perform arithmetic on a {} value",
                        v.type_name()
                    )))
                }
            }
        }
        Expr::Len(x) => match ev(x)? {
            Value::Str(s) => Value::Num(s.len() as f64),
            Value::List(l) => Value::Num(l.len() as f64),
            Value::Global(_) => Value::Num(0.0),
            other => {
                return Err(fail(format!(
                    "attempt to get length of a {} value",
                    other.type_name()
                )))
            }
        },
        Expr::Bin(Op::Or, a, b) => {
            let a = ev(a)?;
            if a.truthy() {
                a
            } else {
                ev(b)?
            }
        }
        Expr::Bin(Op::And, a, b) => {
            let a = ev(a)?;
            if a.truthy() {
                ev(b)?
            } else {
                a
            }
        }
        Expr::Bin(op, a, b) => {
            let a = ev(a)?;
            let b = ev(b)?;
            binop(*op, a, b)?
        }
        Expr::Table | Expr::Unsupported => {
            return Err(fail("tables and varargs are not available in templates"))
        }
    })
}

fn binop(op: Op, a: Value, b: Value) -> Result<Value, TemplateError> {
    let arith = |a: &Value, b: &Value| -> Result<(f64, f64), TemplateError> {
        match (a.number(), b.number()) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => {
                let bad = if a.number().is_none() { a } else { b };
                Err(fail(format!(
                    "attempt to perform arithmetic on a {} value",
                    bad.type_name()
                )))
            }
        }
    };
    Ok(match op {
        Op::Eq => Value::Bool(lua_eq(&a, &b)),
        Op::Ne => Value::Bool(!lua_eq(&a, &b)),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let ord = match (&a, &b) {
                (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
                (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
                _ => {
                    return Err(fail(format!(
                        "attempt to compare {} with {}",
                        a.type_name(),
                        b.type_name()
                    )))
                }
            };
            let Some(ord) = ord else {
                return Ok(Value::Bool(false));
            };
            Value::Bool(match op {
                Op::Lt => ord.is_lt(),
                Op::Le => ord.is_le(),
                Op::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        Op::Concat => {
            let piece = |v: &Value| -> Result<String, TemplateError> {
                match v {
                    Value::Str(s) => Ok(s.clone()),
                    Value::Num(n) => Ok(lua_number(*n)),
                    other => Err(fail(format!(
                        "attempt to concatenate a {} value",
                        other.type_name()
                    ))),
                }
            };
            let mut s = piece(&a)?;
            s.push_str(&piece(&b)?);
            if s.len() > MAX_TEMPLATE * 8 {
                return Err(fail("string too long"));
            }
            Value::Str(s)
        }
        Op::Add => {
            let (x, y) = arith(&a, &b)?;
            Value::Num(x + y)
        }
        Op::Sub => {
            let (x, y) = arith(&a, &b)?;
            Value::Num(x - y)
        }
        Op::Mul => {
            let (x, y) = arith(&a, &b)?;
            Value::Num(x * y)
        }
        Op::Div => {
            let (x, y) = arith(&a, &b)?;
            Value::Num(x / y)
        }
        Op::Mod => {
            let (x, y) = arith(&a, &b)?;
            Value::Num(x - (x / y).floor() * y)
        }
        Op::Pow => {
            let (x, y) = arith(&a, &b)?;
            Value::Num(x.powf(y))
        }
        Op::Or | Op::And => unreachable!("short-circuit operators are evaluated lazily"),
    })
}

fn lua_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => x == y,
        (Value::List(_), Value::List(_)) => false,
        _ => a == b,
    }
}

/// Renders a template to a string for logs and errors (its source is kept by the caller).
pub fn describe(t: &Template) -> String {
    let mut s = String::new();
    for p in &t.parts {
        match p {
            Part::Text(x) => s.push_str(x),
            Part::Expr(e) => {
                let _ = write!(s, "$({e:?})");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req;
    impl Env for Req {
        fn header(&self, name: &str) -> Value {
            match name.to_ascii_lowercase().replace('_', "-").as_str() {
                "host" => Value::Str("example.test".into()),
                "x-foo" => Value::List(vec!["1".into(), "2".into()]),
                _ => Value::Nil,
            }
        }
        fn query(&self, name: &str) -> Value {
            match name {
                "q1" => Value::Str("20".into()),
                "user" => Value::Str("foo".into()),
                _ => Value::Nil,
            }
        }
        fn capture(&self, key: &Value) -> Value {
            match key {
                Value::Num(n) if *n == 0.0 => Value::Str("/user1/foo".into()),
                Value::Num(n) if *n == 1.0 => Value::Str("foo".into()),
                Value::Str(s) if s == "user1" => Value::Str("foo".into()),
                _ => Value::Nil,
            }
        }
    }

    fn render(src: &str) -> Result<String, TemplateError> {
        Template::compile(src)?.render(&Req)
    }

    // Expressions from Kong 3.9.3's spec/03-plugins/36-request-transformer/02-access_spec.lua.
    #[test]
    fn kongs_spec_expressions() {
        assert_eq!(render("$(headers.host)").unwrap(), "example.test");
        assert_eq!(render("$(headers['HOST'])").unwrap(), "example.test");
        assert_eq!(render("/requests$(uri_captures[0])").unwrap(), "/requests/user1/foo");
        assert_eq!(render("x$(uri_captures.user1)y").unwrap(), "xfooy");
        assert_eq!(
            render("$(uri_captures.user2 or 'default2')").unwrap(),
            "default2"
        );
        assert_eq!(render("$(query_params.q1)").unwrap(), "20");
        assert_eq!(render("$(type(query_params.user))").unwrap(), "string");
        assert_eq!(
            render(r#"$(type(headers["X-Foo"]) == "table" and headers["X-Foo"][1] .. "-first" or headers["X-Foo"])"#)
                .unwrap(),
            "1-first"
        );
        assert_eq!(
            render("$('$(uri_captures.user1)')").unwrap(),
            "$(uri_captures.user1)"
        );
        assert_eq!(render("no template").unwrap(), "no template");
        assert_eq!(render("$(1 + 2 * 3)").unwrap(), "7");
    }

    #[test]
    fn what_kong_refuses_or_fails_on() {
        // Refused when written (a Lua syntax error).
        assert!(Template::compile("$(uri_captures user2)").is_err());
        assert!(Template::compile("$(shared.written = true)").is_err());
        // Fail when rendered (Kong: 500).
        assert!(render("$(10 * uri_captures.user1)").is_err());
        assert!(render("$(ERROR())").is_err());
        assert!(render("$(string.sub(query_params.user, 1, 3))").is_err());
        assert!(render("$(require('inspect')('x'))").is_err());
        assert!(render(r#"$(foo(headers["User-Agent"]))"#).is_err());
    }

    #[test]
    fn hostile_templates_are_bounded() {
        let deep = format!("$({}1{})", "(".repeat(5000), ")".repeat(5000));
        assert!(Template::compile(&deep).is_err());
        let long = "x".repeat(MAX_TEMPLATE + 1);
        assert!(Template::compile(&long).is_err());
        let nots = format!("$({}true)", "not ".repeat(1000));
        assert!(Template::compile(&nots).is_err());
    }
}
