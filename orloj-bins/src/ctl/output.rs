//! Rendering objects: tables, JSON, YAML, ages.

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use orloj_core::Kind;
use serde_json::Value;

/// `-o` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    #[default]
    Table,
    /// Pretty JSON.
    Json,
    /// YAML.
    #[value(alias = "yml")]
    Yaml,
}

/// Renders a value in the JSON or YAML format (tables are rendered by [`table`]).
pub fn render_value(v: &Value, format: OutputFormat) -> String {
    match format {
        OutputFormat::Yaml => super::manifests::to_yaml(v),
        _ => {
            let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

/// Aligns rows under headers, two spaces between columns (like Go's tabwriter).
pub fn align(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Human age of a `createdAt` timestamp (`45s`, `3m`, `5h`, `2d`); `<unknown>` when unset.
pub fn age(created_at: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(t) = created_at.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else {
        return "<unknown>".into();
    };
    let secs = (now - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn cell_at(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.len().to_string(),
        Some(other) => other.to_string(),
    }
}

/// Kind-specific columns between NAMESPACE and PHASE: (header, JSON pointer).
fn extra_columns(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Agent => &[("MODEL", "/spec/model_ref")],
        Kind::AgentSystem => &[("AGENTS", "/spec/agents")],
        Kind::ModelEndpoint => &[
            ("PROVIDER", "/spec/provider"),
            ("MODEL", "/spec/default_model"),
        ],
        Kind::Tool => &[("TYPE", "/spec/type")],
        Kind::Task => &[
            ("SYSTEM", "/spec/system"),
            ("MODE", "/spec/mode"),
            ("ATTEMPTS", "/status/attempts"),
        ],
        Kind::TaskSchedule => &[("SCHEDULE", "/spec/schedule")],
        Kind::Worker => &[("REGION", "/spec/region")],
        Kind::ToolApproval => &[("TOOL", "/spec/tool")],
        _ => &[],
    }
}

/// A table of objects of one kind: NAME, NAMESPACE, kind-specific columns, PHASE, AGE.
pub fn table(kind: Kind, items: &[Value], now: DateTime<Utc>) -> String {
    let extra = extra_columns(kind);
    let with_phase = kind != Kind::Secret;
    let mut headers = vec!["NAME", "NAMESPACE"];
    headers.extend(extra.iter().map(|(h, _)| *h));
    if with_phase {
        headers.push("PHASE");
    }
    headers.push("AGE");
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|it| {
            let mut row = vec![
                str_at(it, "/metadata/name").to_string(),
                match str_at(it, "/metadata/namespace") {
                    "" => orloj_core::DEFAULT_NAMESPACE.to_string(),
                    ns => ns.to_string(),
                },
            ];
            row.extend(extra.iter().map(|(_, p)| cell_at(it, p)));
            if with_phase {
                row.push(str_at(it, "/status/phase").to_string());
            }
            row.push(age(
                it.pointer("/metadata/createdAt").and_then(Value::as_str),
                now,
            ));
            row
        })
        .collect();
    align(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn ages() {
        assert_eq!(age(Some("2026-01-01T23:59:30Z"), now()), "30s");
        assert_eq!(age(Some("2026-01-01T23:50:00Z"), now()), "10m");
        assert_eq!(age(Some("2026-01-01T19:00:00Z"), now()), "5h");
        assert_eq!(age(Some("2025-12-28T00:00:00Z"), now()), "5d");
        assert_eq!(age(Some("2026-01-03T00:00:00Z"), now()), "0s", "clock skew");
        assert_eq!(age(None, now()), "<unknown>");
        assert_eq!(age(Some("garbage"), now()), "<unknown>");
    }

    #[test]
    fn task_table_has_kind_columns_aligned() {
        let items = vec![
            json!({"metadata": {"name": "t1", "namespace": "default", "createdAt": "2026-01-01T23:59:00Z"},
                   "spec": {"system": "pipeline", "mode": "run"}, "status": {"phase": "Running", "attempts": 1}}),
            json!({"metadata": {"name": "longer-task-name"}, "spec": {"system": "s"}, "status": {}}),
        ];
        let t = table(Kind::Task, &items, now());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0]
                .starts_with("NAME              NAMESPACE  SYSTEM    MODE  ATTEMPTS  PHASE    AGE"),
            "{t}"
        );
        assert!(
            lines[1]
                .starts_with("t1                default    pipeline  run   1         Running  60s"),
            "{t}"
        );
        assert!(lines[2].contains("longer-task-name  default"), "{t}");
        assert!(lines[2].ends_with("<unknown>"), "{t}");
    }

    #[test]
    fn secret_table_has_no_phase() {
        let t = table(Kind::Secret, &[json!({"metadata": {"name": "s"}})], now());
        assert_eq!(t.lines().next(), Some("NAME  NAMESPACE  AGE"));
    }

    #[test]
    fn yml_is_an_alias_of_yaml() {
        assert_eq!(OutputFormat::from_str("yml", true), Ok(OutputFormat::Yaml));
        let y = render_value(&json!({"a": {"b": 1}}), OutputFormat::Yaml);
        assert!(y.contains("a:\n  b: 1"), "{y}");
    }
}
