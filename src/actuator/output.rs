//! A pod's stdout and stderr, forwarded to the gateway log line by line.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longer lines are logged in pieces of this many bytes, so a pod cannot grow our memory.
pub(crate) const MAX_LINE: usize = 8 * 1024;

/// Reads `reader` to its end and hands every line (without its newline, lossily decoded) to
/// `emit`. A read error ends the stream like EOF.
pub(crate) async fn for_each_line<R, F>(reader: R, mut emit: F)
where
    R: AsyncRead + Unpin,
    F: FnMut(&str),
{
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let room = MAX_LINE - line.len();
        let window = &chunk[..chunk.len().min(room)];
        let (used, complete) = match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&window[..i]);
                (i + 1, true)
            }
            None => {
                line.extend_from_slice(window);
                (window.len(), line.len() >= MAX_LINE)
            }
        };
        reader.consume(used);
        if complete {
            emit_line(&mut line, &mut emit);
        }
    }
    if !line.is_empty() {
        emit_line(&mut line, &mut emit);
    }
}

fn emit_line<F: FnMut(&str)>(line: &mut Vec<u8>, emit: &mut F) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    emit(&String::from_utf8_lossy(line));
    line.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for_each_line(input, |l| out.push(l.to_owned())).await;
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_a_trailing_fragment() {
        assert_eq!(
            lines(b"one\r\ntwo\n\nthree").await,
            vec!["one", "two", "", "three"]
        );
        assert!(lines(b"").await.is_empty());
        assert_eq!(lines(b"caf\xc3\xa9 \xff\n").await, vec!["café \u{fffd}"]);
    }

    #[tokio::test]
    async fn long_lines_come_in_bounded_pieces() {
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.push(b'\n');
        let got = lines(&input).await;
        assert_eq!(
            got.iter().map(String::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 10]
        );
    }
}
