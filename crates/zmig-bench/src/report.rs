//! What a benchmark run produced: every figure (medians over the rounds, and each round's own),
//! the table a person reads, and the JSON object a script reads.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

/// Named figures in the order they were recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures(pub Vec<(String, f64)>);

impl Figures {
    pub fn set(&mut self, key: &str, value: f64) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The figure `key`; a benchmark asks only for figures it recorded itself.
    pub fn at(&self, key: &str) -> f64 {
        self.get(key)
            .unwrap_or_else(|| panic!("figure `{key}` was not recorded"))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// Per key, the median of the rounds that recorded it, in the first round's order.
    pub fn medians(rounds: &[Figures]) -> Figures {
        let mut out = Figures::default();
        for round in rounds {
            for key in round.keys() {
                if out.get(key).is_some() {
                    continue;
                }
                let values: Vec<f64> = rounds.iter().filter_map(|r| r.get(key)).collect();
                out.set(key, median(&values));
            }
        }
        out
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (key, value) in &self.0 {
            map.insert(key.clone(), number(*value));
        }
        Value::Object(map)
    }
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `q` quantile (0..=1) of `sorted`, nearest rank; NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How a line of the table shows its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
    PerSecond,
    Count,
    /// Bytes, shown in MiB.
    Bytes,
    /// A plain ratio of two figures of the same unit.
    Ratio,
}

/// One line of the table: a measure, the baseline's figure beside zmig's, and the ratio that
/// compares them (named by its JSON key), or the JSON key of zmig's figure when that figure is
/// what counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub measure: String,
    pub unit: Unit,
    pub baseline: Option<f64>,
    pub zmig: Option<f64>,
    pub ratio: Option<(String, f64)>,
    pub key: Option<String>,
}

impl Line {
    pub fn new(measure: &str, unit: Unit) -> Line {
        Line {
            measure: measure.to_owned(),
            unit,
            baseline: None,
            zmig: None,
            ratio: None,
            key: None,
        }
    }

    pub fn baseline(mut self, value: f64) -> Line {
        self.baseline = Some(value);
        self
    }

    pub fn zmig(mut self, value: f64) -> Line {
        self.zmig = Some(value);
        self
    }

    pub fn ratio(mut self, key: &str, value: f64) -> Line {
        self.ratio = Some((key.to_owned(), value));
        self
    }

    /// Names the figure in the zmig column that counts, where no ratio does.
    pub fn key(mut self, key: &str) -> Line {
        self.key = Some(key.to_owned());
        self
    }
}

/// A finished benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The benchmark's name on the command line.
    pub benchmark: String,
    /// What ran, in a line: sizes and rounds.
    pub setup: String,
    /// The parameters it ran with, as given or defaulted.
    pub parameters: Figures,
    /// Where it ran: server version, CPUs, build profile.
    pub environment: Vec<(String, String)>,
    /// Medians over the rounds of every figure; ratios are the medians of each round's ratio.
    pub figures: Figures,
    /// Each round's own figures.
    pub rounds: Vec<Figures>,
    pub lines: Vec<Line>,
    /// What the reader should know to read the table.
    pub notes: Vec<String>,
}

impl Report {
    /// The table a person reads.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}: {}", self.benchmark, self.setup);
        let environment: Vec<String> = self
            .environment
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "({})", environment.join(", "));
        let _ = writeln!(out);
        let rows: Vec<[String; 5]> = self
            .lines
            .iter()
            .map(|line| {
                [
                    format!("{}{}", line.measure, unit_suffix(line.unit)),
                    line.baseline
                        .map(|v| format_value(v, line.unit))
                        .unwrap_or_default(),
                    line.zmig
                        .map(|v| format_value(v, line.unit))
                        .unwrap_or_default(),
                    line.ratio
                        .as_ref()
                        .map(|(_, v)| format!("{v:.3}"))
                        .unwrap_or_default(),
                    line.ratio
                        .as_ref()
                        .map(|(k, _)| k.clone())
                        .or_else(|| line.key.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        let header = [
            "measure".to_owned(),
            "baseline".to_owned(),
            "zmig".to_owned(),
            "ratio".to_owned(),
            String::new(),
        ];
        let mut widths = [0usize; 5];
        for row in std::iter::once(&header).chain(&rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line = format!(
                "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out);
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// The JSON object a script reads: every figure, the parameters and each round.
    pub fn json(&self) -> Value {
        let environment: Map<String, Value> = self
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "benchmark": self.benchmark,
            "setup": self.setup,
            "parameters": self.parameters.to_json(),
            "environment": environment,
            "figures": self.figures.to_json(),
            "rounds": self.rounds.iter().map(Figures::to_json).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// JSON has no NaN or infinity: those become `null`.
fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn unit_suffix(unit: Unit) -> &'static str {
    match unit {
        Unit::Seconds => " (s)",
        Unit::Millis => " (ms)",
        Unit::PerSecond => " (/s)",
        Unit::Count => "",
        Unit::Bytes => " (MiB)",
        Unit::Ratio => " (×)",
    }
}

fn format_value(value: f64, unit: Unit) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    match unit {
        Unit::Seconds => format!("{value:.2}"),
        Unit::Millis => {
            if value < 10.0 {
                format!("{value:.2}")
            } else {
                format!("{value:.1}")
            }
        }
        Unit::PerSecond | Unit::Count => thousands(value.round() as i64),
        Unit::Bytes => format!("{:.1}", value / (1024.0 * 1024.0)),
        Unit::Ratio => format!("{value:.2}"),
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.99), 99.0);
        assert_eq!(quantile(&sorted, 0.5), 50.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn medians_per_key_in_first_seen_order() {
        let mut a = Figures::default();
        a.set("x", 1.0);
        a.set("y", 10.0);
        let mut b = Figures::default();
        b.set("x", 3.0);
        b.set("y", 30.0);
        b.set("z", 5.0);
        let m = Figures::medians(&[a, b]);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["x", "y", "z"]);
        assert_eq!(m.at("x"), 2.0);
        assert_eq!(m.at("z"), 5.0);
    }

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }
}
