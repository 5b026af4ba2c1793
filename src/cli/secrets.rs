//! Secrets at the binary's edge: passwords and tokens come from the environment or from files,
//! never from flags (a flag shows in `ps`) nor from the config file.

use anyhow::{Context, Result};
use streamagg::config::cluster::{KafkaOptions, KafkaSettings, Secret, SecurityOptions};
use streamagg::config::passthrough;
use streamagg::config::registry::RegistryOptions;

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

/// The registry options with the basic-auth password filled in: from
/// `STREAMAGG_SCHEMA_REGISTRY_PASSWORD` if set and not empty, else from its file if one is named.
pub(super) fn with_registry_secret(mut options: RegistryOptions) -> Result<RegistryOptions> {
    options.schema_registry_password = match (
        std::env::var("STREAMAGG_SCHEMA_REGISTRY_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
        &options.schema_registry_password_file,
    ) {
        (Some(value), _) => Some(Secret::new(value)),
        (None, Some(path)) => Some(Secret::new(read_secret_file(
            path,
            "schema_registry_password_file",
        )?)),
        (None, None) => None,
    };
    Ok(options)
}

/// A secret from a file, without its trailing newline. A file every user of the host may read is
/// used, with a warning (as ssh warns about a private key): refusing it would break the default
/// mode of a mounted Kubernetes Secret.
pub(super) fn read_secret_file(path: &std::path::Path, what: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:03o}"),
                "{what} is readable by every user of this host: chmod 600 it (in Kubernetes, mount \
                 the Secret with defaultMode 0400)"
            );
        }
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// Warns, loudly and once per property, about pass-through properties that switch off TLS
/// verification (only accepted with `allow_insecure_tls`).
pub(super) fn warn_insecure_tls<'a>(
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    for (key, value) in properties {
        if passthrough::disables_tls_verification(key, value) {
            tracing::warn!(
                property = %key,
                "TLS VERIFICATION IS OFF (allow_insecure_tls): anyone between this process and the \
                 brokers can read and change the traffic; never use this outside a test cluster"
            );
        }
    }
}
