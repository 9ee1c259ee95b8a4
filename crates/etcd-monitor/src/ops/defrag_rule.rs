//! The defragmentation rule language: when a member needs defragmenting.
//!
//! A rule is a boolean expression over one member's sizes, evaluated per
//! member:
//!
//! - quantities: `dbSize` (backend file size), `dbSizeInUse`, `dbSizeFree`
//!   (`dbSize - dbSizeInUse`), `dbQuota` (the member's
//!   `--quota-backend-bytes`, read from its `/metrics`) and `dbQuotaUsage`
//!   (`dbSize / dbQuota`, 0..1);
//! - numbers: `200`, `0.8`, `1e6`, and sizes `100MB`, `1.5GiB` (KB, MB, GB,
//!   TB are powers of 1000; KiB, MiB, GiB, TiB of 1024);
//! - arithmetic `+ - * /` and unary `-`; comparisons `> >= < <= == !=`;
//!   `!`, `&&`, `||` (in that order of precedence, `&&` before `||`);
//!   parentheses; `true`, `false`.
//!
//! The older spelling `min-size=100MB,min-free=10MB,min-free-ratio=0.3` is
//! still accepted and means `dbSize >= 100MB && dbSizeFree >= 10MB &&
//! dbSizeFree/dbSize >= 0.3`.
//!
//! Errors name the column: `column 10: expected a number, a quantity or
//! "(", found ">"`.

/// One member's sizes, as a rule reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleInput {
    /// Backend size on disk, bytes.
    pub db_size: f64,
    /// Bytes in use.
    pub db_size_in_use: f64,
    /// `--quota-backend-bytes`, when known.
    pub db_quota: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Size,
    SizeInUse,
    SizeFree,
    Quota,
    QuotaUsage,
}

impl Var {
    const ALL: [(&'static str, Var); 5] = [
        ("dbSize", Var::Size),
        ("dbSizeInUse", Var::SizeInUse),
        ("dbSizeFree", Var::SizeFree),
        ("dbQuota", Var::Quota),
        ("dbQuotaUsage", Var::QuotaUsage),
    ];

    fn needs_quota(self) -> bool {
        matches!(self, Var::Quota | Var::QuotaUsage)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Bool(bool),
    Var(Var),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Arith(Box<Expr>, Arith, Box<Expr>),
    Cmp(Box<Expr>, Cmp, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Number,
    Bool,
}

impl Expr {
    fn ty(&self) -> Ty {
        match self {
            Expr::Num(_) | Expr::Var(_) | Expr::Neg(_) | Expr::Arith(..) => Ty::Number,
            _ => Ty::Bool,
        }
    }

    fn uses_quota(&self) -> bool {
        match self {
            Expr::Var(v) => v.needs_quota(),
            Expr::Num(_) | Expr::Bool(_) => false,
            Expr::Neg(e) | Expr::Not(e) => e.uses_quota(),
            Expr::Arith(a, _, b) | Expr::Cmp(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.uses_quota() || b.uses_quota()
            }
        }
    }

    fn number(&self, m: &RuleInput, quota: f64) -> f64 {
        match self {
            Expr::Num(n) => *n,
            Expr::Var(v) => match v {
                Var::Size => m.db_size,
                Var::SizeInUse => m.db_size_in_use,
                Var::SizeFree => (m.db_size - m.db_size_in_use).max(0.0),
                Var::Quota => quota,
                Var::QuotaUsage => m.db_size / quota,
            },
            Expr::Neg(e) => -e.number(m, quota),
            Expr::Arith(a, op, b) => {
                let (a, b) = (a.number(m, quota), b.number(m, quota));
                match op {
                    Arith::Add => a + b,
                    Arith::Sub => a - b,
                    Arith::Mul => a * b,
                    Arith::Div => a / b,
                }
            }
            // Type-checked at parse time: never reached.
            _ => f64::NAN,
        }
    }

    fn truth(&self, m: &RuleInput, quota: f64) -> bool {
        match self {
            Expr::Bool(b) => *b,
            Expr::Not(e) => !e.truth(m, quota),
            Expr::And(a, b) => a.truth(m, quota) && b.truth(m, quota),
            Expr::Or(a, b) => a.truth(m, quota) || b.truth(m, quota),
            // A division by zero gives NaN or an infinity; NaN compares false.
            Expr::Cmp(a, op, b) => {
                let (a, b) = (a.number(m, quota), b.number(m, quota));
                match op {
                    Cmp::Gt => a > b,
                    Cmp::Ge => a >= b,
                    Cmp::Lt => a < b,
                    Cmp::Le => a <= b,
                    Cmp::Eq => a == b,
                    Cmp::Ne => a != b,
                }
            }
            _ => false,
        }
    }
}

/// A parsed defragmentation rule.
///
/// ```
/// use etcd_monitor::ops::defrag_rule::{DefragRule, RuleInput};
/// let rule: DefragRule = "dbQuotaUsage > 0.8 || dbSizeFree > 200*1024*1024".parse().unwrap();
/// let member = RuleInput { db_size: 500e6, db_size_in_use: 200e6, db_quota: Some(2e9) };
/// assert_eq!(rule.evaluate(&member), Ok(true));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DefragRule {
    expr: Expr,
    text: String,
}

impl DefragRule {
    /// Whether the member needs defragmentation. An error when the rule
    /// reads `dbQuota` or `dbQuotaUsage` and the member's quota is unknown.
    pub fn evaluate(&self, member: &RuleInput) -> Result<bool, String> {
        let quota = match member.db_quota {
            Some(q) => q,
            None if self.expr.uses_quota() => {
                return Err(
                    "the rule reads dbQuota, and the member's quota is unknown (its /metrics was not read)"
                        .into(),
                );
            }
            None => f64::NAN,
        };
        Ok(self.expr.truth(member, quota))
    }

    /// Whether the rule reads `dbQuota` or `dbQuotaUsage`.
    pub fn uses_quota(&self) -> bool {
        self.expr.uses_quota()
    }
}

impl std::fmt::Display for DefragRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for DefragRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim().to_string();
        let expr = if is_pair_spelling(&text) {
            pairs(&text)?
        } else {
            let mut p = Parser::new(&text).map_err(|e| format!("defrag rule {text:?}: {e}"))?;
            p.rule().map_err(|e| format!("defrag rule {text:?}: {e}"))?
        };
        Ok(DefragRule { expr, text })
    }
}

