//! The `process { … }` transformation: statements, conditions and `calc` arithmetic — their
//! syntax and their evaluation.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::error::ViewSpecError;
use super::lexer::{Clause, ClauseKind, Lit, Scanner, Span};
use super::pointer::{ArrayWrite, JsonPointer};
use super::template::pointer;

/// The body of one `process { … }` block.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// Operations applied unconditionally.
    Operations(Vec<Operation>),
    /// `if 'C' ops (elseif 'C' ops)* [else ops]`: the first satisfied branch runs; with none
    /// satisfied and no `else`, no reference topic results.
    Conditional {
        /// The `if` branch followed by every `elseif` branch, in order.
        branches: Vec<Branch>,
        /// The `else` operations, if given.
        otherwise: Option<Vec<Operation>>,
    },
}

/// One `if`/`elseif` branch.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// When the branch applies.
    pub condition: Condition,
    /// What it does.
    pub operations: Vec<Operation>,
}

/// One operation of a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `set(/ptr, value)`: create or replace the field (its parent must exist).
    Set {
        /// Where to write.
        target: JsonPointer,
        /// What to write.
        value: SetValue,
    },
    /// `remove(/ptr)`: drop the field if present.
    Remove(JsonPointer),
    /// `continue`: leave the value as it is.
    Continue,
}

/// The value of a `set`.
#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    /// A constant: integer, decimal, quoted string, `true`, `false` or `null`.
    Constant(Value),
    /// `calc "…"`: integer arithmetic over constants and pointers.
    Calc(Calc),
}

/// How deeply brackets, `not` and unary minus may nest in a condition or a `calc` expression.
/// Parsing, evaluating and dropping an expression recurse once per level, so the depth is
/// bounded where the text is read (a Rust stack overflow would abort the whole server).
pub const MAX_EXPRESSION_NESTING: usize = 32;

/// An integer expression of `calc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Calc {
    /// A literal integer.
    Integer(i64),
    /// The integer at a pointer in the input value.
    Pointer(JsonPointer),
    /// Unary minus.
    Negate(Box<Calc>),
    /// Operators of one precedence level applied left to right: `first op₁ e₁ op₂ e₂ …`. A
    /// flat chain keeps `1 + 2 + … + n` from becoming an n-deep tree.
    Chain {
        /// The leftmost operand.
        first: Box<Calc>,
        /// Each operator with its right operand, in order.
        rest: Vec<(CalcOp, Calc)>,
    },
}

/// The four `calc` operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalcOp {
    /// `+`
    Add,
    /// `-`
    Subtract,
    /// `*`
    Multiply,
    /// `/` (truncating toward zero)
    Divide,
}

