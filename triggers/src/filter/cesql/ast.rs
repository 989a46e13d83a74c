//! Compiled form of an expression.

use super::like::LikePattern;

/// A node of the compiled expression tree.
#[derive(Clone, Debug)]
pub(super) enum Node {
    /// A literal value.
    Lit(Lit),
    /// An attribute read; the name is lower-case.
    Attr(Box<str>),
    /// `EXISTS name`; the name is lower-case.
    Exists(Box<str>),
    /// `NOT x`.
    Not(Box<Node>),
    /// `-x`.
    Neg(Box<Node>),
    /// A left-associative run of binary operators of one precedence level:
    /// `first op1 x1 op2 x2 ...` means `((first op1 x1) op2 x2) ...`.
    Chain(Box<Chain>),
    /// `x LIKE pattern` or `x NOT LIKE pattern`.
    Like(Box<Like>),
    /// `x IN (y1, ...)` or `x NOT IN (y1, ...)`.
    In(Box<In>),
    /// A call of a built-in function whose arity was checked at parse time.
    Call(Func, Vec<Node>),
    /// A call that names no built-in function with that arity.
    MissingFunction(Box<str>, usize),
}

/// A literal.
#[derive(Clone, Debug)]
pub(super) enum Lit {
    Str(Box<str>),
    Int(i32),
    Bool(bool),
}

/// See [`Node::Chain`].
#[derive(Clone, Debug)]
pub(super) struct Chain {
    pub(super) level: Level,
    pub(super) first: Node,
    pub(super) rest: Vec<(BinOp, Node)>,
}

/// See [`Node::Like`].
#[derive(Clone, Debug)]
pub(super) struct Like {
    pub(super) operand: Node,
    pub(super) pattern: LikePattern,
    pub(super) negated: bool,
}

/// See [`Node::In`].
#[derive(Clone, Debug)]
pub(super) struct In {
    pub(super) operand: Node,
    pub(super) set: Vec<Node>,
    pub(super) negated: bool,
}

/// Precedence levels of binary operators, loosest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Level {
    /// `AND`, `OR`, `XOR`.
    Logic,
    /// `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`.
    Compare,
    /// `+`, `-`.
    Additive,
    /// `*`, `/`, `%`.
    Multiplicative,
}

impl Level {
    /// The next tighter level, if any.
    pub(super) fn tighter(self) -> Option<Level> {
        match self {
            Level::Logic => Some(Level::Compare),
            Level::Compare => Some(Level::Additive),
            Level::Additive => Some(Level::Multiplicative),
            Level::Multiplicative => None,
        }
    }

    /// Whether operators of this level return Integer (else Boolean).
    pub(super) fn is_numeric(self) -> bool {
        matches!(self, Level::Additive | Level::Multiplicative)
    }
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    And,
    Or,
    Xor,
    Eq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    /// The operator as written.
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinOp::And => "AND",
            BinOp::Or => "OR",
            BinOp::Xor => "XOR",
            BinOp::Eq => "=",
            BinOp::NotEq => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

/// A built-in function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func {
    Abs,
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    Substring,
    Int,
    Bool,
    String,
    IsInt,
    IsBool,
}

/// Return type of a node, used for zero values after errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Type {
    String,
    Integer,
    Boolean,
}

impl Func {
    /// Resolve a function name (any case) called with `arity` arguments.
    pub(super) fn resolve(name: &str, arity: usize) -> Option<Func> {
        const TABLE: [(&str, Func); 15] = [
            ("ABS", Func::Abs),
            ("LENGTH", Func::Length),
            ("CONCAT", Func::Concat),
            ("CONCAT_WS", Func::ConcatWs),
            ("LOWER", Func::Lower),
            ("UPPER", Func::Upper),
            ("TRIM", Func::Trim),
            ("LEFT", Func::Left),
            ("RIGHT", Func::Right),
            ("SUBSTRING", Func::Substring),
            ("INT", Func::Int),
            ("BOOL", Func::Bool),
            ("STRING", Func::String),
            ("IS_INT", Func::IsInt),
            ("IS_BOOL", Func::IsBool),
        ];
        let func = TABLE
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)?;
        let ok = match func {
            Func::Concat => true,
            Func::ConcatWs => arity >= 1,
            Func::Left | Func::Right => arity == 2,
            Func::Substring => arity == 2 || arity == 3,
            _ => arity == 1,
        };
        ok.then_some(func)
    }

    /// The function's return type.
    pub(super) fn return_type(self) -> Type {
        match self {
            Func::Abs | Func::Length | Func::Int => Type::Integer,
            Func::Bool | Func::IsInt | Func::IsBool => Type::Boolean,
            Func::Concat
            | Func::ConcatWs
            | Func::Lower
            | Func::Upper
            | Func::Trim
            | Func::Left
            | Func::Right
            | Func::Substring
            | Func::String => Type::String,
        }
    }
}
