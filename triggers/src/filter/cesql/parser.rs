//! Recursive-descent parser.
//!
//! Precedence, tightest first: function calls and other primaries; unary
//! `NOT` and `-`; postfix `LIKE` and `IN`; `* / %`; `+ -`; comparisons;
//! `AND OR XOR`. Binary operators of one level associate to the left, except
//! `AND OR XOR`, which associate to the right as the CESQL grammar says (the
//! evaluator folds their chain from the right).

use super::ast::{BinOp, Chain, Func, In, Level, Like, Lit, Node};
use super::lexer::{Tok, Token, tokenize};
use super::like::LikePattern;
use super::{MAX_DEPTH, MAX_SOURCE_LEN, ParseError};

/// Parse a whole source text. With `strict`, calls that name no built-in
/// function are errors rather than [`Node::MissingFunction`].
pub(super) fn parse(src: &str, strict: bool) -> Result<Node, ParseError> {
    if src.len() > MAX_SOURCE_LEN {
        let mut cut = MAX_SOURCE_LEN;
        while !src.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(ParseError {
            column: src.get(..cut).unwrap_or_default().chars().count() + 1,
            message: format!(
                "expression is {} bytes long, more than MAX_SOURCE_LEN ({MAX_SOURCE_LEN})",
                src.len()
            ),
        });
    }
    parse_unlimited(src, strict)
}

/// [`parse`] without the length limit (the depth limit still applies).
pub(super) fn parse_unlimited(src: &str, strict: bool) -> Result<Node, ParseError> {
    let mut p = Parser {
        src,
        toks: tokenize(src)?,
        pos: 0,
        depth: 0,
        strict,
    };
    let node = p.expression()?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected("an operator or the end of the expression"));
    }
    Ok(node)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token<'s>>,
    pos: usize,
    depth: usize,
    strict: bool,
}

