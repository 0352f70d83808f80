//! The `tagfence` command line: clap arguments → validated inputs → the core → output and an
//! exit code.
//!
//! Exit codes (one scheme for every command, as kubectl and grep use it):
//! - 0: success (and, for `plan`, also when there are changes unless `--exit-code` is given);
//! - 1: `plan --exit-code` found changes;
//! - 2: any error, including clap's usage errors. Errors go to stderr, one line, lowercase.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

use crate::azure::auth::IdentityEnv;
use crate::config::{Config, RunArgs};
pub use crate::config::{FitArg, LimitArgs, SelectionArgs, Slash31Arg};
use crate::core::desired::{self, Selection};
use crate::core::live::{self, LiveAcl};
use crate::core::plan::{self, PlanInput, TagGuard};
use crate::core::profiles;
use crate::core::render;
use crate::core::service_tags::ServiceTags;
use crate::run::{RunRequest, Runner};
use crate::server;

/// Keeps Azure Key Vault firewalls in step with Azure Service Tags.
#[derive(Debug, Parser)]
#[command(name = "tagfence", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 success, 1 `plan --exit-code` found changes, 2 error.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan the firewall change for one vault from a Service Tags file (writes nothing).
    Plan(PlanArgs),
    /// Reconcile the configured vaults with the current Service Tags through ARM.
    Apply(ApplyArgs),
    /// List the tags of a Service Tags file, or the prefixes of some of them.
    Tags(TagsArgs),
    /// Show what the state remembers: the document applied and each vault's last run.
    Status(StatusArgs),
    /// Run as the Azure Functions custom handler (the host starts this).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub run: RunArgs,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on, on 127.0.0.1; the Functions host passes a fresh one in
    /// FUNCTIONS_CUSTOMHANDLER_PORT.
    #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
    pub port: Option<u16>,

    /// The timer's NCRONTAB schedule (six fields, Sunday = 0), as given to the host in the
    /// TAGFENCE_SCHEDULE app setting; checked at start-up and reported with the next run.
    #[arg(long, env = "TAGFENCE_SCHEDULE", default_value = crate::server::schedule::DEFAULT_SCHEDULE)]
    pub schedule: String,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Plan against the live vaults but write nothing.
    #[arg(long, env = "TAGFENCE_DRY_RUN")]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The Service Tags document (download file or Discovery API response; JSON or gzip; `-`
    /// for stdin).
    #[arg(long, value_name = "FILE")]
    pub service_tags: PathBuf,

    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// The vault as ARM's GET returns it (only `properties.networkAcls` is used); without it
    /// the vault is taken to have no rules.
    #[arg(long, value_name = "FILE")]
    pub live: Option<PathBuf>,

    /// The rules tagfence applied last time, as a JSON array of CIDRs: only these are ever
    /// removed. Without it nothing is removed.
    #[arg(long, value_name = "FILE")]
    pub last_applied: Option<PathBuf>,

    /// Also remove unmanaged rules (rules neither selected nor applied by tagfence).
    #[arg(long)]
    pub prune: bool,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Exit with 1 when the plan has changes (0 when it has none).
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Args)]
pub struct TagsArgs {
    /// The Service Tags document (JSON or gzip; `-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub service_tags: PathBuf,

    /// Show this tag's prefixes instead of the listing (repeatable).
    #[arg(long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

impl SelectionArgs {
    /// Checks the static rules and builds the selection.
    ///
    /// # Errors
    /// The first static rule that is not a public IPv4 address or prefix.
    pub fn to_selection(&self) -> Result<Selection> {
        let static_rules = self
            .static_rules
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| desired::parse_static_rule(r).context("invalid --static-rule"))
            .collect::<Result<Vec<_>>>()?;
        let named: Vec<String> = self
            .tags
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        let tags = profiles::expand(&named).context("invalid --tag")?;
        Ok(Selection {
            tags,
            static_rules,
            grace: Vec::new(),
        })
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Any failure, with context naming what was being done; `main` prints it and exits 2.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Plan(args) => run_plan(&args),
        Command::Apply(args) => run_apply(&args),
        Command::Tags(args) => run_tags(&args),
        Command::Status(args) => run_status(&args),
        Command::Serve(args) => run_serve(args),
    }
}

/// Logs for the Functions host: JSON lines on stdout (the host logs stdout at Information and
/// every stderr line as an Error), each carrying the invocation's span fields.
pub fn init_server_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAGFENCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tagfence=info,warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(io::stdout)
        .try_init();
}

fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    init_server_logging();
    let port = args
        .port
        .context("FUNCTIONS_CUSTOMHANDLER_PORT is not set; the Functions host sets it (use --port to run locally)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
        let schedule = server::schedule::Schedule::parse(&args.schedule);
        match &schedule {
            Ok(schedule) => tracing::info!(
                schedule = %schedule.expression,
                description = %schedule.describe(),
                next_run_utc = %schedule.next_after(chrono::Utc::now()).map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
                "timer schedule"
            ),
            Err(error) => tracing::error!(%error, "the timer schedule is invalid; the host will not fire the timer"),
        }
        let config = Config::from_args(&args.run).map_err(|e| format!("reading the configuration: {e}"));
        if let Err(error) = &config {
            tracing::error!(%error, "invalid configuration");
        }
        let state = server::AppState::new(config, IdentityEnv::from_process(), schedule);
        tracing::info!(port, "tagfence serving");
        server::serve(listener, state, server::shutdown_signal()).await.context("serving")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Progress logs for commands that talk to Azure: to stderr, so that stdout carries only the
/// report; `TAGFENCE_LOG` filters (default `info`).
pub fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAGFENCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tagfence=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_apply(args: &ApplyArgs) -> Result<ExitCode> {
    init_cli_logging();
    let config = Config::from_args(&args.run).context("reading the configuration")?;
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner
            .run(&RunRequest {
                only: None,
                dry_run: args.dry_run,
                trigger: "cli",
            })
            .await
    })?;
    let text = match args.output {
        OutputFormat::Text => report.to_text(),
        OutputFormat::Json => {
            let mut json =
                serde_json::to_string_pretty(&report.to_json()).context("encoding the report")?;
            json.push('\n');
            json
        }
    };
    write_stdout(&text)?;
    Ok(if report.failures() > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_status(args: &StatusArgs) -> Result<ExitCode> {
    init_cli_logging();
    let config = Config::from_args(&args.run).context("reading the configuration")?;
    let runtime = runtime()?;
    let status = runtime.block_on(async {
        let runner = Runner::new(config, &IdentityEnv::from_process())?;
        runner.status().await
    })?;
    let text = match args.output {
        OutputFormat::Text => status.to_text(),
        OutputFormat::Json => {
            let mut json =
                serde_json::to_string_pretty(&status.to_json()).context("encoding the status")?;
            json.push('\n');
            json
        }
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The bytes of a file (memory-mapped when large), or of stdin for `-`.
pub enum Input {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Mapped(map) => map,
            Input::Owned(bytes) => bytes,
        }
    }
}

/// Reads `path` (or stdin for `-`).
///
/// # Errors
/// When the file cannot be opened or read.
pub fn read_input(path: &Path) -> io::Result<Input> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        io::stdin().lock().read_to_end(&mut bytes)?;
        return Ok(Input::Owned(bytes));
    }
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    // Mapping a 4 MB file is ~10× cheaper than reading it into a fresh buffer (BENCHMARKS.md).
    // The file is only read while it is parsed, by this process, right after opening it.
    if meta.is_file() && meta.len() >= 1 << 20 {
        // SAFETY: the mapping is read-only and lives only for this parse. Another process
        // truncating the file meanwhile could fault the read; for a CLI reading its own input
        // file that is the same risk as ripgrep's mmap search and is accepted for the speed.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        return Ok(Input::Mapped(map));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(Input::Owned(bytes))
}

/// Reads a Service Tags document; with `only`, the prefixes of those tags only (the rest of the
/// document is still checked as JSON).
fn load_service_tags(path: &Path, only: Option<&[String]>) -> Result<ServiceTags> {
    let context = || format!("reading service tags from {}", path.display());
    let bytes = read_input(path).with_context(context)?;
    match only {
        Some(names) => ServiceTags::parse_only(&bytes, names),
        None => ServiceTags::parse(&bytes),
    }
    .with_context(context)
}

/// The largest vault document `plan --live` reads: a vault of 1,000 rules is about 50 KB.
const MAX_VAULT_BYTES: u64 = 16 << 20;

fn load_live(path: &Path) -> Result<LiveAcl> {
    let context = || format!("reading the vault from {}", path.display());
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).with_context(context)?)
    };
    reader
        .take(MAX_VAULT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(context)?;
    if bytes.len() as u64 > MAX_VAULT_BYTES {
        bail!(
            "{}: it is larger than {} MiB, which no vault document is",
            context(),
            MAX_VAULT_BYTES >> 20
        );
    }
    LiveAcl::from_vault_json(&bytes).with_context(|| {
        format!(
            "reading the vault from {} (expected one vault object as ARM's GET returns it)",
            path.display()
        )
    })
}

fn load_last_applied(path: &Path) -> Result<Vec<Ipv4Net>> {
    let context = || format!("reading the last-applied rules from {}", path.display());
    let bytes = read_input(path).with_context(context)?;
    let values: Vec<String> = serde_json::from_slice(&bytes)
        .context("expected a JSON array of CIDR strings")
        .with_context(context)?;
    live::normalise_rules(&values)
        .map_err(|(value, reason)| {
            anyhow::anyhow!("'{value}' is not a rule tagfence can read: {reason}")
        })
        .with_context(context)
}

