//! Loads, overrides and validates `protoforge.yaml`.
//!
//! Invariants:
//! - every key has a default, so an empty (or missing) file is a valid config;
//! - unknown keys are an error that names the key, its `file:line:column` and
//!   the closest known key;
//! - `PROTOFORGE_*` environment variables override the file, with `__`
//!   between nested keys (`PROTOFORGE_BUILDER__MAX_ATTEMPTS=5`); an unknown
//!   variable is an error too, so a typo never silently does nothing;
//! - the result is validated once, here, so nothing fails on config mid-job.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the config file at the top of a site repo.
pub const FILE_NAME: &str = "protoforge.yaml";

/// Environment variables with the `PROTOFORGE_` prefix that are not config
/// overrides.
const NON_CONFIG_VARS: &[&str] =
    &["PROTOFORGE_CONFIG", "PROTOFORGE_LOG", "PROTOFORGE_REPO", SECRET_VAR, ADMIN_TOKEN_VAR];

/// The webhook's HMAC secret: from the environment only, never a file
/// that could be committed.
pub const SECRET_VAR: &str = "PROTOFORGE_WEBHOOK_SECRET";
/// The bearer token of the webhook's admin routes; environment only.
pub const ADMIN_TOKEN_VAR: &str = "PROTOFORGE_ADMIN_TOKEN";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Branch that holds `sites/<projectId>/` and the failure records.
    pub branch: String,
    /// Sites are served at `<projectId>.<base_domain>`.
    pub base_domain: String,
    /// Days from publication until a prototype expires.
    pub expiry_days: u32,
    /// Mixed into every project id so that ids can't be predicted from a
    /// client-chosen submission id.
    pub project_id_salt: String,
    /// Directories, relative to the repo root.
    pub inbox_dir: PathBuf,
    pub layouts_dir: PathBuf,
    pub prompts_dir: PathBuf,
    pub author: Identity,
    pub committer: Identity,
    pub builder: BuilderConfig,
    pub limits: Limits,
    pub generator: GeneratorConfig,
    pub finalize: FinalizeConfig,
    pub llm: LlmConfig,
    pub serve: ServeConfig,
    pub prune: PruneConfig,
    pub webhook: WebhookConfig,
    pub push: PushConfig,
}

/// `build --once --push` and `prune --push`: how long to keep trying when other builders
/// push to the same remote at the same time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Pushes after a first one that lost the race, each after a fetch and a replay.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one, with jitter.
    pub backoff_ms: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig { retries: 5, backoff_ms: 200 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Run the webhook in `protoforge serve`.
    pub enabled: bool,
    /// Its own address, apart from the static server's.
    pub listen: String,
    /// Where a browser form (`Accept: text/html`) is sent after posting,
    /// with `?job=<id>`; the default is the webhook's own progress page.
    pub thank_you_url: String,
    /// The prototype URL given in answers, with `{id}` for the project id;
    /// empty: `http://{id}.<base_domain>:<serve port>/` on localhost, else
    /// `https://{id}.<base_domain>/`.
    pub preview_url: String,
    /// Largest request body (413 past it).
    pub max_body_bytes: u64,
    /// Request bodies held in memory at once, all connections together;
    /// past it, posts wait for room.
    pub max_inflight_bytes: u64,
    /// Longest text field (bytes).
    pub max_field_bytes: usize,
    /// A field people leave empty and bots fill in; empty name: off.
    pub honeypot_field: String,
    /// The same content, or the same `Idempotency-Key`, within this many
    /// seconds gives the same job.
    pub idempotency_window_secs: u64,
    /// Posts per minute per client address (token bucket), and the burst.
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Origins allowed to post with `fetch` (CORS); `*` allows any.
    pub cors_origins: Vec<String>,
    /// Refuse posts without a valid signature (secret in
    /// `PROTOFORGE_WEBHOOK_SECRET`).
    pub require_signature: bool,
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send the request head, and the whole body.
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enabled: true,
            listen: "127.0.0.1:8081".into(),
            thank_you_url: "/thanks".into(),
            preview_url: String::new(),
            max_body_bytes: 32 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_field_bytes: 64 * 1024,
            honeypot_field: "website".into(),
            idempotency_window_secs: 600,
            rate_limit_per_minute: 30,
            rate_limit_burst: 10,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            require_signature: false,
            max_connections: 256,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Address of the static server.
    pub listen: String,
    /// Most connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout_secs: u64,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive_secs: u64,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Memory for file contents (and their gzip/brotli forms).
    pub cache_bytes: u64,
    /// How often the branch is checked for a new commit.
    pub refresh_ms: u64,
    /// Show the list of live sites on the base domain's front page.
    pub list_sites: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PruneConfig {
    /// When the pruner runs (cron, 5 or 6 fields, UTC).
    pub schedule: String,
    /// Days after which processed inbox files, rejected files and failure
    /// records are deleted.
    pub retention_days: u32,
    /// Rewrite the branch to a single commit after pruning, so that pruned
    /// files leave the history too.
    pub purge_history: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuilderConfig {
    /// Quiet time after a file event before the inbox is scanned.
    pub debounce_ms: u64,
    /// Full rescan of the inbox even without events: the safety net for
    /// events the OS dropped.
    pub rescan_interval_secs: u64,
    /// Tries for a job whose failure may be transient (a locked ref, I/O).
    pub max_attempts: u32,
    /// Wait before the second try; doubles for each further one.
    pub retry_backoff_ms: u64,
    /// Loose objects past which `git gc --auto` packs them (its `gc.auto`);
    /// 0 turns the packing off.
    pub gc_auto: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest submission YAML file accepted.
    pub max_submission_bytes: u64,
    /// Largest single attachment.
    pub max_attachment_bytes: u64,
    /// Most attachments in one submission.
    pub max_attachments: usize,
}

/// The last gate before publishing (see `finalize`): images and the size budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinalizeConfig {
    /// Images are scaled down to fit this many pixels on their longer side.
    pub max_image_px: u32,
    /// Past this total size a site gets a warning: without images, and with.
    pub budget_bytes: u64,
    pub budget_with_images_bytes: u64,
    /// Past this total size the job fails.
    pub hard_cap_bytes: u64,
}

impl Default for FinalizeConfig {
    fn default() -> Self {
        FinalizeConfig {
            max_image_px: 1600,
            budget_bytes: 2 * 1024 * 1024,
            budget_with_images_bytes: 10 * 1024 * 1024,
            hard_cap_bytes: 25 * 1024 * 1024,
        }
    }
}

/// The AI stages (see `stages::ai`). No provider: the template generator, offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Tried in order; the next one only when a call failed before any output streamed.
    pub providers: Vec<ProviderConfig>,
    pub stages: LlmStages,
    /// Seconds to open a connection, to the response head, and of silence inside a stream.
    pub connect_timeout_secs: u64,
    pub first_byte_timeout_secs: u64,
    pub stall_timeout_secs: u64,
    /// Tokens in and out a job may spend; past it, the remaining stages use the templates.
    pub job_token_budget: u64,
    /// Re-asks after a reply that fails validation, per stage.
    pub max_repairs: u32,
    /// "Continue" requests after a reply cut at `max_tokens`, per call.
    pub max_continuations: u32,
    /// Failed calls in a row after which a provider is skipped, and for how long.
    pub breaker_failures: u32,
    pub breaker_cooldown_secs: u64,
    /// Largest text taken from one document attachment (bytes), and from all.
    pub max_document_bytes: u64,
    pub max_context_bytes: u64,
    pub transcription: TranscriptionConfig,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            providers: Vec::new(),
            stages: LlmStages::default(),
            connect_timeout_secs: 10,
            first_byte_timeout_secs: 60,
            stall_timeout_secs: 30,
            job_token_budget: 60_000,
            max_repairs: 2,
            max_continuations: 2,
            breaker_failures: 3,
            breaker_cooldown_secs: 300,
            max_document_bytes: 16 * 1024,
            max_context_bytes: 48 * 1024,
            transcription: TranscriptionConfig::default(),
        }
    }
}