/// `min-size=...,min-free-ratio=...`: a `key=` with no comparison.
fn is_pair_spelling(text: &str) -> bool {
    text.contains('=')
        && !["==", "!=", ">=", "<=", ">", "<"]
            .iter()
            .any(|op| text.contains(op))
}

fn pairs(text: &str) -> Result<Expr, String> {
    let mut terms = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("defrag rule term {part:?} is not key=value"))?;
        let value = value.trim();
        let size = || {
            crate::config::size::parse(value)
                .map(|b| Expr::Num(b as f64))
                .map_err(|e| format!("defrag rule term {part:?}: {e}"))
        };
        let free_ratio = Expr::Arith(
            Box::new(Expr::Var(Var::SizeFree)),
            Arith::Div,
            Box::new(Expr::Var(Var::Size)),
        );
        let (lhs, rhs) = match key.trim() {
            "min-size" => (Expr::Var(Var::Size), size()?),
            "min-free" => (Expr::Var(Var::SizeFree), size()?),
            "min-free-ratio" => match value.parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => (free_ratio, Expr::Num(v)),
                _ => {
                    return Err(format!(
                        "defrag rule term {part:?}: {value:?} is not a ratio between 0 and 1"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "defrag rule key {other:?} is unknown (use min-size, min-free, min-free-ratio, or an expression such as dbSizeFree > 100MB)"
                ));
            }
        };
        terms.push(Expr::Cmp(Box::new(lhs), Cmp::Ge, Box::new(rhs)));
    }
    terms
        .into_iter()
        .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
        .ok_or_else(|| format!("defrag rule {text:?} is empty"))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Num(n) => format!("the number {n}"),
            Tok::Ident(i) => format!("{i:?}"),
            Tok::Op(o) => format!("{o:?}"),
            Tok::End => "the end of the rule".into(),
        }
    }
}

const OPS: [&str; 17] = [
    "&&", "||", ">=", "<=", "==", "!=", ">", "<", "!", "+", "-", "*", "/", "(", ")", "&", "|",
];

