//! Speech to text for audio attachments, through an OpenAI-compatible
//! `/v1/audio/transcriptions` (OpenAI, whisper.cpp's server, faster-whisper servers, LocalAI).
//!
//! Invariants: a transcription is bounded in time (`llm.transcription.timeout_secs`, retries
//! included) and in attempts (1 + [`super::retry::MAX_RETRIES`]); its failure is reported,
//! never fatal to the job (the analysis is told the audio was not transcribed); the key comes
//! from the environment only.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::chain::SetupError;
use super::retry;
use crate::config::TranscriptionConfig;

/// One configured transcription endpoint.
pub struct Transcriber {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: the key stays out of every Debug print.
        f.debug_struct("Transcriber").field("url", &self.url).field("model", &self.model).finish()
    }
}

impl Transcriber {
    /// `None` when `base_url` is empty (transcription off).
    pub fn from_config(
        cfg: &TranscriptionConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Transcriber>, SetupError> {
        if cfg.base_url.is_empty() {
            return Ok(None);
        }
        let api_key = if cfg.api_key_env.is_empty() {
            None
        } else {
            Some(env(&cfg.api_key_env).filter(|k| !k.trim().is_empty()).ok_or_else(|| {
                SetupError::MissingTranscriptionKey { var: cfg.api_key_env.clone() }
            })?)
        };
        let http = super::http_client(Duration::from_secs(10))?;
        Ok(Some(Transcriber {
            http,
            url: format!("{}/audio/transcriptions", cfg.base_url.trim_end_matches('/')),
            model: cfg.model.clone(),
            api_key,
            timeout: Duration::from_secs(cfg.timeout_secs),
        }))
    }

    /// The text spoken in `file`; `language` is a hint (a BCP 47 tag; its primary subtag is
    /// sent).
    pub async fn transcribe(&self, file: &Path, language: &str) -> Result<String, String> {
        let audio = std::fs::read(file).map_err(|e| format!("cannot read the audio: {e}"))?;
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("audio").to_owned();
        let lang = language.split('-').next().unwrap_or(language).to_ascii_lowercase();
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let call = tokio::time::timeout(left, self.once(&audio, &name, &lang)).await;
            let (retry, after, message) = match call {
                Err(_) => {
                    return Err(format!(
                        "{} ({}) gave no transcription within {} s \
                         (llm.transcription.timeout_secs)",
                        self.url,
                        self.model,
                        self.timeout.as_secs()
                    ));
                }
                Ok(Ok(text)) => return Ok(text),
                Ok(Err(e)) => e,
            };
            if !retry || attempt > retry::MAX_RETRIES {
                return Err(format!("{} (after {attempt} attempt(s))", message));
            }
            let wait = retry::wait(attempt, after, retry::jitter());
            if Instant::now() + wait >= deadline {
                return Err(format!("{message}; no time left to retry"));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(
        &self,
        audio: &[u8],
        name: &str,
        lang: &str,
    ) -> Result<String, (bool, Option<Duration>, String)> {
        let boundary = format!(
            "protoforge-{:016x}",
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos()
                as u64
        );
        let body = multipart(
            &boundary,
            &[("model", &self.model), ("language", lang), ("response_format", "json")],
            name,
            audio,
        );
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let response = req.send().await.map_err(|e| (true, None, format!("network error: {e}")))?;
        let status = response.status().as_u16();
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::retry_after(v, SystemTime::now()));
        let text =
            response.text().await.map_err(|e| (true, None, format!("network error: {e}")))?;
        match retry::verdict(status) {
            retry::Verdict::Ok => {}
            verdict => {
                let short: String = text.chars().take(200).collect();
                return Err((
                    verdict == retry::Verdict::Retry,
                    after,
                    format!("{} ({}) answered HTTP {status}: {short}", self.url, self.model),
                ));
            }
        }
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| (false, None, format!("{}: the answer is not JSON ({e})", self.url)))?;
        value["text"].as_str().map(|t| t.trim().to_owned()).ok_or_else(|| {
            (
                false,
                None,
                format!("{}: the answer has no `text` field; is it a transcription API?", self.url),
            )
        })
    }
}

/// A `multipart/form-data` body: text fields, then the file.
fn multipart(boundary: &str, fields: &[(&str, &str)], name: &str, file: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(file.len() + 512);
    for (k, v) in fields {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    // SECURITY: the file name is the customer's; quotes or line breaks in it would forge
    // headers of the part.
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' })
        .collect();
    let kind = match name.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
        Some("mp3" | "mpga" | "mpeg") => "audio/mpeg",
        Some("m4a" | "mp4") => "audio/mp4",
        Some("ogg" | "oga" | "opus") => "audio/ogg",
        Some("webm") => "audio/webm",
        Some("flac") => "audio/flac",
        _ => "audio/wav",
    };
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe}\"\r\nContent-Type: {kind}\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(file);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_multipart_with_a_safe_file_name() {
        let body = multipart("b", &[("model", "whisper-1")], "a\"b\r\nX: y.ogg", b"RIFF");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
        ));
        assert!(
            text.contains(
                "filename=\"a_b__X:_y.ogg\"\r\nContent-Type: audio/ogg\r\n\r\nRIFF\r\n--b--\r\n"
            ),
            "{text}"
        );
    }
}