/// One model endpoint. The key is read from `api_key_env`, never from a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Names the provider in messages and `metadata.json`; defaults to the model.
    pub name: String,
    pub kind: ProviderKind,
    /// Up to and including `/v1`.
    pub base_url: String,
    pub model: String,
    /// The environment variable that holds the API key; empty: no key (local servers).
    pub api_key_env: String,
    /// Extra request headers (not credentials: those come from `api_key_env`).
    pub headers: std::collections::BTreeMap<String, String>,
    /// How JSON output is asked for: `auto` degrades json_schema → json_object → none when
    /// the server refuses one.
    pub json_mode: JsonMode,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            name: String::new(),
            kind: ProviderKind::Openai,
            base_url: String::new(),
            model: String::new(),
            api_key_env: String::new(),
            headers: Default::default(),
            json_mode: JsonMode::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonMode {
    Auto,
    JsonSchema,
    JsonObject,
    None,
}

/// Settings per stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmStages {
    pub analysis: StageConfig,
    pub html: StageConfig,
    pub css: StageConfig,
    pub js: StageConfig,
    pub content: StageConfig,
}

impl Default for LlmStages {
    fn default() -> Self {
        let with = |max_tokens, temperature| StageConfig {
            max_tokens,
            temperature,
            ..StageConfig::default()
        };
        LlmStages {
            analysis: with(1500, 0.2),
            html: with(4096, 0.4),
            css: with(4096, 0.3),
            js: with(2048, 0.2),
            content: with(4096, 0.3),
        }
    }
}

impl LlmStages {
    pub fn get(&self, stage: &str) -> &StageConfig {
        match stage {
            "analysis" => &self.analysis,
            "html" => &self.html,
            "css" => &self.css,
            "js" => &self.js,
            _ => &self.content,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageConfig {
    /// Longest reply, in tokens, before a continuation is asked for.
    pub max_tokens: u32,
    pub temperature: f32,
    /// The whole stage, retries, continuations and repairs included (seconds).
    pub timeout_secs: u64,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig { max_tokens: 4096, temperature: 0.3, timeout_secs: 300 }
    }
}

/// Speech to text for audio attachments, over `/v1/audio/transcriptions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscriptionConfig {
    /// Empty: audio is not transcribed (it is noted in the metadata instead).
    pub base_url: String,
    pub model: String,
    pub api_key_env: String,
    pub timeout_secs: u64,
}

impl Default for TranscriptionConfig {
    fn default() -> Self {
        TranscriptionConfig {
            base_url: String::new(),
            model: "whisper-1".into(),
            api_key_env: String::new(),
            timeout_secs: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Language used when a submission names none.
    pub default_language: String,
    /// Show the contact's email and phone on the prototype. Off by default:
    /// a prototype is shared before the customer agreed to publish them.
    pub show_contact_details: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            branch: "prototypes".into(),
            base_domain: "localhost".into(),
            expiry_days: 30,
            project_id_salt: String::new(),
            inbox_dir: "inbox".into(),
            layouts_dir: "layouts".into(),
            prompts_dir: "prompts".into(),
            author: Identity::default(),
            committer: Identity::default(),
            builder: BuilderConfig::default(),
            limits: Limits::default(),
            generator: GeneratorConfig::default(),
            finalize: FinalizeConfig::default(),
            llm: LlmConfig::default(),
            serve: ServeConfig::default(),
            prune: PruneConfig::default(),
            webhook: WebhookConfig::default(),
            push: PushConfig::default(),
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            max_connections: 1024,
            header_read_timeout_secs: 10,
            keep_alive_secs: 30,
            max_header_bytes: 16 * 1024,
            cache_bytes: 16 * 1024 * 1024,
            refresh_ms: 500,
            list_sites: false,
        }
    }
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig { schedule: "0 3 * * *".into(), retention_days: 90, purge_history: false }
    }
}

impl Default for Identity {
    fn default() -> Self {
        Identity { name: "protoforge".into(), email: "protoforge@localhost".into() }
    }
}