/// Tokens with their 1-based column.
fn tokens(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '+' || chars[i] == '-')
                        && matches!(chars[i - 1], 'e' | 'E')
                        && chars[start..i]
                            .iter()
                            .all(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == 'E')))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let value = match word.parse::<f64>() {
                Ok(v) => v,
                Err(_) => crate::config::size::parse(&word)
                    .map(|b| b as f64)
                    .map_err(|_| {
                        format!("column {col}: {word:?} is not a number or a size (100MB, 1.5GiB)")
                    })?,
            };
            out.push((Tok::Num(value), col));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), col));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                return Err(format!("column {col}: unexpected {c:?}"));
            };
            if *op == "&" || *op == "|" {
                return Err(format!("column {col}: {c:?} alone: write {op}{op}"));
            }
            i += op.len();
            out.push((Tok::Op(op), col));
        }
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self, String> {
        Ok(Parser {
            toks: tokens(text)?,
            at: 0,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn col(&self) -> usize {
        self.toks[self.at].1
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Tok::Op(o) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn fail<T>(&self, expected: &str) -> Result<T, String> {
        Err(format!(
            "column {}: expected {expected}, found {}",
            self.col(),
            self.peek().describe()
        ))
    }

    /// The whole rule: a boolean expression and nothing after it.
    fn rule(&mut self) -> Result<Expr, String> {
        if *self.peek() == Tok::End {
            return Err("the rule is empty".into());
        }
        let col = self.col();
        let e = self.or()?;
        if *self.peek() != Tok::End {
            return self.fail("an operator or the end of the rule");
        }
        if e.ty() != Ty::Bool {
            return Err(format!(
                "column {col}: the rule is a number, not a condition: compare it (e.g. dbSizeFree > 100MB)"
            ));
        }
        Ok(e)
    }

    fn typed(&self, e: &Expr, want: Ty, col: usize, what: &str) -> Result<(), String> {
        if e.ty() == want {
            return Ok(());
        }
        Err(match want {
            Ty::Bool => format!(
                "column {col}: {what} needs a condition (such as dbSize > 1GB), found a number"
            ),
            Ty::Number => format!("column {col}: {what} needs a number, found a condition"),
        })
    }

    fn or(&mut self) -> Result<Expr, String> {
        let col = self.col();
        let mut e = self.and()?;
        while self.eat("||") {
            self.typed(&e, Ty::Bool, col, "||")?;
            let col = self.col();
            let rhs = self.and()?;
            self.typed(&rhs, Ty::Bool, col, "||")?;
            e = Expr::Or(Box::new(e), Box::new(rhs));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let col = self.col();
        let mut e = self.not()?;
        while self.eat("&&") {
            self.typed(&e, Ty::Bool, col, "&&")?;
            let col = self.col();
            let rhs = self.not()?;
            self.typed(&rhs, Ty::Bool, col, "&&")?;
            e = Expr::And(Box::new(e), Box::new(rhs));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            let col = self.col();
            let e = self.not()?;
            self.typed(&e, Ty::Bool, col, "!")?;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let col = self.col();
        let lhs = self.sum()?;
        let op = match self.peek() {
            Tok::Op(">") => Cmp::Gt,
            Tok::Op(">=") => Cmp::Ge,
            Tok::Op("<") => Cmp::Lt,
            Tok::Op("<=") => Cmp::Le,
            Tok::Op("==") => Cmp::Eq,
            Tok::Op("!=") => Cmp::Ne,
            _ => return Ok(lhs),
        };
        self.at += 1;
        self.typed(&lhs, Ty::Number, col, "a comparison")?;
        let col = self.col();
        let rhs = self.sum()?;
        self.typed(&rhs, Ty::Number, col, "a comparison")?;
        if matches!(self.peek(), Tok::Op(">" | ">=" | "<" | "<=" | "==" | "!=")) {
            return self.fail("&&, || or the end (comparisons do not chain)");
        }
        Ok(Expr::Cmp(Box::new(lhs), op, Box::new(rhs)))
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let col = self.col();
        let mut e = self.product()?;
        loop {
            let op = if self.eat("+") {
                Arith::Add
            } else if self.eat("-") {
                Arith::Sub
            } else {
                return Ok(e);
            };
            self.typed(&e, Ty::Number, col, "arithmetic")?;
            let col = self.col();
            let rhs = self.product()?;
            self.typed(&rhs, Ty::Number, col, "arithmetic")?;
            e = Expr::Arith(Box::new(e), op, Box::new(rhs));
        }
    }

    fn product(&mut self) -> Result<Expr, String> {
        let col = self.col();
        let mut e = self.unary()?;
        loop {
            let op = if self.eat("*") {
                Arith::Mul
            } else if self.eat("/") {
                Arith::Div
            } else {
                return Ok(e);
            };
            self.typed(&e, Ty::Number, col, "arithmetic")?;
            let col = self.col();
            let rhs = self.unary()?;
            self.typed(&rhs, Ty::Number, col, "arithmetic")?;
            e = Expr::Arith(Box::new(e), op, Box::new(rhs));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("-") {
            let col = self.col();
            let e = self.unary()?;
            self.typed(&e, Ty::Number, col, "-")?;
            return Ok(Expr::Neg(Box::new(e)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let col = self.col();
        match self.peek().clone() {
            Tok::Num(n) => {
                self.at += 1;
                Ok(Expr::Num(n))
            }
            Tok::Ident(name) => {
                self.at += 1;
                match name.as_str() {
                    "true" => return Ok(Expr::Bool(true)),
                    "false" => return Ok(Expr::Bool(false)),
                    _ => {}
                }
                if let Some((_, v)) = Var::ALL.iter().find(|(n, _)| *n == name) {
                    return Ok(Expr::Var(*v));
                }
                let known: Vec<&str> = Var::ALL.iter().map(|(n, _)| *n).collect();
                Err(format!(
                    "column {col}: unknown quantity {name:?} (use {})",
                    known.join(", ")
                ))
            }
            Tok::Op("(") => {
                self.at += 1;
                let e = self.or()?;
                if !self.eat(")") {
                    return self.fail("\")\"");
                }
                Ok(e)
            }
            _ => self.fail("a number, a quantity or \"(\""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(size: f64, in_use: f64, quota: Option<f64>) -> RuleInput {
        RuleInput {
            db_size: size,
            db_size_in_use: in_use,
            db_quota: quota,
        }
    }

    fn eval(rule: &str, m: RuleInput) -> bool {
        rule.parse::<DefragRule>().unwrap().evaluate(&m).unwrap()
    }

    #[test]
    fn etcd_defrag_style_rules_evaluate_per_member() {
        let rule = "dbQuotaUsage > 0.8 || dbSizeFree > 200*1024*1024";
        assert!(
            eval(rule, member(1.7e9, 1.6e9, Some(2e9))),
            "quota usage 0.85"
        );
        assert!(eval(rule, member(500e6, 200e6, Some(2e9))), "300 MB free");
        assert!(!eval(rule, member(500e6, 400e6, Some(2e9))), "neither");
        assert!(eval(
            "(dbSize - dbSizeInUse) / dbSize >= 0.5 && dbSize > 100MB",
            member(200e6, 100e6, None)
        ));
        assert!(!eval("!(dbSize > 1GiB)", member(2e9, 0.0, None)));
        assert!(eval(
            "dbSize == 4096 && dbSizeInUse != 1",
            member(4096.0, 0.0, None)
        ));
        assert!(eval(
            "-dbSize < 0 && 2 * 3 + 4 == 10 && 2 + 3 * 4 == 14",
            member(1.0, 0.0, None)
        ));
        assert!(eval("true || dbSize / 0 > 1", member(0.0, 0.0, None)));
        assert!(
            !eval("dbSizeFree / dbSize > 0.5", member(0.0, 0.0, None)),
            "0/0 compares false"
        );
        // && binds tighter than ||.
        assert!(eval("false && false || true", member(0.0, 0.0, None)));
        assert!(!eval("false && (false || true)", member(0.0, 0.0, None)));
    }

    #[test]
    fn the_older_pair_spelling_still_works() {
        let rule = "min-size=1MiB,min-free=10kB,min-free-ratio=0.25";
        assert!(eval(rule, member(2.0 * 1048576.0, 1048576.0, None)));
        assert!(!eval(rule, member(1000.0, 0.0, None)));
        assert!(
            "min-free-ratio=2"
                .parse::<DefragRule>()
                .unwrap_err()
                .contains("ratio")
        );
        assert!(
            "max=1"
                .parse::<DefragRule>()
                .unwrap_err()
                .contains("unknown")
        );
    }

    #[test]
    fn a_rule_reading_the_quota_needs_one() {
        let r: DefragRule = "dbQuotaUsage > 0.5".parse().unwrap();
        assert!(r.uses_quota());
        assert!(
            r.evaluate(&member(1.0, 0.0, None))
                .unwrap_err()
                .contains("quota is unknown")
        );
        let r: DefragRule = "dbSize > 1".parse().unwrap();
        assert!(!r.uses_quota());
        assert_eq!(r.evaluate(&member(2.0, 0.0, None)), Ok(true));
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let err = |s: &str| s.parse::<DefragRule>().unwrap_err();
        assert_eq!(
            err("dbSize >> 1"),
            "defrag rule \"dbSize >> 1\": column 9: expected a number, a quantity or \"(\", found \">\""
        );
        assert!(err("dbsize > 1").contains("column 1: unknown quantity \"dbsize\" (use dbSize, dbSizeInUse, dbSizeFree, dbQuota, dbQuotaUsage)"), "{}", err("dbsize > 1"));
        assert!(
            err("(dbSize > 1").contains("column 12: expected \")\", found the end of the rule")
        );
        assert!(err("dbSize > 10XB").contains("column 10: \"10XB\" is not a number or a size"));
        assert!(err("dbSize + 1").contains("the rule is a number, not a condition"));
        assert!(err("dbSize > 1 && 5").contains("column 15: && needs a condition"));
        assert!(
            err("(dbSize > 1) + 2 > 1")
                .contains("column 1: arithmetic needs a number, found a condition")
        );
        assert!(err("1 < dbSize < 5").contains("comparisons do not chain"));
        assert!(err("dbSize > 1 & dbSize < 2").contains("column 12: '&' alone: write &&"));
        assert!(err("dbSize > 1 $").contains("column 12: unexpected '$'"));
        assert!(err("dbSize > 1 dbSize").contains("column 12: expected an operator or the end"));
        assert!(err("   ").contains("empty"));
    }

    /// A random rule: printed as text, and evaluated here independently
    /// of the parser.
    #[derive(Debug, Clone)]
    enum Gen {
        Atom(&'static str, &'static str, u32),
        And(Box<Gen>, Box<Gen>),
        Or(Box<Gen>, Box<Gen>),
        Not(Box<Gen>),
    }

    impl Gen {
        fn text(&self) -> String {
            match self {
                Gen::Atom(var, op, n) => format!("{var} {op} {n}"),
                Gen::And(a, b) => format!("({}) && ({})", a.text(), b.text()),
                Gen::Or(a, b) => format!("({})||({})", a.text(), b.text()),
                Gen::Not(a) => format!("!( {} )", a.text()),
            }
        }

        fn holds(&self, m: &RuleInput) -> bool {
            match self {
                Gen::Atom(var, op, n) => {
                    let q = m.db_quota.unwrap();
                    let have = match *var {
                        "dbSize" => m.db_size,
                        "dbSizeInUse" => m.db_size_in_use,
                        "dbSizeFree" => m.db_size - m.db_size_in_use,
                        "dbQuota" => q,
                        _ => m.db_size / q,
                    };
                    let want = f64::from(*n);
                    match *op {
                        ">" => have > want,
                        ">=" => have >= want,
                        "<" => have < want,
                        "<=" => have <= want,
                        "==" => have == want,
                        _ => have != want,
                    }
                }
                Gen::And(a, b) => a.holds(m) && b.holds(m),
                Gen::Or(a, b) => a.holds(m) || b.holds(m),
                Gen::Not(a) => !a.holds(m),
            }
        }
    }

    fn arb_rule() -> impl Strategy<Value = Gen> {
        let var = prop_oneof![
            Just("dbSize"),
            Just("dbSizeInUse"),
            Just("dbSizeFree"),
            Just("dbQuota"),
            Just("dbQuotaUsage"),
        ];
        let op = prop_oneof![
            Just(">"),
            Just(">="),
            Just("<"),
            Just("<="),
            Just("=="),
            Just("!=")
        ];
        let atom = (var, op, 0u32..3_000_000_000u32).prop_map(|(v, o, n)| Gen::Atom(v, o, n));
        atom.prop_recursive(4, 16, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Gen::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Gen::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|a| Gen::Not(Box::new(a))),
            ]
        })
    }

    proptest! {
        #[test]
        fn parsed_rules_evaluate_like_the_rule_they_print(
            rule in arb_rule(),
            size in 0u32..3_000_000_000u32,
            used in 0u32..3_000_000_000u32,
            quota in 1u32..3_000_000_000u32,
        ) {
            let m = member(f64::from(size), f64::from(used.min(size)), Some(f64::from(quota)));
            let text = rule.text();
            let parsed: DefragRule = text.parse().unwrap();
            prop_assert_eq!(parsed.evaluate(&m), Ok(rule.holds(&m)), "{}", text);
        }

        #[test]
        fn any_text_parses_or_fails_with_a_column(text in "[ -~]{0,40}") {
            match text.parse::<DefragRule>() {
                Ok(_) => {}
                Err(e) => prop_assert!(
                    e.contains("column ") || e.contains("empty") || e.contains("defrag rule term") || e.contains("defrag rule key"),
                    "{}", e
                ),
            }
        }

        #[test]
        fn arithmetic_follows_precedence(a in 1u32..1000, b in 1u32..1000, c in 1u32..1000) {
            let (a, b, c) = (f64::from(a), f64::from(b), f64::from(c));
            let m = member(a + b * c, 0.0, None);
            let rule = format!("dbSize == {a} + {b} * {c}");
            prop_assert!(eval(&rule, m), "{}", rule);
            let m = member((a - b) - c, 0.0, None);
            let rule = format!("dbSize == {a} - {b} - {c}");
            prop_assert!(eval(&rule, m), "{}", rule);
        }
    }
}