/// A condition of `if`/`elseif`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `/ptr OP operand`.
    Compare {
        /// The pointer on the left.
        left: JsonPointer,
        /// The comparison.
        op: CompareOp,
        /// A constant or another pointer.
        right: Operand,
    },
    /// `a and b and …` / `a & b`: every one holds (kept flat, however long the chain).
    All(Vec<Condition>),
    /// `a or b or …` / `a | b`: at least one holds.
    Any(Vec<Condition>),
    /// `not a`.
    Not(Box<Condition>),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=` / `eq`
    Eq,
    /// `!=` / `ne`
    Ne,
    /// `>` / `gt`
    Gt,
    /// `<` / `lt`
    Lt,
    /// `>=` / `ge`
    Ge,
    /// `<=` / `le`
    Le,
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// Another part of the value.
    Pointer(JsonPointer),
    /// A constant.
    Constant(Value),
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

enum Planned<'a> {
    Set(&'a JsonPointer, Value),
    Remove(&'a JsonPointer),
}

impl Statement {
    /// Applies the statement to `input`; `None` means "no reference topic". The input is read
    /// where it lies and copied only when an operation changes it.
    pub(crate) fn apply<'v>(&self, input: Cow<'v, Value>) -> Option<Cow<'v, Value>> {
        let operations = match self {
            Self::Operations(ops) => ops,
            Self::Conditional {
                branches,
                otherwise,
            } => match branches.iter().find(|b| b.condition.holds(&input)) {
                Some(branch) => &branch.operations,
                None => otherwise.as_ref()?,
            },
        };
        // Every operation reads the input as it was; then all are applied together.
        let mut planned = Vec::with_capacity(operations.len());
        for op in operations {
            match op {
                Operation::Set { target, value } => {
                    let value = match value {
                        SetValue::Constant(v) => v.clone(),
                        SetValue::Calc(calc) => Value::from(calc.eval(&input)?),
                    };
                    planned.push(Planned::Set(target, value));
                }
                Operation::Remove(target) => planned.push(Planned::Remove(target)),
                Operation::Continue => {}
            }
        }
        if planned.is_empty() {
            return Some(input);
        }
        let mut output = input.into_owned();
        for step in planned {
            match step {
                Planned::Set(target, value) => {
                    target.write(&mut output, value, ArrayWrite::Replace).ok()?;
                }
                Planned::Remove(target) => target.remove(&mut output),
            }
        }
        Some(Cow::Owned(output))
    }
}

impl Calc {
    /// Integer value, or `None` when a pointer is missing or not an integer, on division by zero
    /// or on overflow.
    pub(crate) fn eval(&self, input: &Value) -> Option<i64> {
        match self {
            Self::Integer(n) => Some(*n),
            Self::Pointer(p) => p.get(input)?.as_i64(),
            Self::Negate(inner) => inner.eval(input)?.checked_neg(),
            Self::Chain { first, rest } => {
                rest.iter().try_fold(first.eval(input)?, |a, (op, right)| {
                    let b = right.eval(input)?;
                    match op {
                        CalcOp::Add => a.checked_add(b),
                        CalcOp::Subtract => a.checked_sub(b),
                        CalcOp::Multiply => a.checked_mul(b),
                        CalcOp::Divide => a.checked_div(b),
                    }
                })
            }
        }
    }
}

impl Condition {
    /// Whether the condition holds for `value`.
    pub(crate) fn holds(&self, value: &Value) -> bool {
        match self {
            Self::Compare { left, op, right } => {
                let left = left.get(value);
                let right = match right {
                    Operand::Pointer(p) => p.get(value),
                    Operand::Constant(c) => Some(c),
                };
                compare(left, *op, right)
            }
            Self::All(all) => all.iter().all(|c| c.holds(value)),
            Self::Any(any) => any.iter().any(|c| c.holds(value)),
            Self::Not(a) => !a.holds(value),
        }
    }
}

fn compare(left: Option<&Value>, op: CompareOp, right: Option<&Value>) -> bool {
    let equal = || match (left, right) {
        (Some(a), Some(b)) => json_equal(a, b),
        _ => false,
    };
    let order = || match (left, right) {
        (Some(Value::Number(a)), Some(Value::Number(b))) => number_cmp(a, b),
        _ => None,
    };
    match op {
        CompareOp::Eq => equal(),
        CompareOp::Ne => !equal(),
        CompareOp::Gt => order() == Some(Ordering::Greater),
        CompareOp::Lt => order() == Some(Ordering::Less),
        CompareOp::Ge => matches!(order(), Some(Ordering::Greater | Ordering::Equal)),
        CompareOp::Le => matches!(order(), Some(Ordering::Less | Ordering::Equal)),
    }
}

/// A JSON number as exactly what it holds: an integer (i64 and u64 together) or a float.
enum Exact {
    Int(i128),
    Float(f64),
}

fn exact(n: &serde_json::Number) -> Option<Exact> {
    if let Some(i) = n.as_i64() {
        Some(Exact::Int(i128::from(i)))
    } else if let Some(u) = n.as_u64() {
        Some(Exact::Int(i128::from(u)))
    } else {
        n.as_f64().map(Exact::Float)
    }
}

/// Compares an integer with a float exactly (never by rounding the integer to a float, which
/// goes wrong past 2^53).
fn int_float_cmp(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // Every i64 and u64 lies strictly between these two, and both are exact floats.
    const LOW: f64 = -9_223_372_036_854_775_808.0 * 2.0;
    const HIGH: f64 = 18_446_744_073_709_551_616.0 * 2.0;
    if f <= LOW {
        return Some(Ordering::Greater);
    }
    if f >= HIGH {
        return Some(Ordering::Less);
    }
    // Within that range the float's integral part converts exactly.
    let whole = f.trunc();
    let by_whole = i.cmp(&(whole as i128));
    if by_whole != Ordering::Equal {
        return Some(by_whole);
    }
    let fraction = f - whole;
    Some(if fraction > 0.0 {
        Ordering::Less
    } else if fraction < 0.0 {
        Ordering::Greater
    } else {
        Ordering::Equal
    })
}

/// Orders two JSON numbers by their exact values.
pub(crate) fn number_cmp(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    match (exact(a)?, exact(b)?) {
        (Exact::Int(x), Exact::Int(y)) => Some(x.cmp(&y)),
        (Exact::Int(x), Exact::Float(y)) => int_float_cmp(x, y),
        (Exact::Float(x), Exact::Int(y)) => int_float_cmp(y, x).map(Ordering::reverse),
        (Exact::Float(x), Exact::Float(y)) => x.partial_cmp(&y),
    }
}

/// JSON equality in which numbers compare by value (`1` equals `1.0`), as RFC 6902 §4.6 asks
/// of `test` and docs/views.md choice 22 of conditions.
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing the block
// ---------------------------------------------------------------------------------------------

const OPS_EXPECTED: &str =
    "expected an operation: set(/pointer, value), remove(/pointer) or continue";

/// Parses `{ statement }` (the `process` keyword already consumed).
pub(crate) fn parse_block(s: &mut Scanner<'_>) -> Result<Statement, ViewSpecError> {
    s.expect_char('{', "expected '{' after 'process'")?;
    s.skip_ws();
    let statement = if s.eat_keyword("if").is_some() {
        let mut branches = vec![parse_branch(s, "if")?];
        let mut otherwise = None;
        loop {
            s.skip_ws();
            if s.eat_keyword("elseif").is_some() {
                branches.push(parse_branch(s, "elseif")?);
            } else if s.eat_keyword("else").is_some() {
                s.skip_ws();
                if s.peek_keyword("if") {
                    return Err(s.error_here("write 'elseif' rather than 'else if'"));
                }
                otherwise = Some(parse_operations(s)?);
                break;
            } else {
                break;
            }
        }
        Statement::Conditional {
            branches,
            otherwise,
        }
    } else {
        Statement::Operations(parse_operations(s)?)
    };
    s.skip_ws();
    if !s.eat_char('}') {
        let msg = match statement {
            Statement::Conditional {
                otherwise: None, ..
            } => {
                "expected ';' and another operation, 'elseif', 'else' or '}' to end the process block"
            }
            _ => "expected ';' and another operation, or '}' to end the process block",
        };
        return Err(s.error_here(msg));
    }
    Ok(statement)
}

fn parse_branch(s: &mut Scanner<'_>, keyword: &str) -> Result<Branch, ViewSpecError> {
    s.skip_ws();
    if !matches!(s.peek(), Some('\'' | '"')) {
        return Err(s.error_here(format!(
            "expected a quoted condition after '{keyword}', e.g. '/price gt 50'"
        )));
    }
    let clause = s.read_clause(ClauseKind::Plain, &[])?;
    let condition = ConditionParser::new(s.src(), &clause).parse()?;
    let operations = parse_operations(s)?;
    Ok(Branch {
        condition,
        operations,
    })
}

fn parse_operations(s: &mut Scanner<'_>) -> Result<Vec<Operation>, ViewSpecError> {
    let mut ops = vec![parse_operation(s)?];
    loop {
        s.skip_ws();
        if !s.eat_char(';') {
            return Ok(ops);
        }
        s.skip_ws();
        if s.peek() == Some('}') || s.peek_keyword("elseif") || s.peek_keyword("else") {
            return Ok(ops);
        }
        ops.push(parse_operation(s)?);
    }
}

fn parse_operation(s: &mut Scanner<'_>) -> Result<Operation, ViewSpecError> {
    s.skip_ws();
    if s.eat_keyword("continue").is_some() {
        return Ok(Operation::Continue);
    }
    if s.eat_keyword("remove").is_some() {
        s.expect_char('(', "expected '(' after 'remove'")?;
        let target = target_pointer(s, &[')'], "remove")?;
        s.expect_char(')', "expected ')' to close remove(…)")?;
        return Ok(Operation::Remove(target));
    }
    if s.eat_keyword("set").is_some() {
        s.expect_char('(', "expected '(' after 'set'")?;
        let target = target_pointer(s, &[',', ')'], "set")?;
        s.expect_char(',', "expected ',' and a value after the pointer of set(…)")?;
        s.skip_ws();
        let value = if s.eat_keyword("calc").is_some() {
            s.skip_ws();
            let clause = s.read_clause(ClauseKind::Plain, &[')'])?;
            if clause.is_missing() {
                return Err(s.error_here(
                    "expected a quoted expression after 'calc', e.g. calc \"/a * 2\"",
                ));
            }
            SetValue::Calc(CalcParser::new(s.src(), &clause).parse()?)
        } else {
            let clause = s.read_clause(ClauseKind::Plain, &[')', ','])?;
            SetValue::Constant(set_constant(s, &clause)?)
        };
        s.expect_char(')', "expected ')' to close set(…)")?;
        return Ok(Operation::Set { target, value });
    }
    Err(s.error_here(OPS_EXPECTED))
}

fn target_pointer(
    s: &mut Scanner<'_>,
    stops: &[char],
    what: &str,
) -> Result<JsonPointer, ViewSpecError> {
    s.skip_ws();
    let clause = s.read_clause(ClauseKind::Plain, stops)?;
    let ptr = pointer(s.src(), &clause.lits, clause.span.clone())?;
    if ptr.is_root() {
        return Err(s.error(
            clause.span,
            format!("{what}(…) needs a pointer to a field, e.g. /total (it cannot {what} the whole value)"),
        ));
    }
    Ok(ptr)
}

fn set_constant(s: &Scanner<'_>, clause: &Clause) -> Result<Value, ViewSpecError> {
    if clause.quoted {
        return Ok(Value::String(clause.text()));
    }
    let text = clause.text();
    constant_word(&text).ok_or_else(|| {
        let span = if clause.is_missing() {
            s.next_word_span()
        } else {
            clause.span.clone()
        };
        s.error(
            span,
            "expected a constant (an integer, a quoted string, true or false) or calc \"expression\"",
        )
    })
}

/// An unquoted constant: `true`, `false`, `null` or a JSON number.
fn constant_word(text: &str) -> Option<Value> {
    match text {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ => serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .map(Value::Number),
    }
}

// ---------------------------------------------------------------------------------------------
// Inner languages: conditions and calc, parsed from the characters of one clause
// ---------------------------------------------------------------------------------------------

/// A cursor over a clause's characters, for the small languages inside quotes.
struct Inner<'a> {
    src: &'a str,
    lits: &'a [Lit],
    i: usize,
    whole: Span,
    /// Brackets, `not`s and unary minuses open around the current position.
    depth: usize,
}

impl<'a> Inner<'a> {
    fn new(src: &'a str, clause: &'a Clause) -> Self {
        Self {
            src,
            lits: &clause.lits,
            i: 0,
            whole: clause.span.clone(),
            depth: 0,
        }
    }

    /// Enters one more level of nesting (a bracket, `not` or unary minus starting at `at`), or
    /// refuses when that would go past [`MAX_EXPRESSION_NESTING`].
    fn descend(&mut self, at: usize, what: &str) -> Result<(), ViewSpecError> {
        if self.depth >= MAX_EXPRESSION_NESTING {
            return Err(self.error(
                self.span(at, at + 1),
                format!("{what} nested more than {MAX_EXPRESSION_NESTING} levels deep"),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    /// Leaves a level entered with [`Inner::descend`].
    fn ascend(&mut self) {
        self.depth -= 1;
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.lits.get(self.i).map(|l| l.ch)
    }

    /// Span of the next token-ish run (up to whitespace), or the clause's end.
    fn here(&self) -> Span {
        let start = self.i;
        let mut end = start;
        while self.lits.get(end).is_some_and(|l| !l.ch.is_whitespace()) {
            end += 1;
        }
        self.span(start, end)
    }

    fn span(&self, start: usize, end: usize) -> Span {
        match (
            self.lits.get(start),
            end.checked_sub(1).and_then(|e| self.lits.get(e)),
        ) {
            (Some(a), Some(b)) if end > start => a.start..b.end,
            (Some(a), _) => a.start..a.end,
            _ => {
                let end = self.whole.end.saturating_sub(1).max(self.whole.start);
                end..self.whole.end
            }
        }
    }

    fn error(&self, span: Span, message: impl Into<String>) -> ViewSpecError {
        ViewSpecError::new(self.src, span, message)
    }

    /// Reads a run of characters while `keep` holds.
    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> (String, Span) {
        let start = self.i;
        while self.peek().is_some_and(&keep) {
            self.i += 1;
        }
        let text = self.lits[start..self.i].iter().map(|l| l.ch).collect();
        (text, self.span(start, self.i))
    }

    /// A JSON pointer that runs until whitespace or one of `stops`.
    fn pointer(&mut self, stops: &[char]) -> Result<JsonPointer, ViewSpecError> {
        let (text, span) = self.take_while(|c| !c.is_whitespace() && !stops.contains(&c));
        JsonPointer::parse(&text)
            .map_err(|e| self.error(span, format!("invalid JSON pointer '{text}': {e}")))
    }

    /// Is the word `w` next (ASCII case-insensitive, then not followed by a letter or digit)?
    fn eat_word(&mut self, w: &str) -> bool {
        let n = w.chars().count();
        let matches = self.lits.len() >= self.i + n
            && self.lits[self.i..self.i + n]
                .iter()
                .zip(w.chars())
                .all(|(l, c)| l.ch.eq_ignore_ascii_case(&c))
            && !self
                .lits
                .get(self.i + n)
                .is_some_and(|l| super::lexer::is_ident(l.ch));
        if matches {
            self.i += n;
        }
        matches
    }

    fn at_end(&self) -> bool {
        self.i >= self.lits.len()
    }
}

const CONDITION_POINTER_STOPS: &[char] = &['=', '!', '<', '>', '(', ')', '&', '|'];

struct ConditionParser<'a> {
    inner: Inner<'a>,
}

impl<'a> ConditionParser<'a> {
    fn new(src: &'a str, clause: &'a Clause) -> Self {
        Self {
            inner: Inner::new(src, clause),
        }
    }

    fn parse(mut self) -> Result<Condition, ViewSpecError> {
        let condition = self.or()?;
        self.inner.skip_ws();
        if !self.inner.at_end() {
            return Err(self.inner.error(
                self.inner.here(),
                "expected 'and', 'or' or the end of the condition",
            ));
        }
        Ok(condition)
    }

    fn or(&mut self) -> Result<Condition, ViewSpecError> {
        let mut any = vec![self.and()?];
        loop {
            self.inner.skip_ws();
            if self.inner.eat_word("or") || self.eat_symbol('|') {
                any.push(self.and()?);
            } else if any.len() == 1 {
                return Ok(any.remove(0));
            } else {
                return Ok(Condition::Any(any));
            }
        }
    }

    fn and(&mut self) -> Result<Condition, ViewSpecError> {
        let mut all = vec![self.unary()?];
        loop {
            self.inner.skip_ws();
            if self.inner.eat_word("and") || self.eat_symbol('&') {
                all.push(self.unary()?);
            } else if all.len() == 1 {
                return Ok(all.remove(0));
            } else {
                return Ok(Condition::All(all));
            }
        }
    }

    fn eat_symbol(&mut self, c: char) -> bool {
        if self.inner.peek() == Some(c) {
            self.inner.i += 1;
            true
        } else {
            false
        }
    }

    fn unary(&mut self) -> Result<Condition, ViewSpecError> {
        self.inner.skip_ws();
        let at = self.inner.i;
        if self.inner.eat_word("not") {
            self.inner.descend(at, "'not' and brackets are")?;
            let negated = self.unary()?;
            self.inner.ascend();
            return Ok(Condition::Not(Box::new(negated)));
        }
        if self.eat_symbol('(') {
            self.inner.descend(at, "'not' and brackets are")?;
            let inner = self.or()?;
            self.inner.skip_ws();
            if !self.eat_symbol(')') {
                return Err(self
                    .inner
                    .error(self.inner.here(), "expected ')' to close the bracket"));
            }
            self.inner.ascend();
            return Ok(inner);
        }
        if self.inner.peek() != Some('/') {
            return Err(self.inner.error(
                self.inner.here(),
                "expected a comparison such as '/price gt 50', 'not', or '('",
            ));
        }
        let left = self.inner.pointer(CONDITION_POINTER_STOPS)?;
        self.inner.skip_ws();
        let op = self.operator()?;
        self.inner.skip_ws();
        let right = self.operand()?;
        Ok(Condition::Compare { left, op, right })
    }

    fn operator(&mut self) -> Result<CompareOp, ViewSpecError> {
        let symbols: [(&str, CompareOp); 6] = [
            (">=", CompareOp::Ge),
            ("<=", CompareOp::Le),
            ("!=", CompareOp::Ne),
            ("=", CompareOp::Eq),
            (">", CompareOp::Gt),
            ("<", CompareOp::Lt),
        ];
        for (sym, op) in symbols {
            let n = sym.len();
            let hit = self.inner.lits.len() >= self.inner.i + n
                && self.inner.lits[self.inner.i..self.inner.i + n]
                    .iter()
                    .map(|l| l.ch)
                    .eq(sym.chars());
            if hit {
                self.inner.i += n;
                return Ok(op);
            }
        }
        let words: [(&str, CompareOp); 6] = [
            ("eq", CompareOp::Eq),
            ("ne", CompareOp::Ne),
            ("gt", CompareOp::Gt),
            ("lt", CompareOp::Lt),
            ("ge", CompareOp::Ge),
            ("le", CompareOp::Le),
        ];
        for (word, op) in words {
            if self.inner.eat_word(word) {
                return Ok(op);
            }
        }
        Err(self.inner.error(
            self.inner.here(),
            "expected a comparison operator: = != > < >= <= (or eq ne gt lt ge le)",
        ))
    }

    fn operand(&mut self) -> Result<Operand, ViewSpecError> {
        match self.inner.peek() {
            Some('/') => Ok(Operand::Pointer(
                self.inner.pointer(CONDITION_POINTER_STOPS)?,
            )),
            Some(q @ ('\'' | '"')) => {
                let open = self.inner.i;
                self.inner.i += 1;
                let (text, _) = self.inner.take_while(|c| c != q);
                if self.inner.at_end() {
                    return Err(self.inner.error(
                        self.inner.span(open, open + 1),
                        format!("unterminated string: this {q} is never closed"),
                    ));
                }
                self.inner.i += 1;
                Ok(Operand::Constant(Value::String(text)))
            }
            _ => {
                let (text, span) = self.inner.take_while(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.' | '_')
                });
                constant_word(&text).map(Operand::Constant).ok_or_else(|| {
                    let span = if text.is_empty() { self.inner.here() } else { span };
                    self.inner.error(
                        span,
                        "expected a constant (a number, a quoted string, true, false or null) or a /pointer",
                    )
                })
            }
        }
    }
}

/// Characters that end a pointer inside `calc` (besides whitespace). `-` and `/` do not: write
/// spaces around them after a pointer.
const CALC_POINTER_STOPS: &[char] = &['+', '*', '(', ')'];

struct CalcParser<'a> {
    inner: Inner<'a>,
}

impl<'a> CalcParser<'a> {
    fn new(src: &'a str, clause: &'a Clause) -> Self {
        Self {
            inner: Inner::new(src, clause),
        }
    }

    fn parse(mut self) -> Result<Calc, ViewSpecError> {
        let expr = self.sum()?;
        self.inner.skip_ws();
        if !self.inner.at_end() {
            return Err(self.inner.error(
                self.inner.here(),
                "expected an operator (+ - * /) or the end of the calc expression",
            ));
        }
        Ok(expr)
    }

    /// One precedence level: `next (op next)*`, kept as a flat chain.
    fn chain(
        &mut self,
        ops: &[(char, CalcOp)],
        next: fn(&mut Self) -> Result<Calc, ViewSpecError>,
    ) -> Result<Calc, ViewSpecError> {
        let first = next(self)?;
        let mut rest = Vec::new();
        loop {
            self.inner.skip_ws();
            let Some(op) = self
                .inner
                .peek()
                .and_then(|c| ops.iter().find(|(s, _)| *s == c).map(|(_, op)| *op))
            else {
                break;
            };
            self.inner.i += 1;
            rest.push((op, next(self)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Calc::Chain {
                first: Box::new(first),
                rest,
            }
        })
    }

    fn sum(&mut self) -> Result<Calc, ViewSpecError> {
        self.chain(
            &[('+', CalcOp::Add), ('-', CalcOp::Subtract)],
            Self::product,
        )
    }

    fn product(&mut self) -> Result<Calc, ViewSpecError> {
        self.chain(
            &[('*', CalcOp::Multiply), ('/', CalcOp::Divide)],
            Self::atom,
        )
    }

    fn atom(&mut self) -> Result<Calc, ViewSpecError> {
        self.inner.skip_ws();
        let at = self.inner.i;
        match self.inner.peek() {
            Some('-') => {
                self.inner.i += 1;
                self.inner.descend(at, "brackets and unary minus are")?;
                let negated = self.atom()?;
                self.inner.ascend();
                Ok(Calc::Negate(Box::new(negated)))
            }
            Some('(') => {
                self.inner.i += 1;
                self.inner.descend(at, "brackets and unary minus are")?;
                let inner = self.sum()?;
                self.inner.skip_ws();
                if self.inner.peek() != Some(')') {
                    return Err(self
                        .inner
                        .error(self.inner.here(), "expected ')' to close the bracket"));
                }
                self.inner.i += 1;
                self.inner.ascend();
                Ok(inner)
            }
            Some('/') => Ok(Calc::Pointer(self.inner.pointer(CALC_POINTER_STOPS)?)),
            Some(c) if c.is_ascii_digit() => {
                let (text, span) = self
                    .inner
                    .take_while(|c| c.is_ascii_alphanumeric() || c == '.');
                text.parse::<i64>().map(Calc::Integer).map_err(|_| {
                    self.inner.error(
                        span,
                        format!("'{text}' is not an integer (calc works on whole numbers)"),
                    )
                })
            }
            _ => Err(self.inner.error(
                self.inner.here(),
                "expected an integer, a /pointer, '-' or '(' in the calc expression",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statement(text: &str) -> Statement {
        let mut s = Scanner::new(text);
        parse_block(&mut s).unwrap()
    }

    impl Statement {
        /// [`Statement::apply`] on an owned value, for short tests.
        fn apply_owned(&self, input: Value) -> Option<Value> {
            self.apply(Cow::Owned(input)).map(Cow::into_owned)
        }
    }

    #[test]
    fn unchanged_values_are_not_copied() {
        let input = json!({"a": 1});
        let st = statement("{ if '/a = 1' continue }");
        assert!(matches!(
            st.apply(Cow::Borrowed(&input)),
            Some(Cow::Borrowed(_))
        ));
        let st = statement("{ remove(/b) }");
        assert_eq!(
            st.apply(Cow::Borrowed(&input)),
            Some(Cow::Owned(input.clone()))
        );
    }

    fn statement_err(text: &str) -> ViewSpecError {
        let mut s = Scanner::new(text);
        parse_block(&mut s).unwrap_err()
    }

    #[test]
    fn operations_are_evaluated_against_the_input_and_applied_together() {
        let st =
            statement(r#"{ set(/a, 10); set(/b, calc "/a + 1"); remove(/c); set(/s, 'x y') }"#);
        let out = st.apply_owned(json!({"a": 1, "c": 3})).unwrap();
        assert_eq!(out, json!({"a": 10, "b": 2, "s": "x y"}));
    }

    #[test]
    fn failing_set_gives_nothing() {
        let st = statement("{set(/x/y, 1)}");
        assert_eq!(st.apply_owned(json!({})), None);
        let st = statement(r#"{set(/x, calc "/a / /b")}"#);
        assert_eq!(st.apply_owned(json!({"a": 1, "b": 0})), None);
        assert_eq!(st.apply_owned(json!({"a": 1.5, "b": 1})), None);
        assert_eq!(
            st.apply_owned(json!({"a": 7, "b": 2})),
            Some(json!({"a": 7, "b": 2, "x": 3}))
        );
    }

    #[test]
    fn calc_precedence_brackets_and_unary_minus() {
        let cases = [
            ("2 + 3 * 4", 14),
            ("(2 + 3) * 4", 20),
            ("10 - 4 - 3", 3),
            ("-7 / 2", -3),
            ("/a * /b + 3", 15),
            ("/a-b - 1", 4),
            ("-(1+2)*-2", 6),
        ];
        for (expr, want) in cases {
            let st = statement(&format!("{{set(/r, calc '{expr}')}}"));
            let out = st.apply_owned(json!({"a": 3, "b": 4, "a-b": 5})).unwrap();
            assert_eq!(out["r"], json!(want), "{expr}");
        }
    }

    #[test]
    fn conditions_compare_and_combine() {
        let v = json!({"p": 60, "q": 60.0, "s": "x", "b": true, "n": null});
        let cases = [
            ("/p gt 50", true),
            ("/p > 50 and /p < 70", true),
            ("/p>=60&/p<=60", true),
            ("/p = /q", true),
            ("/p != /q", false),
            ("/s = 'x'", true),
            ("/s eq \"y\"", false),
            ("/s > 1", false),
            ("/missing = 1", false),
            ("/missing != 1", true),
            ("not /p lt 10", true),
            ("not (/p lt 10 or /b = true)", false),
            ("/p lt 10 or /b = true and /n = null", true),
            ("/p LT 100", true),
            ("/p ge 60.5", false),
            ("/p le -1", false),
        ];
        for (cond, want) in cases {
            let q = if cond.contains('\'') { '"' } else { '\'' };
            let st = statement(&format!("{{if {q}{cond}{q} set(/hit, true)}}"));
            assert_eq!(st.apply_owned(v.clone()).is_some(), want, "{cond}");
        }
    }

    #[test]
    fn nesting_is_bounded_and_said_in_the_error() {
        let ok = MAX_EXPRESSION_NESTING;
        let deep = MAX_EXPRESSION_NESTING + 1;
        let brackets = |n: usize| format!("{}/a = 1{}", "(".repeat(n), ")".repeat(n));
        let nots = |n: usize| format!("{}/a = 1", "not ".repeat(n));
        for cond in [brackets(ok), nots(ok)] {
            let st = statement(&format!("{{if '{cond}' continue}}"));
            assert!(st.apply_owned(json!({"a": 1})).is_some() || cond.starts_with("not"));
        }
        for cond in [brackets(deep), nots(deep), brackets(50_000), nots(50_000)] {
            let e = statement_err(&format!("{{if '{cond}' continue}}"));
            assert!(e.message().contains("nested more than"), "{}", e.message());
        }
        let minus = |n: usize| format!("{}1", "-".repeat(n));
        let calc_brackets = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(
            statement(&format!("{{set(/r, calc '{}')}}", minus(ok)))
                .apply_owned(json!({}))
                .unwrap()["r"],
            json!(1)
        );
        for expr in [minus(deep), calc_brackets(deep), calc_brackets(50_000)] {
            let e = statement_err(&format!("{{set(/r, calc '{expr}')}}"));
            assert!(e.message().contains("nested more than"), "{}", e.message());
        }
    }

    #[test]
    fn long_flat_chains_are_fine() {
        // 20,000 terms: flat, so no recursion per term when parsing, evaluating or dropping.
        let sum = vec!["1"; 20_000].join(" + ");
        let st = statement(&format!("{{set(/r, calc '{sum}')}}"));
        assert_eq!(st.apply_owned(json!({})).unwrap()["r"], json!(20_000));
        let any = vec!["/a = 2"; 20_000].join(" or ");
        let st = statement(&format!("{{if '{any} or /a = 1' continue}}"));
        assert!(st.apply_owned(json!({"a": 1})).is_some());
        let all = vec!["/a = 1"; 20_000].join(" and ");
        let st = statement(&format!("{{if '{all}' continue}}"));
        assert!(st.apply_owned(json!({"a": 1})).is_some());
        assert!(st.apply_owned(json!({"a": 2})).is_none());
    }

    #[test]
    fn large_integers_and_floats_compare_exactly() {
        // 2^53 + 1 is not a float: rounding it would make it equal to 2^53.
        let v = json!({"i": 9_007_199_254_740_993_i64, "f": 9_007_199_254_740_992.0_f64,
                       "max": u64::MAX, "min": i64::MIN, "half": 0.5});
        let cases = [
            ("/i = /f", false),
            ("/i > /f", true),
            ("/f < /i", true),
            ("/i != 9007199254740992.0", true),
            ("/max > 18446744073709551615.0", false),
            ("/max < 18446744073709551616.0", true),
            ("/min = -9223372036854775808.0", true),
            ("/min > -9223372036854775809.0", false),
            ("/half > 0", true),
            ("/half < 1", true),
            ("/i = 9007199254740993", true),
            ("/max > /min", true),
        ];
        for (cond, want) in cases {
            let st = statement(&format!("{{if '{cond}' continue}}"));
            assert_eq!(st.apply_owned(v.clone()).is_some(), want, "{cond}");
        }
    }

    #[test]
    fn if_elseif_else_chooses_the_first_satisfied_branch() {
        let st = statement(
            "{if '/p lt 50' set(/t, 1) elseif '/p gt 50' set(/t, 2) else set(/t, 0); set(/z, true);}",
        );
        assert_eq!(st.apply_owned(json!({"p": 10})).unwrap()["t"], json!(1));
        assert_eq!(st.apply_owned(json!({"p": 90})).unwrap()["t"], json!(2));
        assert_eq!(
            st.apply_owned(json!({"p": 50})).unwrap(),
            json!({"p": 50, "t": 0, "z": true})
        );
        let st = statement("{if '/p lt 50' continue}");
        assert_eq!(st.apply_owned(json!({"p": 90})), None);
        assert_eq!(st.apply_owned(json!({"p": 9})), Some(json!({"p": 9})));
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = statement_err("{set(/a 1)}");
        assert_eq!(e.column(), 9);
        assert!(e.message().contains("expected ','"), "{e}");
        let e = statement_err("{frob(/a)}");
        assert_eq!(e.column(), 2);
        assert!(e.message().contains("expected an operation"), "{e}");
        let e = statement_err("{if /a = 1 continue}");
        assert_eq!(e.column(), 5);
        assert!(e.message().contains("quoted condition"), "{e}");
        let e = statement_err("{if '/a ~ 1' continue}");
        assert_eq!(e.column(), 9);
        assert!(e.message().contains("comparison operator"), "{e}");
        let e = statement_err("{if '/a = 1 /b' continue}");
        assert_eq!(e.column(), 13);
        let e = statement_err("{set(/a, calc '1 + x')}");
        assert_eq!(e.column(), 20);
        assert!(e.message().contains("calc"), "{e}");
        let e = statement_err("{set(/a, calc '1.5')}");
        assert!(e.message().contains("not an integer"), "{e}");
        let e = statement_err("{set(/a, bogus)}");
        assert_eq!(e.column(), 10);
        assert!(e.message().contains("expected a constant"), "{e}");
        let e = statement_err("{set(, 1)}");
        assert!(e.message().contains("needs a pointer"), "{e}");
        let e = statement_err("{remove(a)}");
        assert!(e.message().contains("invalid JSON pointer"), "{e}");
        let e = statement_err("{continue");
        assert!(e.message().contains("'}'"), "{e}");
        let e = statement_err("{if '/a = 1' continue else if '/b = 1' continue}");
        assert!(e.message().contains("elseif"), "{e}");
        let e = statement_err("set(/a, 1)");
        assert!(e.message().contains("'{'"), "{e}");
        let e = statement_err("{if '(/a = 1' continue}");
        assert!(e.message().contains("')'"), "{e}");
        let e = statement_err("{if '/a = \"x' continue}");
        assert!(e.message().contains("unterminated string"), "{e}");
    }
}
