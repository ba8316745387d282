//! A billing export (CSV) to reconcile the allocation against: a header
//! naming at least `category` and `cost`; other columns (`date`, `service`,
//! `description`) are kept for the report. Categories the analysis prices:
//! `compute`, `storage`, `object-storage`, `monitoring`; any other is billed
//! but not allocated, so it shows as unexplained.

use std::collections::BTreeMap;

use crate::Error;

/// The categories the analysis allocates.
pub const CATEGORIES: [&str; 4] = ["compute", "storage", "object-storage", "monitoring"];

/// A bill: totals per category.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bill {
    /// Cost per category.
    pub by_category: BTreeMap<String, f64>,
    /// Rows read.
    pub rows: usize,
}

impl Bill {
    /// The bill's total.
    pub fn total(&self) -> f64 {
        self.by_category.values().sum()
    }

    /// Parses the CSV text; errors name the file, line and field.
    pub fn parse(text: &str, source: &str) -> Result<Bill, Error> {
        let mut reader =
            csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| Error::Usage(format!("{source}:1: cannot read the header: {e}")))?
            .clone();
        let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let (Some(category), Some(cost)) =
            (column("category"), column("cost").or_else(|| column("amount")))
        else {
            return Err(Error::Usage(format!(
                "{source}:1: the header must name `category` and `cost` (found: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            )));
        };
        let mut bill = Bill::default();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                Error::Usage(format!("{source}:{line}: {e}"))
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let name = record.get(category).unwrap_or_default().to_ascii_lowercase();
            if name.is_empty() {
                return Err(Error::Usage(format!("{source}:{line}: field `category` is empty")));
            }
            let text = record.get(cost).unwrap_or_default();
            let value: f64 =
                text.trim_start_matches('$').replace(',', "").parse().map_err(|_| {
                    Error::Usage(format!(
                        "{source}:{line}: field `{}`: {text:?} is not a number",
                        &headers[cost]
                    ))
                })?;
            if !value.is_finite() {
                return Err(Error::Usage(format!(
                    "{source}:{line}: field `{}`: {text:?} is not finite",
                    &headers[cost]
                )));
            }
            *bill.by_category.entry(name).or_default() += value;
            bill.rows += 1;
        }
        if bill.rows == 0 {
            return Err(Error::Usage(format!("{source}: no rows after the header")));
        }
        Ok(bill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bills_total_by_category_and_errors_name_line_and_field() {
        let b = Bill::parse("date,category,service,cost\n2026-11,compute,EC2,100.5\n2026-11,Compute,EC2,\"1,000\"\n2026-11,network,NAT,7\n", "b.csv")
            .unwrap_or_default();
        assert_eq!(b.by_category.get("compute"), Some(&1100.5));
        assert_eq!(b.total(), 1107.5);
        let e = Bill::parse("category,cost\ncompute,12\nstorage,lots\n", "b.csv")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(e, "b.csv:3: field `cost`: \"lots\" is not a number");
        let e = Bill::parse("service,price\nx,1\n", "b.csv")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("must name `category` and `cost`"), "{e}");
        let e = Bill::parse("category,cost\ncompute,1,extra\n", "b.csv")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("b.csv:2:"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn no_text_panics(text in "\\PC{0,200}") {
            let _ = Bill::parse(&text, "fuzz");
        }
    }
}