impl Default for BuilderConfig {
    fn default() -> Self {
        BuilderConfig {
            debounce_ms: 250,
            rescan_interval_secs: 30,
            max_attempts: 3,
            retry_backoff_ms: 200,
            gc_auto: 2000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_submission_bytes: 1024 * 1024,
            max_attachment_bytes: 10 * 1024 * 1024,
            max_attachments: 20,
        }
    }
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig { default_language: "en".into(), show_contact_details: false }
    }
}

/// A config that failed to load; every variant names where and hints a fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: u64, column: u64, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{}", .problems.iter().map(|p| format!("{}: {p}", .path.display())).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// One invalid value, by its dotted key.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl Config {
    /// Load `path` (a missing file gives the defaults), apply the
    /// environment and validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { path: path.into(), source }),
        };
        let vars = std::env::vars().filter(|(k, _)| k.starts_with("PROTOFORGE_"));
        Config::from_parts(path, &text, vars)
    }

    /// Parse `text` (read from `path`, which only labels errors), apply the
    /// `PROTOFORGE_*` pairs in `vars` and validate.
    pub fn from_parts(
        path: &Path,
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str::<Config>(text)
                .map_err(|e| parse_error(path, &e, &Config::known_keys()))?
        };
        let config = config.with_env(vars)?;
        config
            .validate()
            .map_err(|problems| ConfigError::Invalid { path: path.into(), problems })?;
        Ok(config)
    }

    /// Every dotted key of the config, for hints.
    pub fn known_keys() -> Vec<String> {
        let value = serde_json::to_value(Config::default()).expect("Config serializes to JSON");
        let mut keys = Vec::new();
        collect_keys(&value, "", &mut keys);
        keys
    }

    fn with_env(
        self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value = serde_json::to_value(&self).expect("Config serializes to JSON");
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("PROTOFORGE_") && !NON_CONFIG_VARS.contains(&k.as_str()))
            .collect();
        if vars.is_empty() {
            return Ok(self);
        }
        vars.sort();
        for (var, raw) in &vars {
            let path: Vec<String> =
                var["PROTOFORGE_".len()..].split("__").map(|p| p.to_ascii_lowercase()).collect();
            let slot = lookup_mut(&mut value, &path).ok_or_else(|| {
                let dotted = path.join(".");
                let hint = did_you_mean(&dotted, &Config::known_keys())
                    .map(|k| format!(" — did you mean {}?", env_name(k)))
                    .unwrap_or_default();
                ConfigError::Env {
                    var: var.clone(),
                    message: format!("no config key `{dotted}`{hint}"),
                }
            })?;
            *slot = env_value(slot, raw)
                .map_err(|message| ConfigError::Env { var: var.clone(), message })?;
        }
        serde_json::from_value(value).map_err(|e| ConfigError::Env {
            var: vars.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "),
            message: e.to_string(),
        })
    }

    /// Check every value; all problems are reported at once.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem { key: key.into(), message });
        };
        if let Err(why) = validate_branch(&self.branch) {
            bad("branch", format!("{why}; use a plain name such as `prototypes`"));
        }
        if let Err(why) = validate_domain(&self.base_domain) {
            bad("base_domain", format!("{why}; for example `localhost` or `proto.example.com`"));
        }
        if self.expiry_days == 0 || self.expiry_days > 3650 {
            bad("expiry_days", format!("{} is out of range; use 1 to 3650", self.expiry_days));
        }
        for (key, dir) in [
            ("inbox_dir", &self.inbox_dir),
            ("layouts_dir", &self.layouts_dir),
            ("prompts_dir", &self.prompts_dir),
        ] {
            if let Err(why) = validate_repo_relative(dir) {
                let default = key.trim_end_matches("_dir");
                bad(key, format!("{why}; use a path inside the repo such as `{default}`"));
            }
        }
        for (key, who) in [("author", &self.author), ("committer", &self.committer)] {
            if who.name.trim().is_empty() || who.name.contains(['<', '>', '\n']) {
                bad(
                    &format!("{key}.name"),
                    "must be a non-empty name without `<`, `>` or newlines".into(),
                );
            }
            if !who.email.contains('@') || who.email.contains(['<', '>', '\n', ' ']) {
                bad(
                    &format!("{key}.email"),
                    format!("`{}` does not look like an email address", who.email),
                );
            }
        }
        if self.builder.max_attempts == 0 || self.builder.max_attempts > 20 {
            bad("builder.max_attempts", "use 1 to 20".into());
        }
        if self.builder.retry_backoff_ms > 60_000 {
            bad("builder.retry_backoff_ms", "use at most 60000 (one minute)".into());
        }
        if self.builder.rescan_interval_secs == 0 {
            bad("builder.rescan_interval_secs", "must be at least 1".into());
        }
        if self.limits.max_submission_bytes < 1024 {
            bad("limits.max_submission_bytes", "must be at least 1024".into());
        }
        if self.serve.listen.parse::<std::net::SocketAddr>().is_err() {
            bad(
                "serve.listen",
                format!("`{}` is not an address; write it like 127.0.0.1:8080", self.serve.listen),
            );
        }
        if self.serve.max_connections == 0 {
            bad("serve.max_connections", "must be at least 1".into());
        }
        if self.serve.header_read_timeout_secs == 0 {
            bad("serve.header_read_timeout_secs", "must be at least 1".into());
        }
        if self.serve.max_header_bytes < 1024 {
            bad("serve.max_header_bytes", "must be at least 1024".into());
        }
        if self.serve.refresh_ms == 0 {
            bad("serve.refresh_ms", "must be at least 1".into());
        }
        let w = &self.webhook;
        if w.listen.parse::<std::net::SocketAddr>().is_err() {
            bad(
                "webhook.listen",
                format!("`{}` is not an address; write it like 127.0.0.1:8081", w.listen),
            );
        }
        if w.max_body_bytes < 1024 {
            bad("webhook.max_body_bytes", "must be at least 1024".into());
        }
        if w.max_inflight_bytes < w.max_body_bytes {
            bad(
                "webhook.max_inflight_bytes",
                format!("must be at least webhook.max_body_bytes ({})", w.max_body_bytes),
            );
        }
        if w.max_field_bytes == 0 {
            bad("webhook.max_field_bytes", "must be at least 1".into());
        }
        if w.rate_limit_per_minute == 0 || w.rate_limit_burst == 0 {
            bad(
                "webhook.rate_limit_per_minute",
                "use at least 1 (and a burst of at least 1)".into(),
            );
        }
        for (i, p) in w.trusted_proxies.iter().enumerate() {
            if p.parse::<std::net::IpAddr>().is_err() {
                bad(
                    &format!("webhook.trusted_proxies[{i}]"),
                    format!("`{p}` is not an IP address"),
                );
            }
        }
        for (i, o) in w.cors_origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://"))
                || o.ends_with('/')
            {
                bad(
                    &format!("webhook.cors_origins[{i}]"),
                    format!(
                        "`{o}` is not an origin; write it like https://example.com (no path, no trailing slash)"
                    ),
                );
            }
        }
        if !w.preview_url.is_empty() && !w.preview_url.contains("{id}") {
            bad("webhook.preview_url", "must contain `{id}`, the project id".into());
        }
        if w.max_connections == 0
            || w.header_read_timeout_secs == 0
            || w.body_read_timeout_secs == 0
        {
            bad("webhook.max_connections", "connections and timeouts must be at least 1".into());
        }
        if let Err(e) = <croner::Cron as std::str::FromStr>::from_str(&self.prune.schedule) {
            bad(
                "prune.schedule",
                format!(
                    "`{}` is not a cron expression ({e}); for example `0 3 * * *` (daily at 03:00 UTC)",
                    self.prune.schedule
                ),
            );
        }
        if self.prune.retention_days == 0 {
            bad("prune.retention_days", "must be at least 1".into());
        }
        if self.push.retries > 100 {
            bad("push.retries", "use 0 to 100".into());
        }
        if self.push.backoff_ms > 60_000 {
            bad("push.backoff_ms", "use 0 to 60000 (a minute)".into());
        }
        let f = &self.finalize;
        if !(16..=10_000).contains(&f.max_image_px) {
            bad(
                "finalize.max_image_px",
                format!("{} is out of range; use 16 to 10000 (default 1600)", f.max_image_px),
            );
        }
        if f.hard_cap_bytes < f.budget_bytes.max(f.budget_with_images_bytes) {
            bad(
                "finalize.hard_cap_bytes",
                format!(
                    "{} is below the budgets ({} and {}); the cap must be the largest",
                    f.hard_cap_bytes, f.budget_bytes, f.budget_with_images_bytes
                ),
            );
        }
        if let Err(why) = crate::submission::validate_language(&self.generator.default_language) {
            bad("generator.default_language", why);
        }
        self.llm.validate(&mut bad);
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// The effective config as YAML, for `protoforge config`.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("Config serializes to YAML")
    }
}

