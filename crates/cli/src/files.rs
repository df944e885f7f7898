//! Reading flag files (JSON or YAML) into the engine's model, with errors that name the file,
//! the field path and the reason.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use dimmer_engine::FlagSet;
use serde::de::DeserializeOwned;

/// The file formats flag files come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// Guesses the format from the extension, then from the first non-blank character.
    pub fn detect(path: &Path, text: &str) -> Format {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ if text.trim_start().starts_with(['{', '[']) => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Reads a file, or standard input for `-`.
pub fn read_text(path: &Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Parses text as `T`, naming the field path of the first structural error.
pub fn parse<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, String> {
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| describe(e.path().to_string(), e.inner().to_string()))
        }
        Format::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| describe(e.path().to_string(), e.inner().to_string()))
        }
    }
}

fn describe(path: String, message: String) -> String {
    if path.is_empty() || path == "." {
        return message;
    }
    // YAML errors already start with the path; do not say it twice.
    let message = message.strip_prefix(&format!("{path}: ")).map(str::to_owned).unwrap_or(message);
    format!("{path}: {message}")
}

/// Loads a flags file.
pub fn load_flag_set(path: &Path) -> Result<FlagSet> {
    let text = read_text(path)?;
    match parse::<FlagSet>(&text, Format::detect(path, &text)) {
        Ok(set) => Ok(set),
        Err(message) => bail!("{}: {message}", path.display()),
    }
}
