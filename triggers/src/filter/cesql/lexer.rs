//! Tokenizer.

use super::ParseError;

/// A token kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Tok<'s> {
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eq,
    /// `!=` or `<>`.
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Xor,
    Not,
    Like,
    Exists,
    In,
    True,
    False,
    /// Unsigned decimal digits; `None` when the value exceeds `u32`.
    Int(Option<u32>),
    /// A string literal with its quote escapes resolved.
    Str(String),
    /// A word of ASCII letters and digits that is not a keyword, as written.
    Name(&'s str),
    /// A word of ASCII letters and `_` containing `_`, as written.
    FuncName(&'s str),
    Eof,
}

/// A token with its position.
#[derive(Clone, Debug)]
pub(super) struct Token<'s> {
    pub(super) tok: Tok<'s>,
    /// 1-based character column of the first character.
    pub(super) column: usize,
    /// Byte range in the source.
    pub(super) start: usize,
    pub(super) end: usize,
}

/// Split `src` into tokens, ending with [`Tok::Eof`].
pub(super) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let mut lx = Lexer {
        src,
        pos: 0,
        column: 1,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_space();
        let (start, column) = (lx.pos, lx.column);
        let Some(c) = lx.bump() else {
            out.push(Token {
                tok: Tok::Eof,
                column,
                start,
                end: start,
            });
            return Ok(out);
        };
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '*' => Tok::Star,
            '/' => Tok::Slash,
            '%' => Tok::Percent,
            '=' => Tok::Eq,
            '!' if lx.eat('=') => Tok::NotEq,
            '<' if lx.eat('=') => Tok::Le,
            '<' if lx.eat('>') => Tok::NotEq,
            '<' => Tok::Lt,
            '>' if lx.eat('=') => Tok::Ge,
            '>' => Tok::Gt,
            '\'' | '"' => lx.string(c, column)?,
            c if c.is_ascii_alphanumeric() || c == '_' => lx.word(start, column)?,
            c => {
                return Err(ParseError {
                    column,
                    message: format!("unexpected character {c:?}"),
                });
            }
        };
        out.push(Token {
            tok,
            column,
            start,
            end: lx.pos,
        });
    }
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    column: usize,
}

impl<'s> Lexer<'s> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        self.column += 1;
        Some(c)
    }

    fn eat(&mut self, want: char) -> bool {
        let hit = self.peek() == Some(want);
        if hit {
            self.bump();
        }
        hit
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\n')) {
            self.bump();
        }
    }

    /// A string literal after its opening quote `q`. Inside it, `\q` and `qq`
    /// stand for `q`; any other backslash is kept with the character after it.
    fn string(&mut self, q: char, column: usize) -> Result<Tok<'s>, ParseError> {
        let unterminated = || ParseError {
            column,
            message: "unterminated string literal".to_owned(),
        };
        let mut out = String::new();
        loop {
            match self.bump().ok_or_else(unterminated)? {
                '\\' => {
                    let c = self.bump().ok_or_else(unterminated)?;
                    if c != q {
                        out.push('\\');
                    }
                    out.push(c);
                }
                c if c == q => {
                    if !self.eat(q) {
                        return Ok(Tok::Str(out));
                    }
                    out.push(q);
                }
                c => out.push(c),
            }
        }
    }

    /// A word of ASCII letters, digits and `_` whose first character was
    /// already consumed.
    fn word(&mut self, start: usize, column: usize) -> Result<Tok<'s>, ParseError> {
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
            self.bump();
        }
        let text = self.src.get(start..self.pos).unwrap_or_default();
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Tok::Int(text.parse().ok()));
        }
        if text.contains('_') {
            let mut bytes = text.bytes();
            let first_alpha = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
            if first_alpha && bytes.all(|b| b.is_ascii_alphabetic() || b == b'_') {
                return Ok(Tok::FuncName(text));
            }
            return Err(ParseError {
                column,
                message: format!(
                    "invalid name {text:?}: attribute names have only letters and digits, function names only letters and '_'"
                ),
            });
        }
        const KEYWORDS: [(&str, Tok<'static>); 9] = [
            ("AND", Tok::And),
            ("OR", Tok::Or),
            ("XOR", Tok::Xor),
            ("NOT", Tok::Not),
            ("LIKE", Tok::Like),
            ("EXISTS", Tok::Exists),
            ("IN", Tok::In),
            ("TRUE", Tok::True),
            ("FALSE", Tok::False),
        ];
        Ok(KEYWORDS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(text))
            .map_or(Tok::Name(text), |(_, t)| t.clone()))
    }
}