impl LlmConfig {
    fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |field: &str| format!("llm.providers[{i}].{field}");
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                bad(
                    &key("base_url"),
                    format!(
                        "`{}` is not an http(s) URL; write it up to /v1, e.g. http://127.0.0.1:8080/v1",
                        p.base_url
                    ),
                );
            }
            if p.model.trim().is_empty() {
                bad(&key("model"), "is required: the model name the server knows".into());
            }
            if !names.insert(p.display_name().to_owned()) {
                bad(
                    &key("name"),
                    format!(
                        "`{}` is used twice; give each provider its own name",
                        p.display_name()
                    ),
                );
            }
            if !p.api_key_env.is_empty() && !is_env_name(&p.api_key_env) {
                bad(
                    &key("api_key_env"),
                    format!(
                        "`{}` is not an environment variable name; write the variable's name \
                         (e.g. OPENAI_API_KEY), never the key itself",
                        p.api_key_env
                    ),
                );
            }
            for (name, value) in &p.headers {
                // SECURITY: credentials in a committed file leak; they come from api_key_env.
                let lower = name.to_ascii_lowercase();
                if ["authorization", "x-api-key", "api-key", "proxy-authorization"]
                    .contains(&lower.as_str())
                {
                    bad(
                        &key("headers"),
                        format!("`{name}` carries a credential; set api_key_env instead"),
                    );
                } else if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || http::HeaderValue::from_str(value).is_err()
                {
                    bad(&key("headers"), format!("`{name}: {value}` is not a valid HTTP header"));
                }
            }
        }
        // Bounded so that a deadline always fits the clock, and a typo cannot park a job
        // for years.
        const DAY: u64 = 86_400;
        for stage in crate::stages::PROMPT_STAGES {
            let s = self.stages.get(stage);
            if !(16..=200_000).contains(&s.max_tokens) {
                bad(&format!("llm.stages.{stage}.max_tokens"), "use 16 to 200000".into());
            }
            if !(0.0..=2.0).contains(&s.temperature) {
                bad(&format!("llm.stages.{stage}.temperature"), "use 0.0 to 2.0".into());
            }
            if !(1..=DAY).contains(&s.timeout_secs) {
                bad(&format!("llm.stages.{stage}.timeout_secs"), format!("use 1 to {DAY}"));
            }
        }
        for (key, v, max) in [
            ("connect_timeout_secs", self.connect_timeout_secs, DAY),
            ("first_byte_timeout_secs", self.first_byte_timeout_secs, DAY),
            ("stall_timeout_secs", self.stall_timeout_secs, DAY),
            ("breaker_failures", u64::from(self.breaker_failures), 1_000),
            ("breaker_cooldown_secs", self.breaker_cooldown_secs.max(1), 7 * DAY),
            ("transcription.timeout_secs", self.transcription.timeout_secs, DAY),
        ] {
            if !(1..=max).contains(&v) {
                bad(&format!("llm.{key}"), format!("use 1 to {max}"));
            }
        }
        // The issue's bound: at most two re-asks of each kind per stage.
        for (key, v) in
            [("max_repairs", self.max_repairs), ("max_continuations", self.max_continuations)]
        {
            if v > 2 {
                bad(&format!("llm.{key}"), "use 0 to 2".into());
            }
        }
        let t = &self.transcription;
        let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !t.base_url.is_empty() && !http(&t.base_url) {
            bad("llm.transcription.base_url", format!("`{}` is not an http(s) URL", t.base_url));
        }
        if !t.api_key_env.is_empty() && !is_env_name(&t.api_key_env) {
            bad(
                "llm.transcription.api_key_env",
                format!("`{}` is not an environment variable name", t.api_key_env),
            );
        }
    }
}

