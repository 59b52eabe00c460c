//! Statistics over samples, the stdout table (figure, value, floor, difference) and the JSON document.

use serde_json::{json, Map, Value};

/// Summary of latency samples, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `samples` (ms); `None` when empty.
    pub(crate) fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = (q * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        Some(Summary {
            n: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }

    pub(crate) fn to_json(self) -> Value {
        json!({ "n": self.n, "mean_ms": self.mean, "p50_ms": self.p50, "p95_ms": self.p95, "p99_ms": self.p99,
                "min_ms": self.min, "max_ms": self.max })
    }
}

/// JSON of an optional summary (`null` when there were no samples).
pub(crate) fn summary_json(samples: &[f64]) -> Value {
    Summary::of(samples).map_or(Value::Null, Summary::to_json)
}

struct Row {
    section: String,
    figure: String,
    value: String,
    floor: String,
    diff: String,
}

/// Everything measured in this run: the table rows and the JSON document.
pub(crate) struct Report {
    rows: Vec<Row>,
    pub(crate) json: Map<String, Value>,
}

impl Report {
    pub(crate) fn new() -> Report {
        Report { rows: Vec::new(), json: Map::new() }
    }

    /// Sets `json[section][key] = value`.
    pub(crate) fn put(&mut self, section: &str, key: &str, value: Value) {
        let entry = self.json.entry(section.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(map) = entry {
            map.insert(key.to_owned(), value);
        }
    }

    fn row(&mut self, section: &str, figure: &str, value: String, floor: String, diff: String) {
        let row = Row { section: section.to_owned(), figure: figure.to_owned(), value, floor, diff };
        self.rows.push(row);
    }

    /// A latency row: value and floor in ms, difference `value − floor` and ratio.
    pub(crate) fn ms(&mut self, section: &str, figure: &str, value: f64, floor: Option<f64>) {
        let (floor_text, diff) = match floor {
            Some(f) => (format!("{f:.2} ms"), format!("{:+.2} ms (x{:.2})", value - f, value / f)),
            None => ("-".into(), "-".into()),
        };
        self.row(section, figure, format!("{value:.2} ms"), floor_text, diff);
    }

    /// A rate or size row: ratio value/floor.
    pub(crate) fn ratio(&mut self, section: &str, figure: &str, value: f64, floor: Option<f64>, unit: &str) {
        let (floor_text, diff) = match floor {
            Some(f) => (format!("{f:.1} {unit}"), format!("x{:.2}", value / f)),
            None => ("-".into(), "-".into()),
        };
        self.row(section, figure, format!("{value:.1} {unit}"), floor_text, diff);
    }

    /// A free-form row.
    pub(crate) fn text(&mut self, section: &str, figure: &str, value: String, floor: &str) {
        self.row(section, figure, value, floor.to_owned(), "-".into());
    }

    /// A figure that was not measured, and why (also recorded in the JSON under `skipped`).
    pub(crate) fn skipped(&mut self, section: &str, figure: &str, reason: &str) {
        self.row(section, figure, format!("SKIPPED: {reason}"), "-".into(), "-".into());
        let entry = self.json.entry("skipped".to_owned()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!({ "section": section, "figure": figure, "reason": reason }));
        }
    }

    /// The table, one row per figure, grouped by section.
    pub(crate) fn table(&self) -> String {
        let headers = ["section", "figure", "value", "floor", "difference"];
        let cells: Vec<[&str; 5]> = self
            .rows
            .iter()
            .map(|r| [r.section.as_str(), r.figure.as_str(), r.value.as_str(), r.floor.as_str(), r.diff.as_str()])
            .collect();
        let mut widths = headers.map(str::len);
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let parts: Vec<String> =
                cells.iter().zip(widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
            format!("| {} |\n", parts.join(" | "))
        };
        let mut out = line(headers);
        out.push_str(&format!("|{}|\n", widths.map(|w| "-".repeat(w + 2)).join("|")));
        for row in cells {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!((s.p50, s.p95, s.p99, s.min, s.max), (50.0, 95.0, 99.0, 1.0, 100.0));
        assert!(Summary::of(&[]).is_none());
    }
}
