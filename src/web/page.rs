//! The status page's HTML, rendered on the server (no script build step): the overview
//! (management nodes, computers, reservations, modules) and a reservation's page (its
//! load-log timeline and its waterfall). Pages reload themselves every `refresh` seconds
//! (`<meta http-equiv="refresh">`). Every value from the database, a script or a user
//! passes through [`esc`].

use std::fmt::Write as _;

use super::status::{Detail, Status};
use super::waterfall;

/// `text` safe inside HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .3em}\
table{border-collapse:collapse;margin:.2em 0}td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.muted{color:#777}.failed,.failed td{color:#b00020}tr.failed{background:#fdecee}\
.state{font-weight:600}.ok{color:#1b7f3b}code{font:12px monospace}\
svg.waterfall{border:1px solid #ddd;background:#fafafa}.tick{font:10px monospace;fill:#666}.axis{stroke:#ddd}\
.label{font:11px monospace;fill:#222}.label.failed{fill:#b00020}\
.bar.routine{fill:#3b6fd8}.bar.command{fill:#2e9e5b}.bar.copy{fill:#e08a1e}.bar.failed{fill:#d32f2f}.bar.running{fill:#9bb7ee;stroke:#3b6fd8;stroke-dasharray:4 2}";

fn head(title: &str, refresh: u64) -> String {
    let meta = if refresh > 0 {
        format!("<meta http-equiv=\"refresh\" content=\"{refresh}\">")
    } else {
        String::new()
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">{meta}<title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    )
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(esc).unwrap_or_else(|| "—".into())
}

/// The overview page.
pub fn overview(s: &Status, refresh: u64) -> String {
    let mut o = head("provhost status", refresh);
    let _ = write!(
        o,
        "<h1>provhost status</h1><p class=\"muted\">{} · <a href=\"/api/status\">JSON</a> · <a href=\"/metrics\">metrics</a></p>",
        esc(&s.generated)
    );
    o.push_str("<h2>Management nodes</h2><table id=\"nodes\"><tr><th>Node</th><th>State</th><th>Last check-in</th><th>Daemon (lease holder)</th><th>Lease</th></tr>");
    for n in &s.nodes {
        let lease = match (&n.lease_holder, n.lease_live) {
            (Some(_), true) => format!(
                "<span class=\"ok\">live</span> to {}",
                opt(&n.lease_expires)
            ),
            (Some(_), false) => format!("expired {}", opt(&n.lease_expires)),
            (None, _) => "never held".into(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
            esc(&n.hostname),
            esc(&n.state),
            opt(&n.lastcheckin),
            opt(&n.lease_host),
            n.lease_holder
                .as_deref()
                .map(|h| format!("<code>{}</code>", esc(h)))
                .unwrap_or_default(),
            lease
        );
    }
    o.push_str("</table>");

    o.push_str("<h2>Reservations</h2><table id=\"reservations\"><tr><th>Reservation</th><th>Request</th><th>State/last</th><th>User</th><th>Image</th><th>Computer</th><th>Start</th><th>End</th><th>Last step</th></tr>");
    if s.reservations.is_empty() {
        o.push_str("<tr><td colspan=\"9\" class=\"muted\">none</td></tr>");
    }
    for r in &s.reservations {
        let failed = r.row.state == "failed" || r.last_step.as_deref() == Some("failed");
        let _ = write!(
            o,
            "<tr{}><td><a href=\"/reservation/{id}\">{id}</a></td><td>{}</td><td class=\"state\">{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} <span class=\"muted\">{}</span></td></tr>",
            if failed { " class=\"failed\"" } else { "" },
            r.row.request_id,
            esc(&r.row.state),
            esc(&r.row.laststate),
            esc(&r.row.user),
            esc(&r.row.image),
            esc(&r.row.computer),
            esc(&r.row.start),
            esc(&r.row.end),
            opt(&r.last_step),
            opt(&r.last_info),
            id = r.row.reservation_id,
        );
    }
    o.push_str("</table>");

    o.push_str("<h2>Computers</h2><table id=\"computers\"><tr><th>Computer</th><th>State</th><th>Image</th><th>VM host</th><th>Provisioning</th><th>Held by request</th></tr>");
    for c in &s.computers {
        let _ = write!(
            o,
            "<tr{}><td>{}</td><td class=\"state\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.state == "failed" { " class=\"failed\"" } else { "" },
            esc(&c.hostname),
            esc(&c.state),
            esc(&c.current_image),
            opt(&c.vmhost),
            esc(&c.provisioning),
            c.held_by_request.map(|r| r.to_string()).unwrap_or_else(|| "—".into())
        );
    }
    o.push_str("</table>");

    let _ = write!(
        o,
        "<h2>Modules</h2><p class=\"muted\">{}</p><table id=\"modules\"><tr><th>Module</th><th>Version</th><th>File</th><th>Loaded</th><th>Loads</th><th>Last reload error</th></tr>",
        esc(&s.modules_source)
    );
    for m in &s.modules {
        let error = match (&m.last_error, &m.last_error_at) {
            (Some(e), at) => format!(
                "<span class=\"failed\">{}{}</span>",
                at.as_deref()
                    .map(|a| format!("{}: ", esc(a)))
                    .unwrap_or_default(),
                esc(e)
            ),
            (None, _) => "—".into(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.module),
            esc(&m.version),
            esc(&m.file),
            opt(&m.loaded_at),
            m.restored_from
                .as_deref()
                .map(|r| format!(" (restored from {})", esc(r)))
                .unwrap_or_default(),
            m.generation,
            error
        );
    }
    o.push_str("</table></body></html>");
    o
}

fn secs(s: i64) -> String {
    format!("{}:{:02}", s / 60, s % 60)
}

/// A reservation's page: timeline, waterfall and the spans as a table.
pub fn reservation(d: &Detail, refresh: u64) -> String {
    let mut o = head(&format!("reservation {}", d.reservation_id), refresh);
    let _ = write!(
        o,
        "<p><a href=\"/\">← status</a> · <a href=\"/api/reservation/{id}\">JSON</a></p><h1>Reservation {id}</h1>",
        id = d.reservation_id
    );
    match &d.summary {
        Some(r) => {
            let _ = write!(
                o,
                "<p>Request {} · <span class=\"state\">{}/{}</span> · user {} · image {} · computer {} · {} to {}</p>",
                r.row.request_id,
                esc(&r.row.state),
                esc(&r.row.laststate),
                esc(&r.row.user),
                esc(&r.row.image),
                esc(&r.row.computer),
                esc(&r.row.start),
                esc(&r.row.end)
            );
        }
        None => o.push_str("<p class=\"muted\">The request of this reservation is not in the database (removed after it finished, or never made).</p>"),
    }
    o.push_str("<h2>Load-log timeline</h2><table id=\"timeline\"><tr><th>Time</th><th>Elapsed</th><th>Step</th><th>State</th><th>Info</th></tr>");
    if d.timeline.is_empty() {
        o.push_str("<tr><td colspan=\"5\" class=\"muted\">no entries yet</td></tr>");
    }
    for s in &d.timeline {
        let pretty = if s.pretty.is_empty() || s.pretty == s.name {
            String::new()
        } else {
            format!(" <span class=\"muted\">({})</span>", esc(&s.pretty))
        };
        let _ = write!(
            o,
            "<tr class=\"step{}\"><td>{}</td><td>+{}</td><td>+{} s</td><td class=\"loadstate\">{}{}</td><td>{}</td></tr>",
            if s.failed { " failed" } else { "" },
            esc(&s.timestamp),
            secs(s.elapsed_secs),
            s.step_secs,
            esc(&s.name),
            pretty,
            esc(&s.info)
        );
    }
    o.push_str("</table><h2>Waterfall</h2><div id=\"waterfall\">");
    if let Some(e) = &d.spans_error {
        let _ = write!(
            o,
            "<p class=\"failed\">spans could not be read: {}</p>",
            esc(e)
        );
    }
    o.push_str(&waterfall::svg(&d.spans));
    o.push_str("</div><h2>Spans</h2><table id=\"spans\"><tr><th>+</th><th>Duration</th><th>Kind</th><th>Module::routine</th><th>Host</th><th>Command / copy</th><th>Exit</th><th>Bytes</th><th>Error</th></tr>");
    let t0 = d.spans.iter().map(|s| s.start_ms).min().unwrap_or(0);
    for s in d.spans.iter().take(waterfall::MAX_ROWS) {
        let _ = write!(
            o,
            "<tr class=\"span {}{}\"><td>{}</td><td>{}{}</td><td>{}</td><td>{}::{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.kind.as_str(),
            if s.ok { "" } else { " failed" },
            esc(&waterfall::dur(s.start_ms - t0)),
            esc(&waterfall::dur(s.duration_ms)),
            if s.running { " so far (running)" } else { "" },
            s.kind.as_str(),
            esc(&s.module),
            esc(&s.routine),
            esc(&s.host),
            esc(&s.detail),
            s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            s.bytes.map(|b| b.to_string()).unwrap_or_default(),
            s.error.as_deref().map(esc).unwrap_or_default()
        );
    }
    o.push_str("</table></body></html>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc("<img src=x onerror='a(1)'> & \"q\""),
            "&lt;img src=x onerror=&#39;a(1)&#39;&gt; &amp; &quot;q&quot;"
        );
    }
}
