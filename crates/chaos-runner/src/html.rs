//! `--html FILE`: one self-contained page with the verdict table and, per
//! experiment, an SVG timeline: the faults as bars from apply to undo, every
//! probe look as a dot (green held, red broke), alerts and aborts as marks.

use std::fmt::Write;

use shared_types::Report;

use crate::runner::{Mark, Record};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page for `report` (whose `data.experiments` holds the records).
pub fn render(report: &Report) -> String {
    let records: Vec<Record> = report
        .data
        .get("experiments")
        .and_then(|v| serde_json::from_value::<Vec<RecordView>>(v.clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .map(RecordView::into_record)
        .collect();
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>chaos-runner: {}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}}\
         .pass{{color:#1a7f37}}.fail{{color:#cf222e}}.other{{color:#9a6700}}</style></head><body>\
         <h1>chaos-runner</h1><p>{} · verdict <b>{}</b> · exit {}</p>",
        escape(&report.target),
        escape(&report.target),
        report.verdict().label(),
        report.exit_code().code()
    );
    page.push_str("<table><tr><th>check</th><th>verdict</th><th>criterion</th><th>observed</th><th>detail</th></tr>");
    for c in &report.checks {
        let class = match c.verdict {
            shared_types::Verdict::Pass => "pass",
            shared_types::Verdict::Fail => "fail",
            _ => "other",
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.id),
            c.verdict.label(),
            escape(&c.criterion),
            escape(c.observed.as_deref().unwrap_or("")),
            escape(c.detail.as_deref().unwrap_or(""))
        );
    }
    page.push_str("</table>");
    for r in &records {
        let _ = write!(
            page,
            "<h2>{}</h2><p>{}</p>",
            escape(&r.id),
            escape(r.title.as_deref().unwrap_or(""))
        );
        page.push_str(&timeline(&r.timeline));
    }
    page.push_str("</body></html>\n");
    page
}

/// The SVG timeline of one experiment.
pub fn timeline(marks: &[Mark]) -> String {
    let end = marks.iter().map(|m| m.at_ms).max().unwrap_or(1).max(1) as f64;
    let (width, left) = (900.0, 160.0);
    let x = |ms: u64| left + (ms as f64 / end) * (width - left - 10.0);
    // One lane per fault, per probe, then alerts/queue/aborts.
    let mut lanes: Vec<(String, &'static str)> = Vec::new();
    for m in marks {
        let lane = match m.kind {
            "fault" | "undo" => ("fault", m.name.clone()),
            "probe" => ("probe", m.name.clone()),
            "phase" => continue,
            other => (other_lane(other), m.name.clone()),
        };
        if !lanes.iter().any(|(n, k)| *n == lane.1 && *k == lane.0) {
            lanes.push((lane.1, lane.0));
        }
    }
    let height = 30.0 + 22.0 * lanes.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-size=\"11\">"
    );
    let lane_y = |kind: &str, name: &str| -> f64 {
        let i = lanes.iter().position(|(n, k)| n == name && *k == kind).unwrap_or(0);
        20.0 + 22.0 * i as f64
    };
    for (name, kind) in &lanes {
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{}\">{} {}</text>",
            lane_y(kind, name) + 4.0,
            kind,
            escape(name)
        );
    }
    for m in marks.iter().filter(|m| m.kind == "phase") {
        let _ = write!(
            svg,
            "<line x1=\"{0}\" x2=\"{0}\" y1=\"8\" y2=\"{1}\" stroke=\"#888\" stroke-dasharray=\"3,3\"/><text x=\"{0}\" y=\"8\" fill=\"#888\">{2}</text>",
            x(m.at_ms),
            height - 4.0,
            escape(&m.name)
        );
    }
    // Faults: a bar from apply to undo (or to the end).
    for m in marks.iter().filter(|m| m.kind == "fault") {
        let undone =
            marks.iter().find(|u| u.kind == "undo" && u.name == m.name && u.at_ms >= m.at_ms);
        let to = undone.map_or(end as u64, |u| u.at_ms);
        let y = lane_y("fault", &m.name);
        let colour = if m.ok == Some(true) { "#d4a72c" } else { "#cf222e" };
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"10\" fill=\"{colour}\"><title>{}</title></rect>",
            x(m.at_ms),
            y - 5.0,
            (x(to) - x(m.at_ms)).max(2.0),
            escape(&m.detail)
        );
    }
    for m in marks.iter().filter(|m| m.kind != "fault" && m.kind != "phase" && m.kind != "undo") {
        let kind = if m.kind == "probe" { "probe" } else { other_lane(m.kind) };
        let colour = match m.ok {
            Some(true) => "#1a7f37",
            Some(false) => "#cf222e",
            None => "#0969da",
        };
        let _ = write!(
            svg,
            "<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{colour}\"><title>{} ms: {}</title></circle>",
            x(m.at_ms),
            lane_y(kind, &m.name),
            m.at_ms,
            escape(&m.detail)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn other_lane(kind: &str) -> &'static str {
    match kind {
        "alert" => "alert",
        "queue" => "queue",
        "abort" => "abort",
        _ => "event",
    }
}

/// A record as read back from the JSON report.
#[derive(Debug, serde::Deserialize)]
struct RecordView {
    id: String,
    title: Option<String>,
    timeline: Vec<MarkView>,
}

#[derive(Debug, serde::Deserialize)]
struct MarkView {
    at_ms: u64,
    kind: String,
    name: String,
    ok: Option<bool>,
    #[serde(default)]
    detail: String,
}

impl RecordView {
    fn into_record(self) -> Record {
        Record {
            id: self.id,
            title: self.title,
            timeline: self
                .timeline
                .into_iter()
                .map(|m| Mark {
                    at_ms: m.at_ms,
                    kind: kind_of(&m.kind),
                    name: m.name,
                    ok: m.ok,
                    detail: m.detail,
                })
                .collect(),
            faults: Vec::new(),
            aborted: None,
            requests: 0,
            user_errors: 0,
        }
    }
}

fn kind_of(kind: &str) -> &'static str {
    match kind {
        "phase" => "phase",
        "fault" => "fault",
        "undo" => "undo",
        "probe" => "probe",
        "alert" => "alert",
        "abort" => "abort",
        "queue" => "queue",
        _ => "event",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_draws_faults_probes_and_alerts() {
        let mark = |at_ms, kind, name: &str, ok| Mark {
            at_ms,
            kind,
            name: name.to_owned(),
            ok,
            detail: "<x>".to_owned(),
        };
        let marks = vec![
            mark(0, "probe", "gw", Some(true)),
            mark(100, "phase", "faults", None),
            mark(100, "fault", "row/stop", Some(true)),
            mark(1100, "probe", "gw", Some(false)),
            mark(1500, "alert", "FastBurn", Some(true)),
            mark(5100, "undo", "row/stop", Some(true)),
            mark(6100, "probe", "gw", Some(true)),
        ];
        let svg = timeline(&marks);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 1, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
        assert!(svg.contains("#cf222e") && svg.contains("&lt;x&gt;"), "{svg}");
        assert!(!svg.contains("<x>"));
    }
}
