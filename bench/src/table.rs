//! The figures of one run as one Markdown table: a row per measure, a column per database,
//! and the target beside; docs/PERFORMANCE.md takes it as printed.

pub struct Table {
    columns: Vec<String>,
    rows: Vec<Row>,
}

struct Row {
    label: String,
    target: String,
    cells: Vec<String>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Sets one cell; the row is added (in first-set order) when new.
    pub fn set(&mut self, label: &str, target: &str, column: usize, value: String) {
        let width = self.columns.len();
        let i = match self.rows.iter().position(|r| r.label == label) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    label: label.to_string(),
                    target: target.to_string(),
                    cells: vec![String::new(); width],
                });
                self.rows.len() - 1
            }
        };
        self.rows[i].cells[column] = value;
    }

    /// The same value in every column (a figure that does not depend on the database).
    pub fn set_all(&mut self, label: &str, target: &str, value: String) {
        for c in 0..self.columns.len() {
            self.set(label, target, c, value.clone());
        }
    }

    pub fn render(&self) -> String {
        let mut out = format!("| measure | {} | target |\n|---|", self.columns.join(" | "));
        out.push_str(&"---|".repeat(self.columns.len() + 1));
        out.push('\n');
        for r in &self.rows {
            let cells: Vec<&str> = r
                .cells
                .iter()
                .map(|c| if c.is_empty() { "–" } else { c.as_str() })
                .collect();
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                r.label,
                cells.join(" | "),
                if r.target.is_empty() {
                    "–"
                } else {
                    &r.target
                }
            ));
        }
        out
    }
}

/// `12345.6` → `12,346`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The median of some values (the lower middle one of an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_the_doc() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(median(&[5.0, 1.0, 3.0, 4.0, 2.0]), 3.0);
        assert_eq!(median(&[2.0, 1.0]), 1.0);
    }

    #[test]
    fn rows_in_order_columns_filled() {
        let mut t = Table::new(&["SQLite", "PostgreSQL"]);
        t.set("a", "≥ 1", 1, "x".into());
        t.set_all("b", "", "y".into());
        t.set("a", "≥ 1", 0, "z".into());
        assert_eq!(
            t.render(),
            "| measure | SQLite | PostgreSQL | target |\n|---|---|---|---|\n\
             | a | z | x | ≥ 1 |\n| b | y | y | – |\n"
        );
    }
}
