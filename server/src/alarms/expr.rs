//! The small expression language of rules and derived values.
//!
//! `evap_leaving_temp - active_setpoint > 2 && running`: numbers, point and derived-value names,
//! `+ - * /`, comparisons, `&& || !`, parentheses and `abs`, `min`, `max`. Comparisons and logic
//! give 1 or 0; anything that is not 0 counts as true. A name without a current good value, or a
//! division by zero, makes the whole expression unknown (`None`), and an unknown condition never
//! changes an alarm's state.

use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Number(f64),
    /// The current value of a point or derived value.
    Name(String),
    /// `-x`.
    Negate(Box<Expr>),
    /// `!x`.
    Not(Box<Expr>),
    /// A binary operation.
    Binary(Op, Box<Expr>, Box<Expr>),
    /// `abs(x)`, `min(a, b)`, `max(a, b)`.
    Call(Function, Vec<Expr>),
}

/// Binary operators, loosest-binding first in [`Op::PRECEDENCE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `+`
    Add,
    /// `-`
    Subtract,
    /// `*`
    Multiply,
    /// `/`
    Divide,
}

/// Built-in functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `abs(x)`
    Abs,
    /// `min(a, b)`
    Min,
    /// `max(a, b)`
    Max,
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expression {source_text:?}: {message} at character {at}")]
pub struct ParseError {
    source_text: String,
    message: String,
    at: usize,
}

impl Op {
    /// Operator groups by binding strength, loosest first.
    const PRECEDENCE: [&'static [(&'static str, Op)]; 5] = [
        &[("||", Op::Or)],
        &[("&&", Op::And)],
        &[
            (">=", Op::GreaterOrEqual),
            ("<=", Op::LessOrEqual),
            ("==", Op::Equal),
            ("!=", Op::NotEqual),
            (">", Op::Greater),
            ("<", Op::Less),
        ],
        &[("+", Op::Add), ("-", Op::Subtract)],
        &[("*", Op::Multiply), ("/", Op::Divide)],
    ];

    fn is_comparison(self) -> bool {
        matches!(self, Op::Greater | Op::GreaterOrEqual | Op::Less | Op::LessOrEqual | Op::Equal | Op::NotEqual)
    }

    fn symbol(self) -> &'static str {
        Op::PRECEDENCE.iter().flat_map(|group| group.iter()).find(|(_, op)| *op == self).map_or("?", |(s, _)| s)
    }
}