impl ProviderConfig {
    /// The name used in messages: `name`, or the model when none is given.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() { &self.model } else { &self.name }
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The environment variable that sets a dotted key.
pub fn env_name(dotted: &str) -> String {
    format!("PROTOFORGE_{}", dotted.replace('.', "__").to_ascii_uppercase())
}

fn collect_keys(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            if v.is_object() {
                collect_keys(v, &key, out);
            } else {
                out.push(key);
            }
        }
    }
}

fn lookup_mut<'v>(
    value: &'v mut serde_json::Value,
    path: &[String],
) -> Option<&'v mut serde_json::Value> {
    let mut slot = value;
    for part in path {
        slot = slot.as_object_mut()?.get_mut(part)?;
    }
    (!slot.is_object()).then_some(slot)
}

/// Parse an environment value as the type the key already has.
fn env_value(current: &serde_json::Value, raw: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    match current {
        Value::Bool(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Bool(true)),
            "0" | "false" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("`{raw}` is not a boolean; use true or false")),
        },
        Value::Number(n) if n.is_f64() => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("`{raw}` is not a number")),
        Value::Number(_) => raw
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("`{raw}` is not a whole number")),
        // A list: JSON (`["a","b"]`, or objects for `llm.providers`) or comma separated.
        Value::Array(_) if raw.trim_start().starts_with('[') => serde_json::from_str::<Value>(raw)
            .map_err(|e| format!("`{raw}` is not a JSON list ({e}); or write a, b")),
        Value::Array(_) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        _ => Ok(Value::String(raw.to_string())),
    }
}

fn parse_error(path: &Path, err: &serde_saphyr::Error, known: &[String]) -> ConfigError {
    let (line, column) = err.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    ConfigError::Parse { path: path.into(), line, column, message: yaml_message(err, known) }
}

/// A one-line message for a YAML error, with a "did you mean" hint for
/// unknown keys. serde-saphyr's own Display renders a multi-line snippet,
/// which we don't want inside `file:line:col: message`.
pub fn yaml_message(err: &serde_saphyr::Error, known: &[String]) -> String {
    let err = err.without_snippet();
    if let serde_saphyr::Error::SerdeUnknownField { field, expected, .. } = err {
        let candidates: Vec<String> = if expected.is_empty() {
            known.to_vec()
        } else {
            expected.iter().map(|s| s.to_string()).collect()
        };
        let hint = match did_you_mean(field, &candidates) {
            Some(k) => format!(" — did you mean `{k}`?"),
            None => format!("; known keys: {}", candidates.join(", ")),
        };
        return format!("unknown key `{field}`{hint}");
    }
    let text = err.to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid YAML").trim();
    // The position is already in front of our message.
    let first = match first.rfind(" at line ") {
        Some(i) if first[i..].contains(", column ") => &first[..i],
        _ => first,
    };
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // The position is already in front of our message.
    let first = match first.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((pos, rest)) if pos.contains(" column ") => rest,
        _ => first,
    };
    let lower = first.to_ascii_lowercase();
    // Tabs are the classic YAML mistake; say so plainly.
    if lower.contains("tabs disallowed") || lower.contains("tab character") {
        return format!("{first} (YAML indentation must use spaces, not tabs)");
    }
    let hint = if lower.contains("expected sequence") {
        " — this key takes a list, like [home, menu] or one `- item` per line"
    } else if lower.contains("expected mapping") || lower.contains("expected struct") {
        " — this key takes keys and values, indented below it"
    } else if lower.contains("multiple yaml documents") {
        " — the file holds more than one YAML document (a `---` line); keep one per file"
    } else if lower.contains("budget") {
        " — the file is too large or too deeply nested (anchors and aliases?); simplify it"
    } else if lower.contains("duplicate") {
        " — each key may appear once; remove the repeated one"
    } else {
        ""
    };
    let first = if lower.contains("multiple yaml documents") {
        "multiple YAML documents"
    } else if lower.contains("budget breached") {
        "the YAML is over the parser's size limits"
    } else {
        first
    };
    format!("{first}{hint}")
}

/// The closest candidate to `word`, if any is close enough to be a typo.
pub fn did_you_mean<'c>(word: &str, candidates: &'c [String]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.as_str())
}

fn validate_branch(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['-', '.', '/'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok { Ok(()) } else { Err(format!("`{name}` is not a valid branch name")) }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !domain.is_empty() && domain.len() <= 200 && labels_ok {
        Ok(())
    } else {
        Err(format!("`{domain}` is not a domain name"))
    }
}

fn validate_repo_relative(dir: &Path) -> Result<(), String> {
    use std::path::Component;
    if dir.as_os_str().is_empty() {
        return Err("must not be empty".into());
    }
    // SECURITY: these directories are read and written by the builder; a path
    // out of the repo would let a config file point it anywhere on disk.
    if dir.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(format!("`{}` must be a relative path without `..`", dir.display()))
    }
}

