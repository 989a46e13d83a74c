//! `LIKE` patterns, compiled at parse time.
//!
//! `%` matches any run of characters, `_` exactly one character; `\%` and `\_`
//! match `%` and `_`. Any other backslash matches itself.

/// A compiled pattern: the pieces between `%` wildcards.
#[derive(Clone, Debug)]
pub(super) struct LikePattern {
    /// `segments.len()` is one more than the number of `%`. The first segment
    /// is anchored at the start of the text, the last at the end.
    segments: Vec<Segment>,
}

/// A run of literal text and `_` wildcards.
#[derive(Clone, Debug, Default)]
struct Segment {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
enum Piece {
    /// Literal text.
    Lit(String),
    /// This many `_`: that many arbitrary characters.
    Any(usize),
}

impl LikePattern {
    /// Compile the pattern text of a string literal.
    pub(super) fn new(pattern: &str) -> LikePattern {
        let mut segments = Vec::new();
        let mut current = Segment::default();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next_if(|&n| n == '%' || n == '_') {
                    Some(escaped) => current.push_char(escaped),
                    None => current.push_char('\\'),
                },
                '%' => segments.push(std::mem::take(&mut current)),
                '_' => current.push_any(),
                c => current.push_char(c),
            }
        }
        segments.push(current);
        LikePattern { segments }
    }

    /// Whether `text` matches the whole pattern.
    pub(super) fn matches(&self, text: &str) -> bool {
        let (first, rest) = match self.segments.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            return first.match_at(text, 0) == Some(text.len());
        };
        let Some(mut pos) = first.match_at(text, 0) else {
            return false;
        };
        let Some(end) = last.match_before(text, text.len()) else {
            return false;
        };
        if end < pos {
            return false;
        }
        // Placing each middle segment as far left as possible leaves the most
        // room for the ones after it, so the first fit is the right one.
        for seg in middle {
            match seg.find(text, pos, end) {
                Some(after) => pos = after,
                None => return false,
            }
        }
        true
    }
}

impl Segment {
    fn push_char(&mut self, c: char) {
        if let Some(Piece::Lit(s)) = self.pieces.last_mut() {
            s.push(c);
        } else {
            self.pieces.push(Piece::Lit(c.to_string()));
        }
    }

    fn push_any(&mut self) {
        if let Some(Piece::Any(n)) = self.pieces.last_mut() {
            *n += 1;
        } else {
            self.pieces.push(Piece::Any(1));
        }
    }

    /// Match forwards from byte `pos`; the byte position after the match.
    fn match_at(&self, text: &str, mut pos: usize) -> Option<usize> {
        for piece in &self.pieces {
            let rest = text.get(pos..)?;
            match piece {
                Piece::Lit(s) => {
                    if !rest.starts_with(s.as_str()) {
                        return None;
                    }
                    pos += s.len();
                }
                Piece::Any(n) => pos += advance(rest, *n)?,
            }
        }
        Some(pos)
    }

    /// Match backwards so that the match ends at byte `end`; the byte position
    /// where the match starts.
    fn match_before(&self, text: &str, mut end: usize) -> Option<usize> {
        for piece in self.pieces.iter().rev() {
            let head = text.get(..end)?;
            match piece {
                Piece::Lit(s) => {
                    if !head.ends_with(s.as_str()) {
                        return None;
                    }
                    end -= s.len();
                }
                Piece::Any(n) => {
                    let mut chars = head.chars();
                    for _ in 0..*n {
                        end -= chars.next_back()?.len_utf8();
                    }
                }
            }
        }
        Some(end)
    }

    /// The leftmost match starting at or after `from` and ending at or before
    /// `limit`; the byte position after it.
    fn find(&self, text: &str, from: usize, limit: usize) -> Option<usize> {
        let window = text.get(..limit)?;
        let mut start = from;
        loop {
            let candidate = match self.pieces.first() {
                None => return Some(from),
                // Jump to the next occurrence of the leading literal.
                Some(Piece::Lit(s)) => start + window.get(start..)?.find(s.as_str())?,
                Some(Piece::Any(_)) => start,
            };
            if let Some(after) = self.match_at(window, candidate) {
                return Some(after);
            }
            let step = window.get(candidate..)?.chars().next()?.len_utf8();
            start = candidate + step;
        }
    }
}

/// Byte length of the first `n` characters of `s`, if it has that many.
fn advance(s: &str, n: usize) -> Option<usize> {
    if n == 0 {
        return Some(0);
    }
    match s.char_indices().nth(n) {
        Some((i, _)) => Some(i),
        None => (s.chars().count() == n).then_some(s.len()),
    }
}