fn truth(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

impl Expr {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        let mut parser = Parser { text, at: 0, depth: 0 };
        if text.len() > MAX_LENGTH {
            return Err(parser.error(&format!("longer than {MAX_LENGTH} characters")));
        }
        let expr = parser.binary(0)?;
        parser.skip_space();
        if parser.at < text.len() {
            return Err(parser.error("unexpected text"));
        }
        Ok(expr)
    }

    /// Evaluates with `lookup` giving the current value of a name.
    pub fn eval(&self, lookup: &impl Fn(&str) -> Option<f64>) -> Option<f64> {
        self.eval_with_margin(0.0, lookup)
    }

    /// Evaluates a condition that is already true with hysteresis `margin`: a top-level `>` or
    /// `>=` (or one joined to others by `&&`) stays true until the left side falls `margin`
    /// below the right, and `<`, `<=` the reverse. Anything else evaluates as usual.
    pub fn eval_with_margin(&self, margin: f64, lookup: &impl Fn(&str) -> Option<f64>) -> Option<f64> {
        match self {
            Expr::Binary(op @ (Op::Greater | Op::GreaterOrEqual), a, b) if margin != 0.0 => {
                let (a, b) = (a.eval(lookup)?, b.eval(lookup)?);
                Some(truth(if *op == Op::Greater { a > b - margin } else { a >= b - margin }))
            }
            Expr::Binary(op @ (Op::Less | Op::LessOrEqual), a, b) if margin != 0.0 => {
                let (a, b) = (a.eval(lookup)?, b.eval(lookup)?);
                Some(truth(if *op == Op::Less { a < b + margin } else { a <= b + margin }))
            }
            Expr::Number(value) => Some(*value),
            Expr::Name(name) => lookup(name),
            Expr::Negate(x) => Some(-x.eval(lookup)?),
            Expr::Not(x) => Some(truth(x.eval(lookup)? == 0.0)),
            // Three-valued logic: one known side can decide, so one failed sensor does not hide
            // what the others say.
            Expr::Binary(Op::Or, a, b) => match (a.eval(lookup), b.eval(lookup)) {
                (Some(x), _) | (_, Some(x)) if x != 0.0 => Some(1.0),
                (Some(_), Some(_)) => Some(0.0),
                _ => None,
            },
            // Every comparison joined by `&&` keeps its margin.
            Expr::Binary(Op::And, a, b) => {
                match (a.eval_with_margin(margin, lookup), b.eval_with_margin(margin, lookup)) {
                    (Some(0.0), _) | (_, Some(0.0)) => Some(0.0),
                    (Some(_), Some(_)) => Some(1.0),
                    _ => None,
                }
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (a.eval(lookup)?, b.eval(lookup)?);
                let value = match op {
                    Op::Or => truth(a != 0.0 || b != 0.0),
                    Op::And => truth(a != 0.0 && b != 0.0),
                    Op::Greater => truth(a > b),
                    Op::GreaterOrEqual => truth(a >= b),
                    Op::Less => truth(a < b),
                    Op::LessOrEqual => truth(a <= b),
                    Op::Equal => truth(a == b),
                    Op::NotEqual => truth(a != b),
                    Op::Add => a + b,
                    Op::Subtract => a - b,
                    Op::Multiply => a * b,
                    Op::Divide if b == 0.0 => return None,
                    Op::Divide => a / b,
                };
                value.is_finite().then_some(value)
            }
            Expr::Call(function, args) => {
                let values: Option<Vec<f64>> = args.iter().map(|a| a.eval(lookup)).collect();
                let values = values?;
                match function {
                    Function::Abs => Some(values[0].abs()),
                    Function::Min => Some(values[0].min(values[1])),
                    Function::Max => Some(values[0].max(values[1])),
                }
            }
        }
    }

    /// Every name the expression reads, in order of appearance.
    pub fn names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_names(&mut names);
        names
    }

    fn collect_names<'a>(&'a self, names: &mut Vec<&'a str>) {
        match self {
            Expr::Number(_) => {}
            Expr::Name(name) => {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
            Expr::Negate(x) | Expr::Not(x) => x.collect_names(names),
            Expr::Binary(_, a, b) => {
                a.collect_names(names);
                b.collect_names(names);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.collect_names(names)),
        }
    }

    /// Whether the top level is a comparison (so hysteresis applies).
    pub fn is_comparison(&self) -> bool {
        matches!(self, Expr::Binary(op, _, _) if op.is_comparison())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(value) => write!(f, "{value}"),
            Expr::Name(name) => f.write_str(name),
            Expr::Negate(x) => write!(f, "-({x})"),
            Expr::Not(x) => write!(f, "!({x})"),
            Expr::Binary(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::Call(function, args) => {
                let name = match function {
                    Function::Abs => "abs",
                    Function::Min => "min",
                    Function::Max => "max",
                };
                let args: Vec<String> = args.iter().map(ToString::to_string).collect();
                write!(f, "{name}({})", args.join(", "))
            }
        }
    }
}

