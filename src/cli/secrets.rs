//! Secrets at the binary's edge: passwords and tokens come from the environment or from files,
//! never from flags (a flag shows in `ps`) nor from the config file.

use anyhow::{Context, Result};
use streamagg::config::cluster::{KafkaOptions, KafkaSettings, Secret, SecurityOptions};

/// The cluster settings of every command but `run`, with their secrets, validated.
pub(super) fn kafka_settings(options: &KafkaOptions) -> Result<KafkaSettings> {
    let options = KafkaOptions {
        security: with_secrets(options.security.clone())?,
        ..options.clone()
    };
    Ok(options.validate()?)
}

/// The options with their secrets filled in: each from its environment variable
/// (`STREAMAGG_SASL_PASSWORD`, `STREAMAGG_SSL_KEY_PASSWORD`) if set and not empty, else from its file
/// if one is named (after a config file may have named it).
pub(super) fn with_secrets(mut options: SecurityOptions) -> Result<SecurityOptions> {
    for (secret, variable, file, what) in [
        (
            &mut options.sasl_password,
            "STREAMAGG_SASL_PASSWORD",
            &options.sasl_password_file,
            "sasl_password_file",
        ),
        (
            &mut options.ssl_key_password,
            "STREAMAGG_SSL_KEY_PASSWORD",
            &options.ssl_key_password_file,
            "ssl_key_password_file",
        ),
    ] {
        *secret = match (std::env::var(variable).ok().filter(|p| !p.is_empty()), file) {
            (Some(value), _) => Some(Secret::new(value)),
            (None, Some(path)) => Some(Secret::new(read_secret_file(path, what)?)),
            (None, None) => None,
        };
    }
    Ok(options)
}

/// A secret from a file, without its trailing newline.
pub(super) fn read_secret_file(path: &std::path::Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}
