//! A reservation's spans drawn as a waterfall: server-rendered SVG, one row per routine
//! call, command and copy, bars placed on one time axis (routine calls blue, commands
//! green, copies orange, failures red), each with a `<title>` tooltip. Every value is
//! escaped.

use std::fmt::Write as _;

use super::page::esc;
use crate::trace::{Span, SpanKind};

/// Rows drawn at most (the table below the picture lists the same rows).
pub const MAX_ROWS: usize = 400;

const LABEL_W: f64 = 360.0;
const BAR_W: f64 = 640.0;
const ROW_H: f64 = 18.0;

/// Milliseconds shown as `1.234 s` / `56 ms`.
pub fn dur(ms: i64) -> String {
    if ms >= 1000 {
        format!("{:.3} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// One row's label: the routine, or the command/copy under it.
pub fn label(s: &Span) -> String {
    match s.kind {
        SpanKind::Routine if s.running => format!("{}::{} (running)", s.module, s.routine),
        SpanKind::Routine => format!("{}::{}", s.module, s.routine),
        SpanKind::Command => format!("  $ {} {}", s.host, s.detail),
        SpanKind::Copy => format!("  copy {}", s.detail),
    }
}

/// The SVG for `spans` (in start order), or a note when there are none.
pub fn svg(spans: &[Span]) -> String {
    if spans.is_empty() {
        return "<p class=\"muted\">No spans recorded for this reservation (yet).</p>".into();
    }
    let shown = &spans[..spans.len().min(MAX_ROWS)];
    let t0 = shown.iter().map(|s| s.start_ms).min().unwrap_or(0);
    let t1 = shown
        .iter()
        .map(|s| s.start_ms.saturating_add(s.duration_ms.max(0)))
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let scale = BAR_W / (t1 - t0) as f64;
    let height = ROW_H * (shown.len() as f64 + 1.5);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"waterfall\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"waterfall of {n} spans\">",
        w = LABEL_W + BAR_W + 10.0,
        n = shown.len()
    );
    // The axis: start, middle and end.
    for (i, frac) in [0.0, 0.5, 1.0].iter().enumerate() {
        let x = LABEL_W + frac * BAR_W;
        let anchor = ["start", "middle", "end"][i];
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{height}\" class=\"axis\"/><text x=\"{x:.1}\" y=\"12\" text-anchor=\"{anchor}\" class=\"tick\">+{}</text>",
            esc(&dur(((t1 - t0) as f64 * frac) as i64)),
            y0 = ROW_H * 0.9,
        );
    }
    for (i, s) in shown.iter().enumerate() {
        let y = ROW_H * (i as f64 + 1.0);
        let x = LABEL_W + (s.start_ms - t0) as f64 * scale;
        let w = (s.duration_ms.max(0) as f64 * scale).max(1.5);
        let class = if !s.ok {
            "bar failed"
        } else if s.running {
            "bar running"
        } else {
            match s.kind {
                SpanKind::Routine => "bar routine",
                SpanKind::Command => "bar command",
                SpanKind::Copy => "bar copy",
            }
        };
        let mut tip = format!(
            "{} — {} (+{} from the first span)",
            label(s).trim(),
            dur(s.duration_ms),
            dur(s.start_ms - t0)
        );
        if let Some(c) = s.exit_code {
            let _ = write!(tip, ", exit {c}");
        }
        if let Some(b) = s.bytes {
            let _ = write!(tip, ", {b} bytes");
        }
        if let Some(e) = &s.error {
            let _ = write!(tip, "; error: {e}");
        }
        let text: String = label(s).chars().take(56).collect();
        let _ = write!(
            out,
            "<g class=\"span {kind}\"><title>{tip}</title><text x=\"4\" y=\"{ty:.1}\" class=\"label{bad}\">{text}</text><rect x=\"{x:.1}\" y=\"{ry:.1}\" width=\"{w:.1}\" height=\"{rh:.1}\" class=\"{class}\"/></g>",
            kind = s.kind.as_str(),
            tip = esc(&tip),
            ty = y + ROW_H * 0.7,
            bad = if s.ok { "" } else { " failed" },
            text = esc(&text),
            ry = y + 3.0,
            rh = ROW_H - 6.0,
        );
    }
    out.push_str("</svg>");
    if spans.len() > shown.len() {
        let _ = write!(
            out,
            "<p class=\"muted\">{} more spans not drawn.</p>",
            spans.len() - shown.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: SpanKind, start: i64, dur: i64, detail: &str, ok: bool) -> Span {
        Span {
            kind,
            reservation_id: 1,
            module: "os/linux".into(),
            routine: "post_load".into(),
            host: "local".into(),
            detail: detail.into(),
            exit_code: (kind == SpanKind::Command).then_some(if ok { 0 } else { 3 }),
            bytes: (kind == SpanKind::Copy).then_some(5),
            start_ms: start,
            duration_ms: dur,
            ok,
            error: None,
            running: false,
        }
    }

    #[test]
    fn bars_sit_on_one_axis_and_hostile_text_is_escaped() {
        let spans = vec![
            span(SpanKind::Routine, 1000, 1000, "", true),
            span(
                SpanKind::Command,
                1500,
                500,
                "echo '<script>alert(1)</script>'",
                false,
            ),
        ];
        let svg = svg(&spans);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert!(svg.contains("class=\"bar failed\""), "{svg}");
        // The command starts halfway and lasts half: x = label + 320.
        assert!(svg.contains("x=\"680.0\""), "{svg}");
        assert!(svg.contains("width=\"320.0\""), "{svg}");
    }
}
