//! The `protoforge` command line: parses arguments and calls the library.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use protoforge::builder::{self, JobOutcome, JobReport, Progress, Workspace};
use protoforge::config::{self, Config};
use protoforge::inbox::{self, InboxError};
use protoforge::{scaffold, templates};

// glibc's allocator keeps the heap grown by the builder's pattern (a slightly
// larger `sites` tree every commit): 86 MB of RSS for 11 MB of live heap at
// 1,000 jobs. mimalloc returns freed pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "protoforge",
    version,
    about = "Turn contact-form submissions into live prototype websites, with git as the queue and the store."
)]
struct Cli {
    /// The site repo to work in.
    #[arg(short = 'C', long = "repo", global = true, default_value = ".", env = "PROTOFORGE_REPO")]
    repo: PathBuf,
    /// Config file (default: <repo>/protoforge.yaml).
    #[arg(long, global = true, env = "PROTOFORGE_CONFIG")]
    config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a site repo: git repo, protoforge.yaml, inbox/, layouts/, prompts/, workflows.
    Init {
        /// Directory to create or complete (default: the current one).
        dir: Option<PathBuf>,
    },
    /// Print the effective configuration (file + PROTOFORGE_* variables).
    Config,
    /// Validate the config, every inbox file, the layouts and the prompts.
    Check,
    /// Validate a submission and write it into the inbox atomically; prints its project id.
    Submit {
        /// A YAML file, or `-` for standard input.
        file: PathBuf,
    },
    /// Build pending submissions into sites on the prototypes branch.
    Build {
        /// Process every pending submission, then exit (non-zero if any failed).
        #[arg(long, conflicts_with = "watch")]
        once: bool,
        /// Watch the inbox and build submissions as they arrive.
        #[arg(long)]
        watch: bool,
        /// Fetch the prototypes branch from this remote (name or URL) first, and push it back
        /// with a lease after building; if another builder pushed meanwhile, replay and retry.
        #[arg(long, value_name = "REMOTE", conflicts_with = "watch")]
        push: Option<String>,
        /// Build only this shard of the inbox, `I/N` (1-based): the submissions whose hash
        /// modulo N is I-1, so that N builders (a CI matrix) never build the same one.
        #[arg(long, value_name = "I/N", conflicts_with = "watch", value_parser = builder::Shard::parse)]
        shard: Option<builder::Shard>,
    },
    /// List pending, done, failed and rejected submissions.
    Status,
    /// Run a page (or a .css stylesheet) through finalize, as a build does,
    /// and print the result; what was removed or added goes to stderr.
    Finalize {
        /// The HTML page or CSS file.
        file: PathBuf,
        /// Write the result here instead of to stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Language of the page (BCP 47), for `lang`, `dir` and the banner.
        #[arg(long, default_value = "en")]
        lang: String,
        /// Title used when the page has none (default: the file's name).
        #[arg(long)]
        title: Option<String>,
    },
    /// Work with the configured model providers (`llm:` in protoforge.yaml).
    Llm {
        #[command(subcommand)]
        action: LlmAction,
    },
    /// Clear the failure record of a job so that it is built again.
    Retry {
        /// Project id, or the first 8+ characters of the submission hash.
        id: String,
    },
    /// Write the branch's sites as plain files, with nginx, Caddy and Netlify / Cloudflare
    /// Pages configs that answer as `serve` does: for a static host or a CDN.
    Export {
        /// Output directory (default: <repo>/preview); its `public/` is the web root.
        dir: Option<PathBuf>,
        /// The same, as a flag.
        #[arg(long, short, hide = true, conflicts_with = "dir")]
        out: Option<PathBuf>,
        /// Export as if it were this time (RFC 3339): sites expired by then answer 410.
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        /// For a host that sends no custom headers (GitHub Pages): put the CSP into every page
        /// as a <meta> element instead, and leave out _headers and _redirects.
        #[arg(long)]
        meta_csp: bool,
    },
    /// Remove expired prototypes from the branch (one commit) and delete personal data older
    /// than prune.retention_days; then purge the history if prune.purge_history is set.
    Prune {
        /// Report what would be done, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prune as if it were this time (RFC 3339, e.g. 2026-12-31T03:00:00Z); default: now.
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        /// Fetch the prototypes branch from this remote first, and push the result back with
        /// a lease (see `build --push`).
        #[arg(long, value_name = "REMOTE", conflicts_with = "dry_run")]
        push: Option<String>,
    },
    /// Give a prototype a new expiry, N days from now (metadata and page banner).
    Extend {
        /// Project id of the site.
        id: String,
        /// Days from now until it expires.
        #[arg(long)]
        days: u32,
    },
    /// Build the bundled examples in a new temporary site repo, offline, then serve them.
    Demo {
        /// Where to create the demo repo (default: a new temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Build only; don't start the server.
        #[arg(long)]
        no_serve: bool,
    },
    /// Serve the sites from the branch, build new submissions as they arrive, prune on schedule.
    Serve {
        /// Don't run the builder in this process.
        #[arg(long)]
        no_build: bool,
        /// Don't run the pruner in this process.
        #[arg(long)]
        no_prune: bool,
        /// Don't run the webhook (`webhook.enabled: false` does the same).
        #[arg(long)]
        no_webhook: bool,
        /// Serve as if the time were this (RFC 3339), to check expiry.
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
    },
}

