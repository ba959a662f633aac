//! The configuration file: any text is a config or a list of problems, never a panic, and a
//! refused config names at least one problem.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = vec![("SLUICE_FUZZ_SECRET".to_string(), "s3cr3t".to_string())];
    if let Err(e) = Config::from_toml_with_env(text, std::path::Path::new("fuzz.toml"), env) {
        assert!(!e.to_string().is_empty(), "a refusal without a reason");
    }
});