/// The commented `protoforge.yaml` that `protoforge init` writes: every key,
/// its default and what it does.
pub fn commented_default(salt: &str) -> String {
    let d = Config::default();
    format!(
        r#"# protoforge.yaml — every key is optional; the values below are the defaults.
# Each key can be overridden by an environment variable: PROTOFORGE_ plus the
# key in capitals, `__` between nested keys (PROTOFORGE_BUILDER__MAX_ATTEMPTS=5).
# `protoforge config` prints the effective configuration.

# Branch that holds every prototype as sites/<projectId>/.
branch: {branch}
# Prototypes are served at <projectId>.<base_domain>.
base_domain: {domain}
# Days from publication until a prototype expires and is pruned.
expiry_days: {expiry}
# Secret mixed into project ids so that they cannot be guessed from a
# client-chosen submission id. Changing it changes every future id.
project_id_salt: "{salt}"

# Directories, relative to this file.
inbox_dir: {inbox}
layouts_dir: {layouts}
prompts_dir: {prompts}

# Who the commits on the prototypes branch are from.
author:
  name: {an}
  email: {ae}
committer:
  name: {cn}
  email: {ce}

builder:
  # Quiet time after a file event before the inbox is scanned (ms).
  debounce_ms: {debounce}
  # Full rescan of the inbox even when no event arrived (seconds).
  rescan_interval_secs: {rescan}
  # Tries for a job that fails for a reason that may pass (a locked ref, I/O).
  max_attempts: {attempts}
  # Wait before the second try (ms); doubles for each further one.
  retry_backoff_ms: {backoff}
  # Every commit leaves loose objects, the flat sites tree alone about 47
  # bytes a site; past this many, `git gc --auto` packs them in the
  # background (needs git on PATH). 0: never.
  gc_auto: {gc_auto}

limits:
  # Largest submission file accepted (bytes).
  max_submission_bytes: {max_sub}
  # Largest single attachment (bytes).
  max_attachment_bytes: {max_att}
  # Most attachments in one submission.
  max_attachments: {max_atts}

generator:
  # Language of a site whose submission names none (BCP 47).
  default_language: {lang}
  # Show the contact's email and phone on the prototype page.
  show_contact_details: {show}

finalize:
  # Images are scaled down to fit this many pixels on their longer side,
  # re-encoded without their metadata (EXIF, GPS), and kept as WebP where
  # that is smaller.
  max_image_px: {max_px}
  # Total site size past which a warning is recorded, without images and
  # with them (bytes).
  budget_bytes: {budget}
  budget_with_images_bytes: {budget_img}
  # Total site size past which the job fails (bytes).
  hard_cap_bytes: {hard_cap}

llm:
  # The models that write the prototypes, tried in order: the next one only
  # when a call fails before any output streamed, and a provider that keeps
  # failing is skipped for a while. None: the built-in templates, offline.
  # `protoforge llm test` checks each with a tiny request.
  providers: []
  #  - name: local            # in messages and metadata.json
  #    kind: openai           # openai (/v1/chat/completions) or anthropic (/v1/messages)
  #    base_url: http://127.0.0.1:8080/v1   # Ollama: http://127.0.0.1:11434/v1
  #    model: smollm2
  #    api_key_env: ""        # the variable holding the key, e.g. OPENAI_API_KEY
  #    headers: {{}}           # extra headers, never credentials
  #    json_mode: auto        # auto, json_schema, json_object or none
  stages:
    # Per stage: longest reply (tokens) before a continuation is asked for,
    # sampling temperature, and seconds for the whole stage.
    analysis: {{ max_tokens: {a_tok}, temperature: {a_t}, timeout_secs: {a_s} }}
    html: {{ max_tokens: {h_tok}, temperature: {h_t}, timeout_secs: {h_s} }}
    css: {{ max_tokens: {c_tok}, temperature: {c_t}, timeout_secs: {c_s} }}
    js: {{ max_tokens: {j_tok}, temperature: {j_t}, timeout_secs: {j_s} }}
    content: {{ max_tokens: {n_tok}, temperature: {n_t}, timeout_secs: {n_s} }}
  # Seconds to connect, to the response head, and of silence mid-stream.
  connect_timeout_secs: {connect}
  first_byte_timeout_secs: {first_byte}
  stall_timeout_secs: {stall}
  # Tokens (in + out) one job may spend; past it, the remaining stages use
  # the templates.
  job_token_budget: {budget_tok}
  # Re-asks with a diagnosis after a reply fails validation, per stage;
  # "continue" requests after a reply cut at max_tokens, per call.
  max_repairs: {repairs}
  max_continuations: {continuations}
  # Failed calls in a row after which a provider is skipped, and for how
  # long (seconds).
  breaker_failures: {breaker}
  breaker_cooldown_secs: {cooldown}
  # Text taken from one document attachment, and from all (bytes).
  max_document_bytes: {doc_bytes}
  max_context_bytes: {ctx_bytes}
  transcription:
    # An OpenAI-compatible /v1/audio/transcriptions for audio attachments;
    # empty: audio is noted in metadata.json, not transcribed.
    base_url: "{tr_url}"
    model: {tr_model}
    api_key_env: "{tr_key}"
    timeout_secs: {tr_timeout}

serve:
  # Address of the static server (`protoforge serve`).
  listen: "{listen}"
  # Most connections open at once.
  max_connections: {max_conn}
  # Seconds a client has to send its request headers.
  header_read_timeout_secs: {hdr_timeout}
  # Seconds before an idle keep-alive connection is closed.
  keep_alive_secs: {keep_alive}
  # Largest request head accepted (bytes).
  max_header_bytes: {max_hdr}
  # Memory for file contents and their compressed forms (bytes).
  cache_bytes: {cache}
  # How often the branch is checked for a new commit (ms).
  refresh_ms: {refresh}
  # List the live sites on the base domain's front page.
  list_sites: {list_sites}

webhook:
  # The contact form posts to http://<listen>/api/queue/submit (run by
  # `protoforge serve`). The HMAC secret and the admin token come from the
  # environment only: PROTOFORGE_WEBHOOK_SECRET, PROTOFORGE_ADMIN_TOKEN.
  enabled: {wh_enabled}
  listen: "{wh_listen}"
  # Where a browser form goes after posting (with ?job=<id>).
  thank_you_url: "{wh_thanks}"
  # Largest request body, and longest text field (bytes).
  max_body_bytes: {wh_body}
  # Bodies held in memory at once, all posts together; more wait (bytes).
  max_inflight_bytes: {wh_inflight}
  max_field_bytes: {wh_field}
  # A hidden field bots fill in; empty: off.
  honeypot_field: "{wh_honeypot}"
  # Same content or Idempotency-Key within this many seconds: same job.
  idempotency_window_secs: {wh_idem}
  # Posts per minute per client address, and the burst allowed.
  rate_limit_per_minute: {wh_rate}
  rate_limit_burst: {wh_burst}
  # Reverse proxies whose X-Forwarded-For is believed, e.g. ["127.0.0.1"].
  trusted_proxies: []
  # Origins allowed to post with fetch (CORS), e.g. ["https://example.com"].
  cors_origins: []
  # Refuse unsigned posts (X-Protoforge-Signature or X-Hub-Signature-256).
  require_signature: {wh_sig}
  # The prototype address given in answers, with {{id}}; empty: derived
  # from base_domain (and serve.listen's port on localhost).
  preview_url: "{wh_preview}"
  # Connections open at once; seconds to send the request head, and the body.
  max_connections: {wh_conns}
  header_read_timeout_secs: {wh_hdr}
  body_read_timeout_secs: {wh_bodyt}

prune:
  # When expired prototypes are removed: cron, 5 or 6 fields, UTC.
  schedule: "{schedule}"
  # Days after which processed inbox files, rejected files and failure
  # records are deleted (they hold personal data).
  retention_days: {retention}
  # Rewrite the branch to one commit after pruning, so pruned files leave
  # the history too.
  purge_history: {purge}

# `build --once --push <remote>` and `prune --push <remote>`: when another
# builder pushed first, fetch, replay our commits on top and push again, at
# most this many times, waiting backoff_ms (doubling, with jitter) between.
push:
  retries: {push_retries}
  backoff_ms: {push_backoff}
"#,
        branch = d.branch,
        domain = d.base_domain,
        expiry = d.expiry_days,
        inbox = d.inbox_dir.display(),
        layouts = d.layouts_dir.display(),
        prompts = d.prompts_dir.display(),
        an = d.author.name,
        ae = d.author.email,
        cn = d.committer.name,
        ce = d.committer.email,
        debounce = d.builder.debounce_ms,
        rescan = d.builder.rescan_interval_secs,
        attempts = d.builder.max_attempts,
        backoff = d.builder.retry_backoff_ms,
        gc_auto = d.builder.gc_auto,
        max_sub = d.limits.max_submission_bytes,
        max_att = d.limits.max_attachment_bytes,
        max_atts = d.limits.max_attachments,
        lang = d.generator.default_language,
        show = d.generator.show_contact_details,
        max_px = d.finalize.max_image_px,
        budget = d.finalize.budget_bytes,
        budget_img = d.finalize.budget_with_images_bytes,
        hard_cap = d.finalize.hard_cap_bytes,
        a_tok = d.llm.stages.analysis.max_tokens,
        a_t = d.llm.stages.analysis.temperature,
        a_s = d.llm.stages.analysis.timeout_secs,
        h_tok = d.llm.stages.html.max_tokens,
        h_t = d.llm.stages.html.temperature,
        h_s = d.llm.stages.html.timeout_secs,
        c_tok = d.llm.stages.css.max_tokens,
        c_t = d.llm.stages.css.temperature,
        c_s = d.llm.stages.css.timeout_secs,
        j_tok = d.llm.stages.js.max_tokens,
        j_t = d.llm.stages.js.temperature,
        j_s = d.llm.stages.js.timeout_secs,
        n_tok = d.llm.stages.content.max_tokens,
        n_t = d.llm.stages.content.temperature,
        n_s = d.llm.stages.content.timeout_secs,
        connect = d.llm.connect_timeout_secs,
        first_byte = d.llm.first_byte_timeout_secs,
        stall = d.llm.stall_timeout_secs,
        budget_tok = d.llm.job_token_budget,
        repairs = d.llm.max_repairs,
        continuations = d.llm.max_continuations,
        breaker = d.llm.breaker_failures,
        cooldown = d.llm.breaker_cooldown_secs,
        doc_bytes = d.llm.max_document_bytes,
        ctx_bytes = d.llm.max_context_bytes,
        tr_url = d.llm.transcription.base_url,
        tr_model = d.llm.transcription.model,
        tr_key = d.llm.transcription.api_key_env,
        tr_timeout = d.llm.transcription.timeout_secs,
        listen = d.serve.listen,
        max_conn = d.serve.max_connections,
        hdr_timeout = d.serve.header_read_timeout_secs,
        keep_alive = d.serve.keep_alive_secs,
        max_hdr = d.serve.max_header_bytes,
        cache = d.serve.cache_bytes,
        refresh = d.serve.refresh_ms,
        list_sites = d.serve.list_sites,
        wh_enabled = d.webhook.enabled,
        wh_listen = d.webhook.listen,
        wh_thanks = d.webhook.thank_you_url,
        wh_body = d.webhook.max_body_bytes,
        wh_inflight = d.webhook.max_inflight_bytes,
        wh_field = d.webhook.max_field_bytes,
        wh_honeypot = d.webhook.honeypot_field,
        wh_idem = d.webhook.idempotency_window_secs,
        wh_rate = d.webhook.rate_limit_per_minute,
        wh_burst = d.webhook.rate_limit_burst,
        wh_sig = d.webhook.require_signature,
        wh_preview = d.webhook.preview_url,
        wh_conns = d.webhook.max_connections,
        wh_hdr = d.webhook.header_read_timeout_secs,
        wh_bodyt = d.webhook.body_read_timeout_secs,
        schedule = d.prune.schedule,
        retention = d.prune.retention_days,
        purge = d.prune.purge_history,
        push_retries = d.push.retries,
        push_backoff = d.push.backoff_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_parts(Path::new("protoforge.yaml"), text, Vec::new())
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# only a comment\n").unwrap(), Config::default());
    }

    #[test]
    fn commented_default_parses_to_defaults() {
        let expected = Config { project_id_salt: "abc".into(), ..Config::default() };
        assert_eq!(parse(&commented_default("abc")).unwrap(), expected);
    }

    #[test]
    fn every_key_is_in_the_commented_default() {
        let text = commented_default("");
        for key in Config::known_keys() {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(text.contains(&format!("{leaf}:")), "{key} missing from the default file");
        }
    }

    #[test]
    fn unknown_key_names_position_and_hint() {
        let err = parse("branch: x\nexpiry_dayz: 3\n").unwrap_err().to_string();
        assert!(err.starts_with("protoforge.yaml:2:"), "{err}");
        assert!(err.contains("unknown key `expiry_dayz` — did you mean `expiry_days`?"), "{err}");
        let err = parse("builder:\n  max_atempts: 3\n").unwrap_err().to_string();
        assert!(err.contains("did you mean `max_attempts`?"), "{err}");
    }

    #[test]
    fn wrong_type_names_position() {
        let err = parse("expiry_days: soon\n").unwrap_err().to_string();
        assert!(err.starts_with("protoforge.yaml:1:"), "{err}");
    }

    #[test]
    fn invalid_values_are_all_listed() {
        let err = parse("branch: 'bad..name'\nexpiry_days: 0\ninbox_dir: ../elsewhere\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`branch`"), "{err}");
        assert!(err.contains("`expiry_days`"), "{err}");
        assert!(err.contains("`inbox_dir`"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let vars = vec![
            ("PROTOFORGE_EXPIRY_DAYS".to_string(), "7".to_string()),
            ("PROTOFORGE_BUILDER__MAX_ATTEMPTS".to_string(), "5".to_string()),
            ("PROTOFORGE_GENERATOR__SHOW_CONTACT_DETAILS".to_string(), "true".to_string()),
            ("PROTOFORGE_LOG".to_string(), "debug".to_string()),
        ];
        let c = Config::from_parts(Path::new("p.yaml"), "expiry_days: 9\n", vars).unwrap();
        assert_eq!(c.expiry_days, 7);
        assert_eq!(c.builder.max_attempts, 5);
        assert!(c.generator.show_contact_details);
    }

    #[test]
    fn lists_come_from_the_environment_as_json_or_commas() {
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let c = Config::from_parts(
            Path::new("p.yaml"),
            "",
            env("PROTOFORGE_WEBHOOK__TRUSTED_PROXIES", "127.0.0.1, ::1"),
        )
        .unwrap();
        assert_eq!(c.webhook.trusted_proxies, ["127.0.0.1", "::1"]);
        let c = Config::from_parts(
            Path::new("p.yaml"),
            "",
            env("PROTOFORGE_WEBHOOK__CORS_ORIGINS", r#"["https://a.example"]"#),
        )
        .unwrap();
        assert_eq!(c.webhook.cors_origins, ["https://a.example"]);
        let err = Config::from_parts(
            Path::new("p.yaml"),
            "",
            env("PROTOFORGE_WEBHOOK__TRUSTED_PROXIES", "10.0.0.300"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("webhook.trusted_proxies[0]"), "{err}");
        let err = Config::from_parts(
            Path::new("p.yaml"),
            "",
            env("PROTOFORGE_WEBHOOK__CORS_ORIGINS", "[1, 2"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("JSON list"), "{err}");
    }

    #[test]
    fn providers_are_validated_with_their_index_and_field() {
        let yaml = "llm:\n  providers:\n    - kind: openai\n      base_url: localhost:8080\n      model: ''\n    - name: b\n      base_url: https://api.example/v1\n      model: m\n      api_key_env: sk-123\n      headers: {Authorization: Bearer x}\n";
        let err = parse(yaml).unwrap_err().to_string();
        assert!(err.contains("`llm.providers[0].base_url`"), "{err}");
        assert!(err.contains("`llm.providers[0].model`"), "{err}");
        assert!(err.contains("`llm.providers[1].api_key_env`"), "{err}");
        assert!(err.contains("never the key itself"), "{err}");
        assert!(
            err.contains("`llm.providers[1].headers`: `Authorization` carries a credential"),
            "{err}"
        );
        let err = parse("llm:\n  providers:\n    - kind: gemini\n").unwrap_err().to_string();
        assert!(err.starts_with("protoforge.yaml:3:"), "{err}");
        let err = parse("llm:\n  stages:\n    css: {temperature: 3.5}\n").unwrap_err().to_string();
        assert!(err.contains("`llm.stages.css.temperature`"), "{err}");
    }

    #[test]
    fn providers_and_floats_come_from_the_environment() {
        let vars = vec![
            (
                "PROTOFORGE_LLM__PROVIDERS".to_string(),
                r#"[{"name":"local","base_url":"http://127.0.0.1:9/v1","model":"m","json_mode":"json_object"}]"#
                    .to_string(),
            ),
            ("PROTOFORGE_LLM__STAGES__HTML__TEMPERATURE".to_string(), "0.7".to_string()),
        ];
        let c = Config::from_parts(Path::new("p.yaml"), "", vars).unwrap();
        assert_eq!(c.llm.providers.len(), 1);
        assert_eq!(c.llm.providers[0].json_mode, JsonMode::JsonObject);
        assert_eq!(c.llm.providers[0].kind, ProviderKind::Openai);
        assert!((c.llm.stages.html.temperature - 0.7).abs() < 1e-6);
    }

    #[test]
    fn unknown_or_bad_environment_is_an_error() {
        let vars = vec![("PROTOFORGE_EXPIRY_DAY".to_string(), "7".to_string())];
        let err = Config::from_parts(Path::new("p.yaml"), "", vars).unwrap_err().to_string();
        assert!(err.contains("did you mean PROTOFORGE_EXPIRY_DAYS?"), "{err}");
        let vars = vec![("PROTOFORGE_EXPIRY_DAYS".to_string(), "many".to_string())];
        let err = Config::from_parts(Path::new("p.yaml"), "", vars).unwrap_err().to_string();
        assert!(err.contains("not a whole number"), "{err}");
    }
}