#[derive(Subcommand)]
enum LlmAction {
    /// Send each provider a tiny request; print its latency and tokens per second.
    Test,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "protoforge=info",
        1 => "protoforge=debug",
        _ => "protoforge=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROTOFORGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    let repo = cli.repo.clone();
    let open = || {
        Workspace::open(&repo, cli.config.as_deref())
            .with_context(|| format!("cannot open the site repo {}", repo.display()))
    };
    match cli.command {
        Command::Init { dir } => {
            let dir = dir.unwrap_or(repo);
            let created = scaffold::init(&dir)
                .with_context(|| format!("cannot initialise {}", dir.display()))?;
            if created.repo_created {
                println!("Created git repository in {}", dir.display());
            }
            for p in &created.written {
                println!("  wrote {}", p.strip_prefix(&dir).unwrap_or(p).display());
            }
            if !created.kept.is_empty() {
                println!("  kept {} existing file(s)", created.kept.len());
            }
            println!(
                "\nNext: put a submission in {}/inbox/ (or `protoforge submit FILE`), then `protoforge build --once`.",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Llm { action: LlmAction::Test } => {
            let ws = open()?;
            let Some(ai) = ws.ai()? else {
                println!(
                    "No provider configured (llm.providers is empty): builds use the templates."
                );
                return Ok(ExitCode::SUCCESS);
            };
            let mut failed = 0;
            for probe in ai.probe() {
                match probe.result {
                    Ok(f) => println!(
                        "ok    {} ({}): first text after {} ms, {} ms in all, {} tokens, {:.1} tokens/s: {:?}",
                        probe.provider,
                        probe.model,
                        f.first_text.as_millis(),
                        f.total.as_millis(),
                        f.tokens_out,
                        f.tokens_per_sec,
                        f.reply
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("FAIL  {} ({}): {e}", probe.provider, probe.model);
                    }
                }
            }
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Finalize { file, out, lang, title } => {
            finalize_file(&file, out.as_deref(), &lang, title.as_deref())
        }
        Command::Config => {
            let path = cli.config.clone().unwrap_or_else(|| repo.join(config::FILE_NAME));
            let config = Config::load(&path)
                .with_context(|| format!("invalid configuration {}", path.display()))?;
            print!("{}", config.to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => check(&repo, cli.config.as_deref()),
        Command::Submit { file } => {
            let ws = open()?;
            let (bytes, label) = if file == Path::new("-") {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes).context("cannot read standard input")?;
                (bytes, PathBuf::from("<stdin>"))
            } else {
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                (bytes, file.clone())
            };
            let parsed = match ws.inbox.validate_bytes(&bytes, &label) {
                Ok(p) => p,
                Err(InboxError::Invalid(e)) => {
                    eprintln!("{e}");
                    bail!("{} is not a valid submission; nothing was written", label.display());
                }
                Err(e) => return Err(e.into()),
            };
            let name = inbox::file_name_for(&parsed, chrono::Utc::now());
            let path = ws.inbox.write(&name, &bytes)?;
            eprintln!("wrote {}", path.display());
            println!("{}", parsed.project_id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { once, watch, push, shard } => {
            let ws = open()?;
            if watch {
                let mut progress = LogProgress;
                builder::watch(&ws, &mut progress, || false)?;
                Ok(ExitCode::SUCCESS)
            } else {
                if !once {
                    eprintln!("note: building once; use --watch to keep watching the inbox");
                }
                build_once(&ws, push.as_deref(), shard)
            }
        }
        Command::Status => status(&open()?),
        Command::Retry { id } => {
            let ws = open()?;
            let cleared = builder::retry(&ws, &id)?;
            if cleared.is_empty() {
                bail!(
                    "no failure record matches `{id}`; `protoforge status` lists the failed jobs"
                );
            }
            for pid in cleared {
                println!("cleared the failure record of {pid}; it is pending again");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { dir, out, now, meta_csp } => {
            let ws = open()?;
            let now = now.map(|t| parse_time("--now", &t)).transpose()?;
            let dir = dir.or(out).unwrap_or_else(|| ws.root.join("preview"));
            let done = protoforge::export::export(
                &ws.store,
                &ws.config.base_domain,
                &dir,
                now.unwrap_or_else(chrono::Utc::now),
                protoforge::export::Options { meta_csp },
            )
            .with_context(|| format!("cannot export into {}", dir.display()))?;
            println!(
                "exported {} site(s), {} expired (410), {} file(s), {} KiB into {}",
                done.sites.len(),
                done.gone.len(),
                done.files,
                done.bytes.div_ceil(1024),
                done.dir.display()
            );
            println!(
                "web root: {}\nconfigs: nginx.conf (+ protoforge-common.conf), Caddyfile{}",
                done.dir.join("public").display(),
                if meta_csp {
                    "; the CSP is in every page (--meta-csp)"
                } else {
                    ", public/_headers and public/_redirects"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune { dry_run, now, push } => {
            let now = now.map(|t| parse_time("--now", &t)).transpose()?;
            prune(&open()?, dry_run, now.unwrap_or_else(chrono::Utc::now), push.as_deref())
        }
        Command::Extend { id, days } => {
            let ws = open()?;
            let at = protoforge::prune::extend(&ws, &id, days, chrono::Utc::now())?;
            println!(
                "extended {id}: it now expires on {} ({})",
                at.format("%Y-%m-%d"),
                builder::rfc3339(at)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, no_serve } => demo(dir, no_serve),
        Command::Serve { no_build, no_prune, no_webhook, now } => {
            let now = now.map(|t| parse_time("--now", &t)).transpose()?;
            serve(repo, cli.config.clone(), !no_build, !no_prune, !no_webhook, now, None)
        }
    }
}

fn finalize_file(
    file: &Path,
    out: Option<&Path>,
    lang: &str,
    title: Option<&str>,
) -> Result<ExitCode> {
    use protoforge::finalize::{self, Direction, PageOptions};
    protoforge::submission::validate_language(lang)
        .map_err(|why| anyhow::anyhow!("--lang {lang}: {why}"))?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {} (it must be UTF-8 text)", file.display()))?;
    let is_css = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("css"));
    let (result, warnings) = if is_css {
        let css = finalize::finalize_css(&text);
        (css.css, css.warnings)
    } else {
        let expires = (chrono::Utc::now() + chrono::TimeDelta::days(30)).format("%Y-%m-%d");
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let opts = PageOptions {
            lang,
            dir: if protoforge::submission::is_rtl(lang) { Direction::Rtl } else { Direction::Ltr },
            banner: &format!("Prototype — expires on {expires}"),
            title: title.unwrap_or(&stem),
            dismiss: "Dismiss",
            form_note: "This is a prototype: messages are not sent.",
            path: "",
            site: None,
        };
        let page = finalize::finalize_page(&text, &opts)
            .with_context(|| format!("{} cannot be finalized", file.display()))?;
        (page.html, page.warnings)
    };
    for w in &warnings {
        eprintln!("{}: {w}", file.display());
    }
    match out {
        Some(out) => std::fs::write(out, &result)
            .with_context(|| format!("cannot write {}", out.display()))?,
        None => print!("{result}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn build_once(
    ws: &Workspace,
    push: Option<&str>,
    shard: Option<builder::Shard>,
) -> Result<ExitCode> {
    let remote = push.map(|r| pull(ws, r)).transpose()?;
    let mut progress: Box<dyn Progress> = if std::io::stderr().is_terminal() {
        Box::new(BarProgress::default())
    } else {
        Box::new(LogProgress)
    };
    let (scan, reports) = builder::run_shard(ws, progress.as_mut(), shard)?;
    print_summary(&scan, &reports);
    // Failure records are commits too: push whatever was built.
    if let Some(remote) = remote {
        push_branch(ws, &remote, false)?;
    }
    let failed =
        reports.iter().any(|r| builder::is_failure(&r.outcome)) || !scan.rejected.is_empty();
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_summary(scan: &builder::Scan, reports: &[JobReport]) {
    if reports.is_empty() && scan.rejected.is_empty() {
        println!("Nothing pending ({} submission(s) already built or failed).", scan.jobs.len());
        return;
    }
    println!("{:<46} {:<10} {:>8}  PROJECT / REASON", "SUBMISSION", "RESULT", "TIME");
    for r in reports {
        let (result, detail) = match &r.outcome {
            JobOutcome::Published { project_id, .. } => ("published", project_id.clone()),
            JobOutcome::Superseded { project_id } => {
                ("superseded", format!("{project_id} (a newer version is published)"))
            }
            JobOutcome::AlreadyDone { project_id } => {
                ("skipped", format!("{project_id} (already built)"))
            }
            JobOutcome::Withdrawn { project_id } => {
                ("withdrawn", format!("{project_id} (its file left the inbox)"))
            }
            JobOutcome::Failed { project_id, stage, reason } => (
                "FAILED",
                format!("{project_id}: {stage}: {}", reason.lines().next().unwrap_or("")),
            ),
            JobOutcome::Deferred { project_id, reason } => (
                "DEFERRED",
                format!("{project_id}: {} (still pending)", reason.lines().next().unwrap_or("")),
            ),
        };
        println!(
            "{:<46} {:<10} {:>6.0}ms  {}",
            truncate(&r.file, 46),
            result,
            r.duration.as_secs_f64() * 1000.0,
            detail
        );
    }
    for (path, error) in &scan.rejected {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        println!(
            "{:<46} {:<10} {:>8}  {}",
            truncate(&name, 46),
            "REJECTED",
            "-",
            error.lines().next().unwrap_or("")
        );
    }
    let published =
        reports.iter().filter(|r| matches!(r.outcome, JobOutcome::Published { .. })).count();
    let failed = reports.iter().filter(|r| builder::is_failure(&r.outcome)).count();
    println!(
        "\n{published} published, {failed} failed, {} rejected (see inbox/rejected/*.error.txt)",
        scan.rejected.len()
    );
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn status(ws: &Workspace) -> Result<ExitCode> {
    let scan = builder::scan(ws, false)?;
    let mut counts = [0usize; 3];
    println!("{:<46} {:<8} DETAIL", "SUBMISSION", "STATE");
    for (job, state) in &scan.jobs {
        let (name, detail) = builder::describe(state);
        counts[match name {
            "pending" => 0,
            "done" => 1,
            _ => 2,
        }] += 1;
        println!("{:<46} {:<8} {}", truncate(&job.file_name(), 46), name, detail);
    }
    for (path, error) in &scan.rejected {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        println!(
            "{:<46} {:<8} {}",
            truncate(&name, 46),
            "invalid",
            error.lines().next().unwrap_or("")
        );
    }
    let rejected = ws.inbox.rejected()?;
    for path in &rejected {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        println!(
            "{:<46} {:<8} see {}",
            truncate(&name, 46),
            "rejected",
            inbox::error_file_for(path).display()
        );
    }
    println!(
        "\n{} pending, {} done, {} failed, {} invalid, {} rejected",
        counts[0],
        counts[1],
        counts[2],
        scan.rejected.len(),
        rejected.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn check(repo: &Path, config_path: Option<&Path>) -> Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let path = config_path.map(Path::to_path_buf).unwrap_or_else(|| repo.join(config::FILE_NAME));
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            problems.push(e.to_string());
            Config::default()
        }
    };
    let inbox = inbox::Inbox::new(
        repo.join(&config.inbox_dir),
        config.limits.clone(),
        &config.project_id_salt,
    );
    let mut valid = 0;
    let files = inbox.list()?;
    for file in &files {
        match inbox.load(file) {
            Ok(_) => valid += 1,
            Err(e) => problems.push(e.to_string()),
        }
    }
    let layouts_dir = repo.join(&config.layouts_dir);
    match templates::Layouts::load(&layouts_dir) {
        Ok(layouts) => {
            let sample = protoforge::stages::sample_analysis(&layouts);
            problems.extend(
                layouts
                    .check(&sample)
                    .into_iter()
                    .map(|p| format!("{}: {p}", layouts_dir.display())),
            );
            if !layouts.overrides().is_empty() {
                eprintln!("layouts overridden by the repo: {}", layouts.overrides().join(", "));
            }
        }
        Err(e) => problems.push(format!("{}: {e}", layouts_dir.display())),
    }
    problems.extend(protoforge::stages::check_prompts(&repo.join(&config.prompts_dir)));
    if let Err(e) = protoforge::llm::Chain::from_config(&config.llm, |v| std::env::var(v).ok()) {
        problems.push(format!("{}: {e}", path.display()));
    }
    if let Err(e) =
        protoforge::llm::transcribe::Transcriber::from_config(&config.llm.transcription, |v| {
            std::env::var(v).ok()
        })
    {
        problems.push(format!("{}: {e}", path.display()));
    }
    if problems.is_empty() {
        println!("ok: config, {valid} inbox file(s), layouts and prompts are valid");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            println!("{p}");
        }
        println!("\n{} problem(s); {valid} of {} inbox file(s) valid", problems.len(), files.len());
        Ok(ExitCode::FAILURE)
    }
}

/// `protoforge prune`: one pass, then the history purge if configured, under
/// one builder lock.
fn prune(
    ws: &Workspace,
    dry_run: bool,
    now: chrono::DateTime<chrono::Utc>,
    push: Option<&str>,
) -> Result<ExitCode> {
    use protoforge::prune;
    let _lock = ws.lock()?;
    let remote = push.map(|r| pull(ws, r)).transpose()?;
    println!("{}", prune::prune_locked(ws, now, dry_run)?);
    if let Some(remote) = &remote {
        push_branch(ws, remote, false)?;
    }
    if ws.config.prune.purge_history && !dry_run {
        let before = ws.store.head()?;
        println!("{}", prune::purge_history_locked(ws)?);
        if let Some(remote) = &remote
            && ws.store.head()? != before
            && let Err(e) = push_branch(ws, remote, true)
        {
            // The purge was made from a head the remote no longer has, or could not be pushed
            // at all: take the remote's branch back as it is (it holds the pruned branch,
            // pushed above). A lost race is not an error, the purge runs again next time;
            // anything else is.
            remote.reset_to_remote().context("cannot fetch after the purge was not pushed")?;
            let raced =
                e.downcast_ref::<protoforge::publish::remote::RemoteError>().is_some_and(|e| {
                    matches!(e, protoforge::publish::remote::RemoteError::Raced { .. })
                });
            if !raced {
                return Err(e.context("the purged history was not pushed"));
            }
            eprintln!("warning: the purge was not pushed: {e:#}; it runs again next time");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetch the branch from `remote` and bring it into the local one.
fn pull<'w>(ws: &'w Workspace, remote: &str) -> Result<protoforge::publish::remote::Remote<'w>> {
    use protoforge::publish::remote::{Integrated, Remote};
    let sync = Remote::new(&ws.store, remote)?;
    let start = std::time::Instant::now();
    let (head, integrated) = sync.pull().with_context(|| {
        format!("cannot bring in the {} branch of `{remote}`", ws.store.branch())
    })?;
    let what = match integrated {
        Integrated::RemoteEmpty => "the remote has no such branch yet".to_owned(),
        Integrated::Same => "up to date".to_owned(),
        Integrated::FastForward => "fast-forwarded".to_owned(),
        Integrated::Ahead { commits } => format!("{commits} local commit(s) not pushed yet"),
        Integrated::Replayed(r) => format!("replayed {} local commit(s) on top", r.commits),
    };
    eprintln!(
        "fetched {} from {remote} ({}) in {:.0} ms: {what}",
        ws.store.branch(),
        head.map_or_else(|| "none".to_owned(), |h| h.to_hex_with_len(12).to_string()),
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(sync)
}

/// Push the branch to `remote` with a lease, replaying and retrying as configured.
fn push_branch(
    ws: &Workspace,
    remote: &protoforge::publish::remote::Remote<'_>,
    rewrite: bool,
) -> Result<()> {
    let options = protoforge::publish::remote::PushOptions {
        retries: ws.config.push.retries,
        backoff: Duration::from_millis(ws.config.push.backoff_ms),
        rewrite,
    };
    let pushed = remote
        .push(options)
        .with_context(|| format!("cannot push {} to `{}`", ws.store.branch(), remote.remote()))?;
    for path in &pushed.kept_theirs {
        eprintln!("note: {path} was changed by another builder too; its version was kept");
    }
    match pushed.head {
        None => eprintln!("nothing to push to {}", remote.remote()),
        Some(head) => eprintln!(
            "pushed {} to {} ({}) in {:.0} ms, {} tr{}{}",
            ws.store.branch(),
            remote.remote(),
            head.to_hex_with_len(12),
            pushed.duration.as_secs_f64() * 1000.0,
            pushed.tries,
            if pushed.tries == 1 { "y" } else { "ies" },
            if pushed.replayed > 0 {
                format!(", {} commit(s) replayed onto newer remote work", pushed.replayed)
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}

/// An RFC 3339 time from a command-line flag.
fn parse_time(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .with_context(|| {
            format!("{flag} `{text}` is not an RFC 3339 time; write it like 2026-12-31T00:00:00Z")
        })
}

/// `protoforge serve`: the static server, the builder (watching the inbox)
/// and, later, the pruner, in one process, until SIGTERM or Ctrl-C.
fn serve(
    repo: PathBuf,
    config: Option<PathBuf>,
    build: bool,
    prune: bool,
    webhook: bool,
    now: Option<chrono::DateTime<chrono::Utc>>,
    announce: Option<Vec<String>>,
) -> Result<ExitCode> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let ws = Workspace::open(&repo, config.as_deref())
        .with_context(|| format!("cannot open the site repo {}", repo.display()))?;
    let mut opts = protoforge::serve::Options::from_config(repo.clone(), &ws.config)?;
    opts.now = now;
    let webhook = (webhook && ws.config.webhook.enabled)
        .then(|| protoforge::webhook::Options::from_config(repo.clone(), &ws.config))
        .transpose()?;
    drop(ws);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Both ports are bound before anything starts: a taken port fails `serve`
    // at once, with nothing left running. The demo goes on without the form.
    let listener = runtime.block_on(protoforge::serve::bind(opts.listen))?;
    let site_port = listener.local_addr().context("the bound port of serve.listen")?.port();
    let webhook = match webhook {
        Some(mut w) => match runtime.block_on(protoforge::webhook::bind(&w)) {
            Ok(hook_listener) => {
                w.site_port_bound(site_port);
                Some((hook_listener, w))
            }
            Err(e) if announce.is_some() => {
                tracing::warn!("{e}; the demo runs without the contact form");
                None
            }
            Err(e) => return Err(anyhow::Error::from(e)),
        },
        None => None,
    };
    // What the builder is doing, for the webhook's status and events.
    let board = Arc::new(protoforge::builder::Board::default());
    let stop = Arc::new(AtomicBool::new(false));
    // The builder runs on its own thread: a gix repository is not Send, and
    // a job must never hold up a response.
    let builder = build.then(|| {
        let stop = Arc::clone(&stop);
        let (repo, config, board) = (repo.clone(), config.clone(), Arc::clone(&board));
        std::thread::Builder::new()
            .name("builder".into())
            // As much stack as `build` gets on the main thread: parsers of model output
            // recurse (bounded by validate's nesting limit).
            .stack_size(8 * 1024 * 1024)
            .spawn(move || {
                let result = Workspace::open(&repo, config.as_deref())
                    .map_err(anyhow::Error::from)
                    .and_then(|mut ws| {
                        ws.board = board;
                        Ok(builder::watch(&ws, &mut LogProgress, || stop.load(Ordering::Relaxed))?)
                    });
                if let Err(e) = result {
                    tracing::error!("the builder stopped: {e:#}; still serving");
                }
            })
            .expect("the OS can start a thread")
    });
    // The pruner too: it sleeps until the schedule's next time, then makes
    // one pass (and the purge, if configured). A pass is crash-safe, so a
    // shutdown simply stops the wait.
    let pruner = prune.then(|| {
        let stop = Arc::clone(&stop);
        let (repo, config) = (repo.clone(), config.clone());
        std::thread::Builder::new()
            .name("pruner".into())
            .spawn(move || prune_on_schedule(&repo, config.as_deref(), &stop, now))
            .expect("the OS can start a thread")
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    let result = runtime.block_on(async move {
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing the job in flight and draining connections");
            let _ = tx.send(true);
        });
        let hook = webhook.map(|(hook_listener, w)| {
            let (board, rx) = (Arc::clone(&board), rx.clone());
            let addr = hook_listener.local_addr().unwrap_or(w.listen);
            (tokio::spawn(protoforge::webhook::serve_on(hook_listener, w, board, rx)), addr)
        });
        if let Some(ids) = announce {
            let port = site_port;
            println!("\nServing on http://localhost:{port}/ (Ctrl-C to stop):");
            for id in ids {
                println!("  http://{id}.localhost:{port}/");
            }
            if let Some((_, addr)) = &hook {
                println!("Contact form (builds what you send): http://{addr}/");
            }
        }
        let served = protoforge::serve::run_on(listener, opts, rx, Duration::from_secs(10)).await;
        if let Some((task, _)) = hook
            && let Err(e) = task.await
        {
            tracing::error!("the webhook stopped: {e}");
        }
        served.map_err(anyhow::Error::from)
    });
    stop.store(true, Ordering::Relaxed);
    if let Some(handle) = builder {
        let _ = handle.join();
    }
    if let Some(handle) = pruner {
        let _ = handle.join();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The pruner's loop in `serve`, until `stop`. With a fixed `now` (tests)
/// it prunes once at start, as of that time.
fn prune_on_schedule(
    repo: &Path,
    config: Option<&Path>,
    stop: &std::sync::atomic::AtomicBool,
    fixed_now: Option<chrono::DateTime<chrono::Utc>>,
) {
    use std::sync::atomic::Ordering;
    let ws = match Workspace::open(repo, config) {
        Ok(ws) => ws,
        Err(e) => {
            tracing::error!("the pruner cannot start: {e:#}");
            return;
        }
    };
    let schedule = ws.config.prune.schedule.clone();
    let mut first = fixed_now.is_some();
    while !stop.load(Ordering::Relaxed) {
        let now = fixed_now.unwrap_or_else(chrono::Utc::now);
        if !first {
            let next = match protoforge::prune::next_run(&schedule, chrono::Utc::now()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!("the pruner stops: {e}");
                    return;
                }
            };
            tracing::info!(next = %builder::rfc3339(next), "next prune");
            // Wake every second to notice a shutdown.
            while chrono::Utc::now() < next {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        first = false;
        // The builder thread holds the builder lock; both commit by
        // compare-and-swap, so the pruner runs beside it.
        match protoforge::prune::prune_locked(&ws, now, false) {
            Ok(report) => tracing::info!("{}", report.to_string().replace('\n', "; ")),
            Err(e) => tracing::error!("prune: {e}"),
        }
        if ws.config.prune.purge_history {
            match protoforge::prune::purge_history_locked(&ws) {
                Ok(report) => tracing::info!("{}", report.to_string().replace('\n', "; ")),
                Err(e) => tracing::error!("purge: {e}"),
            }
        }
        if fixed_now.is_some() {
            return;
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn demo(dir: Option<PathBuf>, no_serve: bool) -> Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("protoforge-demo-")
            .tempdir()
            .context("cannot create a temp directory")?
            .keep(),
    };
    scaffold::init(&dir).with_context(|| format!("cannot initialise {}", dir.display()))?;
    for (rel, bytes) in templates::examples() {
        let path = dir.join("inbox").join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let ws = Workspace::open(&dir, None).context("cannot open the demo repo")?;
    let mut progress: Box<dyn Progress> = if std::io::stderr().is_terminal() {
        Box::new(BarProgress::default())
    } else {
        Box::new(LogProgress)
    };
    let (scan, reports) = builder::run_once(&ws, progress.as_mut())?;
    print_summary(&scan, &reports);
    let preview = dir.join("preview");
    let sites = builder::export(&ws, &preview, &[])?;
    println!("\nDemo site repo: {}", dir.display());
    println!("Sites on branch `{}` (open in a browser):", ws.config.branch);
    for site in &sites {
        println!("  file://{}", site.join("index.html").display());
    }
    println!("\nInspect:  git -C {} log --stat {}", dir.display(), ws.config.branch);
    let failed = reports.iter().any(|r| builder::is_failure(&r.outcome));
    if failed || sites.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    if no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    let ids = sites
        .iter()
        .filter_map(|s| s.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    drop(ws);
    serve(dir, None, true, true, true, None, Some(ids))
}

/// Log lines, for logs and pipes.
struct LogProgress;

impl Progress for LogProgress {
    fn start(&mut self, total: usize) {
        tracing::info!(pending = total, "building");
    }
    fn job_started(&mut self, job: &inbox::Job) {
        tracing::info!(file = %job.file_name(), project_id = %job.parsed.project_id, "building");
    }
    fn job_done(&mut self, r: &JobReport) {
        let ms = r.duration.as_secs_f64() * 1000.0;
        match &r.outcome {
            JobOutcome::Published { project_id, commit, files, bytes } => {
                tracing::info!(%project_id, commit = %&commit[..12.min(commit.len())], files, bytes, ms, "published")
            }
            JobOutcome::Superseded { project_id } => {
                tracing::info!(%project_id, "superseded by a newer version")
            }
            JobOutcome::AlreadyDone { project_id } => tracing::info!(%project_id, "already done"),
            JobOutcome::Withdrawn { project_id } => {
                tracing::info!(%project_id, "withdrawn: its file left the inbox (cancelled)")
            }
            JobOutcome::Failed { project_id, stage, reason } => {
                tracing::error!(%project_id, stage, ms, "failed: {reason}")
            }
            JobOutcome::Deferred { project_id, reason } => {
                tracing::warn!(%project_id, "deferred, still pending: {reason}")
            }
        }
    }
    fn finish(&mut self) {}
}

/// A progress bar, on a terminal.
#[derive(Default)]
struct BarProgress {
    bar: Option<ProgressBar>,
}

impl Progress for BarProgress {
    fn start(&mut self, total: usize) {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {elapsed} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bar = Some(bar);
    }
    fn job_started(&mut self, job: &inbox::Job) {
        if let Some(bar) = &self.bar {
            bar.set_message(job.parsed.project_id.clone());
        }
    }
    fn job_done(&mut self, r: &JobReport) {
        if let Some(bar) = &self.bar {
            if let JobOutcome::Failed { project_id, reason, .. } = &r.outcome {
                bar.println(format!(
                    "failed {project_id}: {}",
                    reason.lines().next().unwrap_or("")
                ));
            }
            bar.inc(1);
        }
    }
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
