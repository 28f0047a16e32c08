//! Printing a listing: a plain table for people, or JSON (`--json`) for programs.

use clap::Args;
use serde::Serialize;

/// `--json` of the list commands.
#[derive(Debug, Clone, Args)]
pub struct Format {
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Print `rows` as JSON, or as a table with `headers` and one line of cells per row.
pub fn print<T: Serialize>(
    format: &Format,
    rows: &[T],
    headers: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if format.json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    print!("{}", table(headers, rows.iter().map(cells).collect()));
    Ok(())
}

/// Columns padded to their widest cell (the last one not padded).
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// A cell for an optional value: the value, or `-`.
pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let t = table(
            &["ID", "NAME", "STATE"],
            vec![
                vec!["1".into(), "sim1".into(), "available".into()],
                vec!["12".into(), "a-longer-name".into(), "failed".into()],
            ],
        );
        assert_eq!(
            t,
            "ID  NAME           STATE\n1   sim1           available\n12  a-longer-name  failed\n"
        );
    }
}
