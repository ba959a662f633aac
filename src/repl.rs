//! `sluice query` without a statement: an interactive prompt with history, or, when standard
//! input is not a terminal, the statements read from it. Statements end with `;`.

use std::io::{BufRead as _, IsTerminal as _};

use sluice_query::QuerySession;

/// What the prompt understands besides SQL.
const HELP: &str = "\
Statements end with ';' and may span lines. Besides SQL:
  \\d or .tables   list the tables (topic tables are kafka.<topic>)
  \\q or .quit     leave (Ctrl-D too)";

/// Runs statements until the input ends. Returns how many failed.
pub async fn run(session: &QuerySession, format: &str) -> anyhow::Result<usize> {
    if !std::io::stdin().is_terminal() {
        let mut failed = 0;
        let mut buf = String::new();
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if let Some(stmt) = push_line(&mut buf, &line) {
                failed += usize::from(!execute(session, &stmt, format).await);
            }
        }
        if !buf.trim().is_empty() {
            let stmt = std::mem::take(&mut buf);
            failed += usize::from(!execute(session, &stmt, format).await);
        }
        return Ok(failed);
    }
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "sluice query: {} table(s). Type \\d to list them, \\q to leave, \\h for help.",
        session.known_names().len()
    );
    let mut buf = String::new();
    let mut failed = 0;
    loop {
        let prompt = if buf.is_empty() {
            "sluice> "
        } else {
            "   ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let t = line.trim();
                if buf.is_empty() {
                    match t {
                        "\\q" | ".quit" | "quit" | "exit" => break,
                        "\\d" | ".tables" => {
                            for n in session.known_names() {
                                println!("{n}");
                            }
                            continue;
                        }
                        "\\h" | "help" | "\\?" => {
                            println!("{HELP}");
                            continue;
                        }
                        "" => continue,
                        _ => {}
                    }
                }
                if let Some(stmt) = push_line(&mut buf, &line) {
                    let _ = editor.add_history_entry(stmt.trim());
                    failed += usize::from(!execute(session, &stmt, format).await);
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => buf.clear(),
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    Ok(failed)
}

/// Adds a line to the statement being typed; returns the statement once it ends with `;`.
fn push_line(buf: &mut String, line: &str) -> Option<String> {
    if buf.is_empty() && line.trim().is_empty() {
        return None;
    }
    buf.push_str(line);
    buf.push('\n');
    if line.trim_end().ends_with(';') {
        let stmt = std::mem::take(buf);
        let stmt = stmt.trim().trim_end_matches(';').to_string();
        return (!stmt.trim().is_empty()).then_some(stmt);
    }
    None
}

async fn execute(session: &QuerySession, sql: &str, format: &str) -> bool {
    let started = std::time::Instant::now();
    match session.sql(sql).await {
        Ok(batches) => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if let Err(e) = crate::cmd::query::write_output(&batches, format, None) {
                eprintln!("error: {e:#}");
                return false;
            }
            eprintln!("({rows} row(s) in {:.3}s)", started.elapsed().as_secs_f64());
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

fn history_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_HISTORY") {
        return Some(p.into());
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state"))
        })?;
    Some(base.join("sluice/history"))
}

#[cfg(test)]
mod tests {
    use super::push_line;

    #[test]
    fn statements_end_at_a_semicolon_and_may_span_lines() {
        let mut buf = String::new();
        assert_eq!(push_line(&mut buf, "SELECT 1"), None);
        assert_eq!(
            push_line(&mut buf, "  + 1;").as_deref(),
            Some("SELECT 1\n  + 1")
        );
        assert!(buf.is_empty());
        assert_eq!(push_line(&mut buf, ";"), None);
        assert_eq!(push_line(&mut buf, "   "), None);
    }
}
