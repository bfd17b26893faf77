//! The read-only HTML status page: readiness and backends, the CA chain, every
//! watched certificate with its days left coloured by alert level, and a timeline of
//! upcoming expiries as CSS bars. Self-contained (inline CSS, no script, no external
//! asset) and every string from a certificate or the configuration is HTML-escaped.
//! It shows certificates' public data only, never key material.

use std::fmt::Write;

use keyward_core::check::AlertLevel;
use time::OffsetDateTime;

use super::{CertRow, Metrics};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f3f3f3}td.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}\
.lvl{font-weight:600;padding:1px 6px;border-radius:3px;color:#fff}\
.OK{background:#2e7d32}.WARNING{background:#f9a825;color:#222}.ERROR{background:#e65100}.CRITICAL{background:#b71c1c}\
.badge{display:inline-block;padding:2px 8px;border-radius:3px;color:#fff}.up{background:#2e7d32}.down{background:#b71c1c}\
.tl{margin:2px 0;display:flex;align-items:center}.tl .name{width:32%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;padding-right:8px}\
.tl .track{flex:1;background:#eee;height:14px;position:relative}.tl .bar{height:14px}\
.tl .when{width:24%;padding-left:8px;font-size:12px}";

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

fn date(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How much time is left, in words: `12 d`, `5 h`, `42 min`, `expired`.
fn left(c: &CertRow, now: OffsetDateTime) -> String {
    let secs = (c.not_after - now).whole_seconds();
    match secs {
        s if s <= 0 => "expired".into(),
        s if s >= 2 * 86_400 => format!("{} d", s / 86_400),
        s if s >= 2 * 3600 => format!("{} h", s / 3600),
        s => format!("{} min", s / 60),
    }
}

fn level_span(l: AlertLevel) -> String {
    format!("<span class=\"lvl {0}\">{0}</span>", l.as_str())
}

/// The whole page as of `now`.
pub fn render(m: &Metrics, now: OffsetDateTime) -> String {
    let mut certs = m.certificates();
    certs.sort_by_key(|c| c.not_after);
    let mut h = String::new();
    h.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<title>keyward agent status</title><style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body><h1>keyward agent status</h1>");
    let _ = write!(
        h,
        "<p>As of {}. ",
        escape(&date(now.replace_nanosecond(0).unwrap_or(now)))
    );
    match m.readiness() {
        Ok(()) => h.push_str("<span class=\"badge up\" id=\"readiness\">ready</span>"),
        Err(why) => {
            let _ = write!(
                h,
                "<span class=\"badge down\" id=\"readiness\">not ready</span> {}",
                escape(&why)
            );
        }
    }
    h.push_str(
        "</p><h2>Backends</h2><table><tr><th>Backend</th><th>State</th><th>Detail</th></tr>",
    );
    for (name, health) in m.health() {
        let (class, word) = if health.ok {
            ("up", "answering")
        } else {
            ("down", "not answering")
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><span class=\"badge {class}\">{word}</span></td><td>{}</td></tr>",
            escape(&name),
            escape(&health.reason)
        );
    }
    h.push_str("</table>");
    chain(&mut h, &certs);
    table(&mut h, &certs, now);
    timeline(&mut h, &certs, now);
    h.push_str("</body></html>\n");
    h
}

/// The CA chain: roots then intermediates.
fn chain(h: &mut String, certs: &[CertRow]) {
    h.push_str("<h2>CA chain</h2><table id=\"ca-chain\"><tr><th>Role</th><th>Subject</th><th>Issuer</th><th>Serial</th><th>Not after</th></tr>");
    let ca = certs
        .iter()
        .filter(|c| c.role == "root")
        .chain(certs.iter().filter(|c| c.role == "intermediate"));
    for c in ca {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
            c.role,
            escape(&c.subject),
            escape(&c.issuer),
            escape(&c.serial_hex),
            escape(&date(c.not_after))
        );
    }
    h.push_str("</table>");
}

/// Every certificate, soonest expiry first.
fn table(h: &mut String, certs: &[CertRow], now: OffsetDateTime) {
    h.push_str("<h2>Certificates</h2><table id=\"certificates\"><tr><th>Role</th><th>Name</th><th>Subject</th><th>Serial</th><th>Not after</th><th>Days left</th><th>Level</th></tr>");
    for c in certs {
        let _ = write!(
            h,
            "<tr class=\"cert\"><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"{}\" title=\"{}\">{}</td><td>{}</td></tr>",
            c.role,
            escape(&c.name),
            escape(&c.subject),
            escape(&c.serial_hex),
            escape(&date(c.not_after)),
            c.level.as_str(),
            escape(&left(c, now)),
            c.days_left,
            level_span(c.level)
        );
    }
    h.push_str("</table>");
}

/// Upcoming expiries as bars on a logarithmic scale of time left (a one-hour SVID
/// and a ten-year root on one axis), expired ones as a full red bar.
fn timeline(h: &mut String, certs: &[CertRow], now: OffsetDateTime) {
    h.push_str("<h2>Upcoming expiries</h2><div id=\"timeline\">");
    let secs = |c: &CertRow| (c.not_after - now).whole_seconds().max(0) as f64;
    let max = certs.iter().map(secs).fold(60.0_f64, f64::max);
    for c in certs {
        let s = secs(c);
        let pct = if s <= 0.0 {
            100.0
        } else {
            (s.max(1.0).ln() / max.ln() * 100.0).clamp(1.0, 100.0)
        };
        let _ = write!(
            h,
            "<div class=\"tl\"><span class=\"name\" title=\"{0}\">{0}</span><span class=\"track\"><div class=\"bar {1}\" style=\"width:{2:.1}%\"></div></span><span class=\"when\">{3} ({4})</span></div>",
            escape(&c.label()),
            c.level.as_str(),
            pct,
            escape(&date(c.not_after)),
            escape(&left(c, now))
        );
    }
    h.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_string_is_escaped() {
        let m = Metrics::default();
        let now = OffsetDateTime::now_utc();
        m.set_certificates(vec![CertRow {
            role: "issued",
            name: "<script>alert(1)</script>".into(),
            subject: "CN=a&b,O=\"q\"".into(),
            issuer: "CN=x'y".into(),
            serial_hex: "01".into(),
            not_after: now + time::Duration::days(3),
            days_left: 3,
            level: AlertLevel::Error,
        }]);
        let html = render(&m, now);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("CN=a&amp;b,O=&quot;q&quot;"));
        assert!(html.contains("class=\"lvl ERROR\""));
        assert!(
            html.contains("not ready"),
            "the CA is not loaded in this test"
        );
    }
}