impl<'s> Parser<'s> {
    fn token(&self, ahead: usize) -> Option<&Token<'s>> {
        self.toks.get(self.pos + ahead).or_else(|| self.toks.last())
    }

    fn peek(&self) -> &Tok<'s> {
        self.token(0).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek2(&self) -> &Tok<'s> {
        self.token(1).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn column(&self) -> usize {
        self.token(0).map_or(1, |t| t.column)
    }

    fn bump(&mut self) -> Tok<'s> {
        let tok = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        tok
    }

    fn error(&self, message: String) -> ParseError {
        ParseError {
            column: self.column(),
            message,
        }
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        self.error(format!(
            "expected {expected}, found {}",
            describe(self.peek())
        ))
    }

    fn expect(&mut self, tok: Tok<'static>, expected: &str) -> Result<(), ParseError> {
        if *self.peek() == tok {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Enter one nesting level; fails beyond [`MAX_DEPTH`].
    fn enter(&mut self) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!(
                "expression is nested more than MAX_DEPTH ({MAX_DEPTH}) levels deep"
            )));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    fn expression(&mut self) -> Result<Node, ParseError> {
        self.binary(Level::Logic)
    }

    /// A run of binary operators of `level`, or a single operand.
    fn binary(&mut self, level: Level) -> Result<Node, ParseError> {
        let first = self.binary_operand(level)?;
        let mut rest = Vec::new();
        while let Some(op) = binary_op(self.peek(), level) {
            self.bump();
            rest.push((op, self.binary_operand(level)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Node::Chain(Box::new(Chain { level, first, rest }))
        })
    }

    fn binary_operand(&mut self, level: Level) -> Result<Node, ParseError> {
        match level.tighter() {
            Some(tighter) => self.binary(tighter),
            None => self.postfix(),
        }
    }

    /// An operand followed by any number of `[NOT] LIKE` / `[NOT] IN`.
    fn postfix(&mut self) -> Result<Node, ParseError> {
        let mut node = self.unary()?;
        let mut levels = 0;
        let result = loop {
            let negated = match (self.peek(), self.peek2()) {
                (Tok::Not, Tok::Like | Tok::In) => true,
                (Tok::Like | Tok::In, _) => false,
                (Tok::Not, _) => {
                    self.bump();
                    break Err(self.unexpected("LIKE or IN after NOT"));
                }
                _ => break Ok(node),
            };
            if let Err(e) = self.enter() {
                break Err(e);
            }
            levels += 1;
            if negated {
                self.bump();
            }
            let step = if self.bump() == Tok::Like {
                self.like_pattern().map(|pattern| {
                    Node::Like(Box::new(Like {
                        operand: node,
                        pattern,
                        negated,
                    }))
                })
            } else {
                self.set().map(|set| {
                    Node::In(Box::new(In {
                        operand: node,
                        set,
                        negated,
                    }))
                })
            };
            match step {
                Ok(n) => node = n,
                Err(e) => break Err(e),
            }
        };
        self.leave(levels);
        result
    }

    fn like_pattern(&mut self) -> Result<LikePattern, ParseError> {
        match self.peek() {
            Tok::Str(s) => {
                let pattern = LikePattern::new(s);
                self.bump();
                Ok(pattern)
            }
            _ => Err(self.unexpected("a string literal as LIKE pattern")),
        }
    }

    /// `( expression, ... )` after IN; empty sets are not allowed.
    fn set(&mut self) -> Result<Vec<Node>, ParseError> {
        self.expect(Tok::LParen, "'(' after IN")?;
        let mut set = vec![self.expression()?];
        while *self.peek() == Tok::Comma {
            self.bump();
            set.push(self.expression()?);
        }
        self.expect(Tok::RParen, "',' or ')' in IN set")?;
        Ok(set)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        match self.peek() {
            Tok::Not => {
                self.enter()?;
                self.bump();
                let operand = self.unary();
                self.leave(1);
                Ok(Node::Not(Box::new(operand?)))
            }
            Tok::Minus => {
                if let Tok::Int(digits) = *self.peek2() {
                    // A signed integer literal, so that -2147483648 is valid.
                    let column = self.column();
                    self.bump();
                    self.bump();
                    return int_literal(digits, true, column);
                }
                self.enter()?;
                self.bump();
                let operand = self.unary();
                self.leave(1);
                Ok(Node::Neg(Box::new(operand?)))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let column = self.column();
        match self.peek().clone() {
            Tok::LParen => {
                self.enter()?;
                self.bump();
                let inner = self.expression().and_then(|e| {
                    self.expect(Tok::RParen, "')'")?;
                    Ok(e)
                });
                self.leave(1);
                inner
            }
            Tok::Int(digits) => {
                self.bump();
                int_literal(digits, false, column)
            }
            Tok::Plus => match (self.token(0), self.token(1)) {
                // `+` directly before digits is the sign of an integer literal.
                (Some(plus), Some(next)) if plus.end == next.start => {
                    let Tok::Int(digits) = next.tok else {
                        return Err(self.unexpected("an expression"));
                    };
                    self.bump();
                    self.bump();
                    int_literal(digits, false, column)
                }
                _ => Err(self.unexpected("an expression")),
            },
            Tok::Str(s) => {
                self.bump();
                Ok(Node::Lit(Lit::Str(s.into_boxed_str())))
            }
            Tok::True => {
                self.bump();
                Ok(Node::Lit(Lit::Bool(true)))
            }
            Tok::False => {
                self.bump();
                Ok(Node::Lit(Lit::Bool(false)))
            }
            Tok::Exists => {
                self.bump();
                let name = match self.peek() {
                    Tok::Name(n) => Some(*n),
                    // An all-digit attribute name.
                    Tok::Int(_) => self.token(0).and_then(|t| self.src.get(t.start..t.end)),
                    _ => None,
                };
                let Some(name) = name else {
                    return Err(self.unexpected("an attribute name after EXISTS"));
                };
                self.bump();
                Ok(Node::Exists(name.to_ascii_lowercase().into_boxed_str()))
            }
            Tok::Name(name) if *self.peek2() != Tok::LParen => {
                self.bump();
                Ok(Node::Attr(name.to_ascii_lowercase().into_boxed_str()))
            }
            Tok::FuncName(name) if *self.peek2() != Tok::LParen => Err(self.error(format!(
                "invalid attribute name {name:?}: only letters and digits are allowed"
            ))),
            Tok::Name(name) | Tok::FuncName(name) => {
                if !name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') {
                    return Err(self.error(format!(
                        "invalid function name {name:?}: only letters and '_' are allowed"
                    )));
                }
                self.bump();
                self.call(name, column)
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// Arguments of a call to `name`, which is at `column`.
    fn call(&mut self, name: &str, column: usize) -> Result<Node, ParseError> {
        self.expect(Tok::LParen, "'(' after function name")?;
        self.enter()?;
        let args = self.arguments();
        self.leave(1);
        let args = args?;
        match Func::resolve(name, args.len()) {
            Some(func) => Ok(Node::Call(func, args)),
            None if self.strict => Err(ParseError {
                column,
                message: format!("no function {name} taking {} argument(s)", args.len()),
            }),
            None => Ok(Node::MissingFunction(name.into(), args.len())),
        }
    }

    fn arguments(&mut self) -> Result<Vec<Node>, ParseError> {
        let mut args = Vec::new();
        if *self.peek() != Tok::RParen {
            args.push(self.expression()?);
            while *self.peek() == Tok::Comma {
                self.bump();
                args.push(self.expression()?);
            }
        }
        self.expect(Tok::RParen, "',' or ')' in argument list")?;
        Ok(args)
    }
}

/// The binary operator of `level` that `tok` is, if any.
fn binary_op(tok: &Tok<'_>, level: Level) -> Option<BinOp> {
    let op = match tok {
        Tok::And => BinOp::And,
        Tok::Or => BinOp::Or,
        Tok::Xor => BinOp::Xor,
        Tok::Eq => BinOp::Eq,
        Tok::NotEq => BinOp::NotEq,
        Tok::Lt => BinOp::Lt,
        Tok::Le => BinOp::Le,
        Tok::Gt => BinOp::Gt,
        Tok::Ge => BinOp::Ge,
        Tok::Plus => BinOp::Add,
        Tok::Minus => BinOp::Sub,
        Tok::Star => BinOp::Mul,
        Tok::Slash => BinOp::Div,
        Tok::Percent => BinOp::Rem,
        _ => return None,
    };
    let op_level = match op {
        BinOp::And | BinOp::Or | BinOp::Xor => Level::Logic,
        BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => Level::Compare,
        BinOp::Add | BinOp::Sub => Level::Additive,
        BinOp::Mul | BinOp::Div | BinOp::Rem => Level::Multiplicative,
    };
    (op_level == level).then_some(op)
}

/// An integer literal; it must fit in 32 bits with its sign.
fn int_literal(digits: Option<u32>, negative: bool, column: usize) -> Result<Node, ParseError> {
    let value = digits.and_then(|d| {
        let d = i64::from(d);
        i32::try_from(if negative { -d } else { d }).ok()
    });
    match value {
        Some(v) => Ok(Node::Lit(Lit::Int(v))),
        None => Err(ParseError {
            column,
            message: "integer literal does not fit in 32 bits".to_owned(),
        }),
    }
}

/// A token for error messages.
fn describe(tok: &Tok<'_>) -> String {
    let fixed = match tok {
        Tok::LParen => "'('",
        Tok::RParen => "')'",
        Tok::Comma => "','",
        Tok::Plus => "'+'",
        Tok::Minus => "'-'",
        Tok::Star => "'*'",
        Tok::Slash => "'/'",
        Tok::Percent => "'%'",
        Tok::Eq => "'='",
        Tok::NotEq => "'!='",
        Tok::Lt => "'<'",
        Tok::Le => "'<='",
        Tok::Gt => "'>'",
        Tok::Ge => "'>='",
        Tok::And => "AND",
        Tok::Or => "OR",
        Tok::Xor => "XOR",
        Tok::Not => "NOT",
        Tok::Like => "LIKE",
        Tok::Exists => "EXISTS",
        Tok::In => "IN",
        Tok::True => "TRUE",
        Tok::False => "FALSE",
        Tok::Int(_) => "an integer literal",
        Tok::Str(_) => "a string literal",
        Tok::Name(n) | Tok::FuncName(n) => return format!("name {n:?}"),
        Tok::Eof => "the end of the expression",
    };
    fixed.to_owned()
}
