//! The console: one page served at `/` by `sluice run` (embedded in the binary: no CDN, no
//! separate install) that polls the JSON API, and that API's documents.

mod history;
mod status;

pub use history::History;
pub use status::{StatusDoc, collect};

use arrow::array::RecordBatch;

/// The console page: HTML, CSS and script in one file, drawn from `/api/status`.
pub const PAGE: &str = include_str!("page.html");

/// Why an open-windows query's parameters name no group-by column.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// `key=` for an aggregate with several group-by columns.
    #[error("this aggregate groups by {columns}: filter by column name, e.g. ?{first}=...")]
    KeyAmbiguous {
        /// The group-by columns, comma-separated.
        columns: String,
        /// The first of them.
        first: String,
    },
    /// A parameter that is not a group-by column.
    #[error(
        "{param:?} is not a group-by column of this aggregate; use key=... or one of: {columns}"
    )]
    NotAColumn {
        /// The parameter.
        param: String,
        /// The group-by columns, comma-separated.
        columns: String,
    },
}

/// The `column = value` filters of an open-windows query: `key=v` stands for the one
/// group-by column; other parameters must be group-by columns.
pub fn key_filters(group_by: &[String], query: &str) -> Result<Vec<(String, String)>, FilterError> {
    let mut out = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let column = if k == "key" {
            match group_by {
                [one] => one.clone(),
                _ => {
                    return Err(FilterError::KeyAmbiguous {
                        columns: group_by.join(", "),
                        first: group_by.first().cloned().unwrap_or_default(),
                    });
                }
            }
        } else if group_by.iter().any(|g| *g == k) {
            k.to_string()
        } else {
            return Err(FilterError::NotAColumn {
                param: k.into_owned(),
                columns: group_by.join(", "),
            });
        };
        out.push((column, v.into_owned()));
    }
    Ok(out)
}

/// The JSON answer of an open-windows query: the rows whose group-by columns equal the
/// filters (compared as text), marked provisional.
pub fn open_windows_json(
    table: &str,
    batch: Option<RecordBatch>,
    filters: &[(String, String)],
) -> anyhow::Result<String> {
    let mut rows: Vec<serde_json::Value> = Vec::new();
    if let Some(batch) = batch {
        let mut writer = arrow::json::ArrayWriter::new(Vec::new());
        writer.write(&batch)?;
        writer.finish()?;
        let buf = writer.into_inner();
        if !buf.is_empty() {
            rows = serde_json::from_slice(&buf)?;
        }
    }
    let as_text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    rows.retain(|r| {
        filters
            .iter()
            .all(|(c, want)| r.get(c).is_some_and(|v| as_text(v) == *want))
    });
    Ok(serde_json::json!({
        "table": table,
        "provisional": true,
        "note": "running values of windows that are still open; the row committed to the table when a window closes is the final one",
        "windows": rows,
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_stands_for_the_one_group_by_column() {
        let by = vec!["page".to_string()];
        assert_eq!(
            key_filters(&by, "key=%2Fhome").unwrap(),
            vec![("page".to_string(), "/home".to_string())]
        );
        assert_eq!(key_filters(&by, "").unwrap(), vec![]);
        assert!(
            key_filters(&by, "user=1")
                .unwrap_err()
                .to_string()
                .contains("page")
        );
        let two = vec!["page".to_string(), "user".to_string()];
        assert!(
            key_filters(&two, "key=x")
                .unwrap_err()
                .to_string()
                .contains("page, user")
        );
        assert_eq!(key_filters(&two, "user=7").unwrap().len(), 1);
    }
}