fn run_plan(args: &PlanArgs) -> Result<ExitCode> {
    let selection = args.selection.to_selection()?;
    let limits = args.limits.to_limits();
    // The plan needs the selected and envelope tags only.
    let needed: Vec<String> = selection
        .tags
        .iter()
        .chain(&limits.envelope)
        .cloned()
        .collect();
    let tags = load_service_tags(&args.service_tags, Some(&needed))?;
    let live = match &args.live {
        Some(path) => load_live(path)?,
        None => LiveAcl::empty(),
    };
    let last_applied = args
        .last_applied
        .as_deref()
        .map(load_last_applied)
        .transpose()?;
    if live.public_access_disabled() {
        eprintln!("tagfence: warning: the vault's publicNetworkAccess is Disabled, so its IP rules have no effect");
    }
    if args.live.is_some() && !live.is_whole() {
        let missing: Vec<&str> = live.missing.iter().map(|f| f.path()).collect();
        eprintln!("tagfence: warning: the vault lacks {} (missing, null or not of its type): apply refuses to write from such a read", missing.join(" and "));
    }
    for rule in &live.unreadable {
        eprintln!(
            "tagfence: warning: the vault holds IP rule '{}', which tagfence cannot read ({}); it is kept as it is and counts against the limit",
            rule.value, rule.reason
        );
    }
    let mut plan = plan::plan_vault(PlanInput {
        tags: &tags,
        selection: &selection,
        limits: &limits,
        live: &live.ip_rules,
        unreadable: live.unreadable.len(),
        owned: last_applied.as_deref(),
        prune: args.prune,
        adopt: false,
        recorded: None,
        tag_guard: TagGuard::default(),
    })
    .context("planning the firewall change")?;
    plan.vault = live.vault_name.clone();

    let text = match args.output {
        OutputFormat::Text => render::plan_text(&plan),
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(&render::plan_json(&plan))
                .context("encoding the plan")?;
            json.push('\n');
            json
        }
    };
    write_stdout(&text)?;
    Ok(if args.exit_code && plan.has_changes() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_tags(args: &TagsArgs) -> Result<ExitCode> {
    let doc = load_service_tags(&args.service_tags, None)?;
    let mut detail = Vec::with_capacity(args.tags.len());
    for name in &args.tags {
        let Some(tag) = doc.find(name.trim()) else {
            let suggestions = desired::close_names(&doc, name.trim());
            bail!(
                "{}",
                desired::DesireError::UnknownTag {
                    name: name.trim().to_owned(),
                    suggestions
                }
            );
        };
        detail.push(tag);
    }
    let text = match args.output {
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(&render::tags_json(&doc, &detail))
                .context("encoding the tag listing")?;
            json.push('\n');
            json
        }
        OutputFormat::Text if detail.is_empty() => render::tags_table(&doc),
        OutputFormat::Text => detail
            .iter()
            .map(render::tag_detail)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes all of `text` to stdout. A closed pipe (`tagfence tags | head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(err).context("writing to stdout")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::desired::Limits;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tagfence").chain(args.iter().copied()))
    }

    #[test]
    fn plan_flags_have_their_documented_defaults() {
        let Command::Plan(args) =
            parse(&["plan", "--service-tags", "f.json", "--tag", "AzureDevOps"])
                .unwrap()
                .command
        else {
            panic!("not a plan");
        };
        let limits = args.limits.to_limits();
        assert_eq!(limits, Limits::default());
        assert_eq!(args.output, OutputFormat::Text);
        assert!(!args.exit_code && !args.prune);
    }

    #[test]
    fn repeatable_and_comma_separated_flags_collect() {
        let Command::Plan(args) = parse(&[
            "plan",
            "--service-tags",
            "f",
            "--tag",
            "A,B",
            "--tag",
            "C",
            "--static-rule",
            "52.1.2.3",
            "--envelope",
            "AzureCloud",
        ])
        .unwrap()
        .command
        else {
            panic!("not a plan");
        };
        assert_eq!(args.selection.tags, ["A", "B", "C"]);
        let selection = args.selection.to_selection().unwrap();
        assert_eq!(selection.static_rules[0].to_string(), "52.1.2.3/32");
        assert_eq!(args.limits.envelope, ["AzureCloud"]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["plan", "--service-tags", "f", "--fit", "lossy"][..],
            &["plan", "--service-tags", "f", "--max-rules", "-1"],
            &[
                "plan",
                "--service-tags",
                "f",
                "--max-remove-fraction",
                "1.5",
            ],
            &["plan"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn a_private_static_rule_is_refused_with_its_reason() {
        let Command::Plan(args) = parse(&[
            "plan",
            "--service-tags",
            "f",
            "--static-rule",
            "192.168.1.10",
        ])
        .unwrap()
        .command
        else {
            panic!("not a plan");
        };
        let err = args.selection.to_selection().unwrap_err();
        assert_eq!(format!("{err:#}"), "invalid --static-rule: '192.168.1.10' overlaps the reserved range 192.168.0.0/16 (private network, RFC 1918); key vault refuses it");
    }
}