/// Longest expression accepted: rules are short, and a bound keeps parsing cheap.
const MAX_LENGTH: usize = 2000;
/// Deepest nesting accepted, so parsing, evaluating and dropping never exhaust the stack.
const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> ParseError {
        ParseError { source_text: self.text.to_owned(), message: message.to_owned(), at: self.at }
    }

    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.at = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    /// Binary operators of precedence `level` and tighter.
    fn binary(&mut self, level: usize) -> Result<Expr, ParseError> {
        let Some(operators) = Op::PRECEDENCE.get(level) else { return self.unary() };
        let mut left = self.binary(level + 1)?;
        'operators: loop {
            for (symbol, op) in operators.iter() {
                if self.eat(symbol) {
                    let right = self.binary(level + 1)?;
                    left = Expr::Binary(*op, Box::new(left), Box::new(right));
                    // Comparisons do not chain: `a < b < c` is an error, not `(a < b) < c`.
                    if op.is_comparison() {
                        break 'operators;
                    }
                    continue 'operators;
                }
            }
            break;
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Expr, ParseError> {
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!("nested deeper than {MAX_DEPTH}")));
        }
        if self.eat("-") {
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        // `!` but not the start of `!=`.
        self.skip_space();
        if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        if self.eat("(") {
            let inner = self.binary(0)?;
            if !self.eat(")") {
                return Err(self.error("expected ')'"));
            }
            return Ok(inner);
        }
        let rest = self.rest();
        let first = rest.chars().next().ok_or_else(|| self.error("expected a value"))?;
        if first.is_ascii_digit() || first == '.' {
            let len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let number = rest[..len].parse().map_err(|_| self.error("bad number"))?;
            self.at += len;
            return Ok(Expr::Number(number));
        }
        if first.is_ascii_alphabetic() || first == '_' {
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = rest[..len].to_owned();
            self.at += len;
            if !self.eat("(") {
                return Ok(Expr::Name(name));
            }
            let (function, arity) = match name.as_str() {
                "abs" => (Function::Abs, 1),
                "min" => (Function::Min, 2),
                "max" => (Function::Max, 2),
                _ => return Err(self.error(&format!("unknown function {name:?}"))),
            };
            let mut args = vec![self.binary(0)?];
            while self.eat(",") {
                args.push(self.binary(0)?);
            }
            if !self.eat(")") {
                return Err(self.error("expected ')'"));
            }
            if args.len() != arity {
                return Err(self.error(&format!("{name} takes {arity} argument(s)")));
            }
            return Ok(Expr::Call(function, args));
        }
        Err(self.error("expected a number, a name or '('"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, values: &[(&str, f64)]) -> Option<f64> {
        Expr::parse(text).expect("valid").eval(&|name| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
    }

    #[test]
    fn arithmetic_follows_the_usual_precedence() {
        assert_eq!(eval("1 + 2 * 3", &[]), Some(7.0));
        assert_eq!(eval("(1 + 2) * 3", &[]), Some(9.0));
        assert_eq!(eval("10 - 4 - 3", &[]), Some(3.0));
        assert_eq!(eval("-2 * -3", &[]), Some(6.0));
        assert_eq!(eval("max(abs(-4), min(2, 9)) / 2", &[]), Some(2.0));
    }

    #[test]
    fn conditions_read_point_values() {
        let values = [("evap_leaving_temp", 9.5), ("active_setpoint", 7.0), ("running", 1.0)];
        assert_eq!(eval("evap_leaving_temp - active_setpoint > 2 && running", &values), Some(1.0));
        assert_eq!(eval("evap_leaving_temp < 3 || !running", &values), Some(0.0));
        // One unknown side does not hide what the other says.
        assert_eq!(eval("missing > 1 || running", &values), Some(1.0));
        assert_eq!(eval("missing > 1 && !running", &values), Some(0.0));
        assert_eq!(eval("missing > 1 || !running", &values), None);
        assert_eq!(eval("running != 0 && running == 1", &values), Some(1.0));
    }

    #[test]
    fn a_missing_value_or_division_by_zero_is_unknown() {
        assert_eq!(eval("missing > 2", &[]), None);
        assert_eq!(eval("1 / x", &[("x", 0.0)]), None);
    }

    #[test]
    fn hysteresis_holds_a_true_comparison_until_it_clears_by_the_margin() {
        let above = Expr::parse("t > 10").expect("valid");
        let at = |t: f64| move |_: &str| Some(t);
        assert_eq!(above.eval(&at(9.8)), Some(0.0));
        assert_eq!(above.eval_with_margin(0.5, &at(9.8)), Some(1.0));
        assert_eq!(above.eval_with_margin(0.5, &at(9.4)), Some(0.0));
        let below = Expr::parse("t < 3").expect("valid");
        assert_eq!(below.eval_with_margin(0.5, &at(3.3)), Some(1.0));
        assert_eq!(below.eval_with_margin(0.5, &at(3.6)), Some(0.0));
    }

    #[test]
    fn mistakes_are_reported_with_their_position() {
        for bad in ["1 +", "(1", "a < b < c", "foo(1)", "min(1)", "1 $ 2", ""] {
            assert!(Expr::parse(bad).is_err(), "{bad:?} parsed");
        }
        // Deep nesting and huge texts are refused, not a stack overflow.
        assert!(Expr::parse(&format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000))).is_err());
        assert!(Expr::parse(&"-".repeat(50_000)).is_err());
        assert!(Expr::parse(&format!("{}1{}", "(".repeat(20), ")".repeat(20))).is_ok());
        let error = Expr::parse("a > > b").expect_err("an error").to_string();
        assert!(error.contains("at character"), "{error}");
    }

    #[test]
    fn names_lists_what_an_expression_reads() {
        let expr = Expr::parse("a - b > max(a, c)").expect("valid");
        assert_eq!(expr.names(), ["a", "b", "c"]);
    }
}
