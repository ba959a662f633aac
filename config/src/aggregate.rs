//! Aggregate expressions as written in `aggregates = ["count(*) AS views", ...]`.

use std::fmt;

use crate::ValueError;

/// An aggregate function over one column (or `*` for `count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateFunction {
    /// Number of rows (`count(*)`) or of non-null values (`count(col)`).
    Count,
    /// Sum of non-null values.
    Sum,
    /// Smallest non-null value.
    Min,
    /// Largest non-null value.
    Max,
    /// Mean of non-null values.
    Avg,
    /// Number of distinct non-null values.
    CountDistinct,
}

impl AggregateFunction {
    /// The function's name as written in config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Avg => "avg",
            Self::CountDistinct => "count_distinct",
        }
    }
}

/// One parsed aggregate: function, input column (`None` for `count(*)`) and output name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateSpec {
    /// The function.
    pub function: AggregateFunction,
    /// The input column; `None` means `*`.
    pub column: Option<String>,
    /// The output column name.
    pub alias: String,
}

impl AggregateSpec {
    /// The column that holds this `avg`'s weight (its count of non-null inputs) in rows of
    /// per-partition windows, so that rows of several partitions can be merged.
    pub fn weight_column(&self) -> String {
        format!("_n_{}", self.alias)
    }

    /// Parses `func(column) [AS alias]`.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let bad = |why: &str| ValueError::new(format!("invalid aggregate {text:?}: {why}"));
        let t = text.trim();
        let open = t
            .find('(')
            .ok_or_else(|| bad("expected func(column) [AS name]"))?;
        let close = t
            .rfind(')')
            .filter(|&c| c > open)
            .ok_or_else(|| bad("missing ')'"))?;
        let fname = t[..open].trim().to_ascii_lowercase();
        let function = match fname.as_str() {
            "count" => AggregateFunction::Count,
            "sum" => AggregateFunction::Sum,
            "min" => AggregateFunction::Min,
            "max" => AggregateFunction::Max,
            "avg" | "mean" => AggregateFunction::Avg,
            "count_distinct" => AggregateFunction::CountDistinct,
            other => {
                return Err(bad(&format!(
                    "unknown function {other:?}; use count, sum, min, max, avg or count_distinct"
                )));
            }
        };
        let arg = t[open + 1..close].trim();
        let column = match arg {
            "*" if function == AggregateFunction::Count => None,
            "*" => return Err(bad("only count takes *")),
            "" => return Err(bad("missing column")),
            c if c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') => Some(c.to_string()),
            c => {
                return Err(bad(&format!("{c:?} is not a column name")));
            }
        };
        let rest = t[close + 1..].trim();
        let alias = if rest.is_empty() {
            match &column {
                Some(c) => format!("{}_{c}", function.name()),
                None => "count".to_string(),
            }
        } else {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(kw), Some(name), None) if kw.eq_ignore_ascii_case("as") => name.to_string(),
                _ => {
                    return Err(bad("expected `AS name` after the call"));
                }
            }
        };
        Ok(Self {
            function,
            column,
            alias,
        })
    }
}

impl fmt::Display for AggregateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let col = self.column.as_deref().unwrap_or("*");
        write!(f, "{}({col}) AS {}", self.function.name(), self.alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_aggregates() {
        let a = AggregateSpec::parse("count(*) AS views").unwrap();
        assert_eq!(
            (a.function, a.column, a.alias.as_str()),
            (AggregateFunction::Count, None, "views")
        );
        let b = AggregateSpec::parse("SUM(amount)").unwrap();
        assert_eq!(b.alias, "sum_amount");
        assert!(
            AggregateSpec::parse("median(x)")
                .unwrap_err()
                .to_string()
                .contains("unknown function")
        );
        assert!(AggregateSpec::parse("sum(*)").is_err());
        assert!(AggregateSpec::parse("sum(x) revenue").is_err());
    }
}
