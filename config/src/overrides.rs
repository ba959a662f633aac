//! The TOML tree before it is read: `SLUICE__SECTION__KEY` overrides laid over it, and a
//! value that does not parse taken out of it (so that the next one is found too).

use crate::ValueError;

/// Removes the value at `at` from `tree`; false when there is none (a missing key).
pub(crate) fn remove_value(tree: &mut toml::Table, at: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = at.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let node = &mut *tree;
    let mut item: Option<&mut toml::Value> = None;
    for seg in parents {
        let next = match (item.take(), seg) {
            (None, Segment::Map { key }) => node.get_mut(key),
            (Some(toml::Value::Table(t)), Segment::Map { key }) => t.get_mut(key),
            (Some(toml::Value::Array(a)), Segment::Seq { index }) => a.get_mut(*index),
            _ => None,
        };
        match next {
            Some(v) => item = Some(v),
            None => return false,
        }
    }
    match (item, last) {
        (None, Segment::Map { key }) => node.remove(key).is_some(),
        (Some(toml::Value::Table(t)), Segment::Map { key }) => t.remove(key).is_some(),
        (Some(toml::Value::Array(a)), Segment::Seq { index }) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

pub(crate) fn bracket_indices(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.') {
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

pub(crate) fn apply_override(
    tree: &mut toml::Table,
    path: &str,
    value: &str,
) -> Result<(), ValueError> {
    let parts: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ValueError::new(
            "empty path segment; write SLUICE__SECTION__KEY",
        ));
    }
    // librdkafka option names use dots: SLUICE__KAFKA__OPTIONS__SASL_PASSWORD -> sasl.password.
    let parts: Vec<String> = if parts.len() == 3 && parts[0] == "kafka" && parts[1] == "options" {
        vec![
            parts[0].clone(),
            parts[1].clone(),
            parts[2].replace('_', "."),
        ]
    } else {
        parts
    };
    let parsed: toml::Value = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let is_options = parts.len() == 3 && parts[1] == "options";
    let parsed = if is_options {
        toml::Value::String(value.to_string())
    } else {
        parsed
    };
    set_path(tree, &parts, parsed)
}

fn set_path(
    table: &mut toml::Table,
    parts: &[String],
    value: toml::Value,
) -> Result<(), ValueError> {
    let (head, rest) = parts
        .split_first()
        .ok_or_else(|| ValueError::new("empty path"))?;
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(head.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => set_path(t, rest, value),
        toml::Value::Array(items) => {
            let (idx, rest2) = rest
                .split_first()
                .ok_or_else(|| ValueError::new("missing index"))?;
            let i: usize = idx.parse().map_err(|_| {
                ValueError::new(format!(
                    "{head} is a list; the next segment must be an index, got {idx:?}"
                ))
            })?;
            let item = items
                .get_mut(i)
                .ok_or_else(|| ValueError::new(format!("{head} has no entry {i}")))?;
            match item {
                toml::Value::Table(t) if !rest2.is_empty() => set_path(t, rest2, value),
                _ => Err(ValueError::new(format!("cannot set {head}[{i}] here"))),
            }
        }
        _ => Err(ValueError::new(format!("{head} is not a table"))),
    }
}
