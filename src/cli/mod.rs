//! The command line: arguments, verbs, output and exit codes.

mod api;
mod apply;
mod context;
mod control;
mod delivery;
mod error;
mod judgment;
mod local;
mod output;
mod plan;
pub(crate) mod review;
mod rollback;
mod status;
mod ui;
mod up;
mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use context::{Context, state_dir};
pub use error::{CliError, Exit};
pub use output::{Style, error_report, render_diagnostics};

/// Keelson: declarative delivery. Edit YAML in Git; Keelson plans and converges your clusters.
#[derive(Debug, Parser)]
#[command(name = "keelson", version, about, long_about = None, propagate_version = true, after_help = "Exit codes: 0 success (plan: no changes), 1 error or invalid, 2 plan has changes (with --detailed-exitcode).")]
pub struct Cli {
    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, env = "KEELSON_COLOR", hide_env_values = true)]
    pub color: ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colours on a terminal only.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour stdout.
    pub fn enabled(self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

/// Output formats for structured results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For programs; stable and documented.
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config repository: schemas, references and rules. Exit 0 valid, 1 invalid.
    Validate(ValidateArgs),
    /// Show what apply would do to the clusters, step by step, and what blocks it.
    Plan(PlanArgs),
    /// Converge the clusters: plan, confirm, then run each cluster's strategy safely.
    Apply(ApplyArgs),
    /// Post the plan of a pull request as comments (edited in place) and a commit status.
    PrComment(PrCommentArgs),
    /// The GitOps daemon: watch a Git branch, reconcile continuously, serve the HTTP API.
    Up(UpArgs),
    /// Per cluster: server groups, traffic, health, version, lock, suspend, last action.
    Status(StatusArgs),
    /// The audit history: every step, rollback, suspend, lock takeover.
    History(HistoryArgs),
    /// Break-glass: stop all actuation in a scope until resumed (plans still show changes).
    Suspend(SuspendArgs),
    /// Lift a suspend.
    Resume(ScopeArgs),
    /// List cluster locks, or force-release one (audited).
    Locks(LocksArgs),
    /// Put an older healthy server group back in traffic.
    Rollback(RollbackArgs),
    /// Hold an application in an environment at a version, whatever Git says.
    #[command(disable_version_flag = true)]
    Pin(PinArgs),
    /// Lift a pin: Git's version rolls out again.
    Unpin(UnpinArgs),
    /// Mark a version bad: never deployed where vetoed; where live, rolled back.
    #[command(disable_version_flag = true)]
    Veto(VetoArgs),
    /// Lift a veto.
    #[command(disable_version_flag = true)]
    Unveto(UnvetoArgs),
    /// Approve a version where approval is required, or let a held canary go on (CLUSTER).
    // `--version` here names the version approved, not this program's.
    #[command(disable_version_flag = true)]
    Approve(ApproveArgs),
    /// Say no to a pending approval or a held canary: roll it back and veto the version.
    Reject(RejectArgs),
    /// Try again now: a cluster the flapping guard left alone, or a failed canary's spec.
    Retry(RetryArgs),
    /// Take over clusters another state store made (after a lost or replaced keelson.db).
    Adopt(AdoptArgs),
    /// Stop everything Keelson runs on the local target (or one application's clusters).
    Down(DownArgs),
    /// The dashboard in a browser for the local state (keelson up serves it too).
    Ui(UiArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell), from these definitions.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), from these definitions.
    Man,
    /// A small HTTP service for examples and tests, with flags to misbehave on purpose.
    DemoApp(DemoAppArgs),
    /// Run the local target's agent in the foreground (started on demand by other commands).
    LocalAgent(LocalAgentArgs),
}

/// Output formats of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Terraform-like text.
    Text,
    /// GitHub-flavoured markdown, as in pull request comments.
    Markdown,
    /// JSON, described by schemas/plan.schema.json.
    Json,
}

/// Arguments of `keelson plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
    /// Only this environment (repeatable).
    #[arg(long)]
    pub env: Vec<String>,
    /// Only this application (repeatable).
    #[arg(long)]
    pub app: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Also write the JSON plan here, for `apply --plan FILE`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error or when a target could
    /// not be observed.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan a change: compare with this base (a Git revision of --repo, or a directory) and
    /// mark what the change itself alters.
    #[arg(long)]
    pub base: Option<String>,
    /// With --base: the changed side (a Git revision or a directory; default: --repo as it is
    /// on disk).
    #[arg(long, requires = "base")]
    pub head: Option<String>,
    /// With --base: where the live state comes from.
    #[arg(long, value_enum, default_value_t = LiveArg::Observe, requires = "base")]
    pub live: LiveArg,
}

/// Where a review's live state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LiveArg {
    /// Observe the targets (the daemon's view).
    Observe,
    /// Assume base is deployed and converged (CI jobs that cannot reach the targets).
    Base,
}

/// Arguments of `keelson pr-comment`.
#[derive(Debug, clap::Args)]
pub struct PrCommentArgs {
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
    /// The pull request's base: a Git revision of --repo (e.g. origin/main) or a directory.
    #[arg(long)]
    pub base: String,
    /// The pull request's head: a Git revision (e.g. HEAD) or a directory.
    #[arg(long, default_value = "HEAD")]
    pub head: String,
    /// The pull request number.
    #[arg(long)]
    pub pr: u64,
    /// The repository on the forge, owner/name.
    #[arg(long, env = "GITHUB_REPOSITORY")]
    pub forge_repo: Option<String>,
    /// The forge's REST API (GitHub Enterprise: https://HOST/api/v3; Gitea: https://HOST/api/v1).
    #[arg(long, env = "GITHUB_API_URL", default_value = crate::forge::github::DEFAULT_API)]
    pub forge_url: String,
    /// File holding the forge token (else KEELSON_FORGE_TOKEN, else GITHUB_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The account the token acts as: only its comments are taken as Keelson's (default: what
    /// the forge says; in GitHub Actions, github-actions[bot]).
    #[arg(long, env = "KEELSON_FORGE_USER")]
    pub forge_user: Option<String>,
    /// Only this environment (repeatable); the comments are then this scope's own.
    #[arg(long)]
    pub env: Vec<String>,
    /// Where the live state comes from.
    #[arg(long, value_enum, default_value_t = LiveArg::Observe)]
    pub live: LiveArg,
    /// Where the whole plan can be read (default: this GitHub Actions run, when in one).
    #[arg(long)]
    pub plan_url: Option<String>,
    /// Print the comments instead of posting them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where the config repository and Keelson's state are (shared by most verbs).
#[derive(Debug, clap::Args)]
pub struct Location {
    /// The config repository.
    #[arg(
        long,
        default_value = ".",
        env = "KEELSON_REPO",
        hide_env_values = true
    )]
    pub repo: PathBuf,
    /// Where Keelson keeps its state (default: <repo>/.keelson).
    #[arg(long, env = "KEELSON_STATE_DIR", hide_env_values = true)]
    pub state_dir: Option<PathBuf>,
    /// A shared state store, `postgres://USER@HOST:PORT/DATABASE` (default: SQLite in the state
    /// directory); its password in KEELSON_STORE_PASSWORD_FILE or KEELSON_STORE_PASSWORD.
    #[arg(long, env = "KEELSON_STORE", hide_env_values = true)]
    pub store: Option<String>,
}

/// Arguments of `keelson apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
    /// Only this environment (repeatable).
    #[arg(long)]
    pub env: Vec<String>,
    /// Only this application (repeatable).
    #[arg(long)]
    pub app: Vec<String>,
    /// Execute exactly this plan (from `plan --out`), or refuse it if stale.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Clusters moved at once.
    #[arg(long, default_value_t = 4)]
    pub parallelism: usize,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Arguments of `keelson up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The config repository: a local path, file://, https:// or ssh:// URL.
    #[arg(
        long,
        default_value = ".",
        env = "KEELSON_REPO",
        hide_env_values = true
    )]
    pub repo: String,
    /// The branch to follow.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// A subdirectory of the repository holding the specs.
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// How often to fetch.
    #[arg(long, default_value = "30s")]
    pub interval: crate::spec::Duration,
    /// How often to check for drift even without a new commit.
    #[arg(long, default_value = "1m")]
    pub drift_interval: crate::spec::Duration,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// Who may read the dashboard and the status.
    #[command(flatten)]
    pub reads: ReadArgs,
    /// Read the working directory instead of Git, and re-plan when a spec file is saved.
    #[arg(long)]
    pub watch_files: bool,
    /// Where Keelson keeps its state (default: <repo>/.keelson, or ./.keelson for a URL).
    #[arg(long, env = "KEELSON_STATE_DIR", hide_env_values = true)]
    pub state_dir: Option<PathBuf>,
    /// A shared state store for several replicas, `postgres://USER@HOST:PORT/DATABASE`
    /// (default: SQLite in the state directory); its password in KEELSON_STORE_PASSWORD_FILE
    /// or KEELSON_STORE_PASSWORD.
    #[arg(long, env = "KEELSON_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// This replica's name in locks, history and status (default: host and process id).
    #[arg(long, env = "KEELSON_REPLICA")]
    pub replica: Option<String>,
    /// Clusters moved at once.
    #[arg(long, default_value_t = 4)]
    pub parallelism: usize,
    /// File holding the API bearer token (else KEELSON_API_TOKEN).
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// File holding the GitHub webhook secret (else KEELSON_WEBHOOK_SECRET).
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding a token for https remotes (else KEELSON_GIT_TOKEN).
    #[arg(long)]
    pub git_token_file: Option<PathBuf>,
    /// Private key for ssh remotes.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// OpenSSH known_hosts file for ssh remotes' host keys (else ~/.ssh/known_hosts).
    #[arg(long, env = "KEELSON_SSH_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// The forge's REST API, for plan comments on pull_request webhooks (needs a token).
    #[arg(long, env = "KEELSON_FORGE_URL", default_value = crate::forge::github::DEFAULT_API)]
    pub forge_url: String,
    /// File holding the forge token (else KEELSON_FORGE_TOKEN, else GITHUB_TOKEN).
    #[arg(long)]
    pub forge_token_file: Option<PathBuf>,
    /// The account the forge token acts as: only its comments are taken as Keelson's
    /// (default: what the forge says).
    #[arg(long, env = "KEELSON_FORGE_USER")]
    pub forge_user: Option<String>,
    /// The repository (`owner/name`) whose webhooks this daemon acts on; events for any other
    /// are ignored. Default: the one `--repo` names when it is a forge URL.
    #[arg(long, env = "KEELSON_FORGE_REPO")]
    pub forge_repo: Option<String>,
    /// How long a client may take to send a request's head or body, or stay idle.
    #[arg(long, default_value = "10s")]
    pub client_timeout: crate::spec::Duration,
    /// Connections served at once (more wait in the backlog).
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
}

/// Arguments of `keelson status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A running daemon's API (`keelson up`); without it the local state store is used.
    #[arg(long, env = "KEELSON_SERVER", hide_env_values = true)]
    pub server: Option<String>,

    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `keelson history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
    /// Only this cluster (`name`, `env/name` or `env/target/name`).
    #[arg(long)]
    pub cluster: Option<String>,
    /// How many entries, newest last.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// A suspend scope: at most one of environment, application, cluster; none means global.
#[derive(Debug, clap::Args)]
pub struct ScopeArgs {
    /// A running daemon's API (`keelson up`); without it the local state store is used.
    #[arg(long, env = "KEELSON_SERVER", hide_env_values = true)]
    pub server: Option<String>,

    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
    /// An environment.
    #[arg(long)]
    pub env: Option<String>,
    /// An application.
    #[arg(long)]
    pub app: Option<String>,
    /// A cluster (`name`, `env/name` or `env/target/name`).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Arguments of `keelson suspend`.
#[derive(Debug, clap::Args)]
pub struct SuspendArgs {
    /// Where.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Why (recorded and shown in every plan).
    #[arg(long)]
    pub reason: String,
    /// Lift by itself after this long, e.g. 2h.
    #[arg(long = "for")]
    pub r#for: Option<crate::spec::Duration>,
    /// Suspend a scope the specs do not declare (e.g. one about to be added).
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `keelson locks`.
#[derive(Debug, clap::Args)]
pub struct LocksArgs {
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
    /// What to do (default: list).
    #[command(subcommand)]
    pub command: Option<LocksCommand>,
}

/// `keelson locks release`.
#[derive(Debug, Subcommand)]
pub enum LocksCommand {
    /// Release a cluster's lock whoever holds it (audited).
    Release {
        /// The cluster.
        cluster: String,
        /// Required: you are taking the lock from someone.
        #[arg(long)]
        force: bool,
    },
}

/// Arguments of `keelson rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The cluster (`name`, `env/name` or `env/target/name`).
    pub cluster: String,
    /// The server group to go back to, e.g. v003 (default: the newest healthy disabled one).
    #[arg(long)]
    pub to: Option<String>,
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
}

/// Arguments of `keelson approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// A cluster whose canary analysis holds (`name`, `env/name` or `env/target/name`): its
    /// rollout goes on.
    #[arg(conflicts_with_all = ["env", "app", "version"], required_unless_present_all = ["env", "app"])]
    pub cluster: Option<String>,
    /// The environment whose approval a version needs.
    #[arg(long, requires = "app")]
    pub env: Option<String>,
    /// The application.
    #[arg(long, requires = "env")]
    pub app: Option<String>,
    /// The version (default: the one the specs ask for).
    #[arg(long)]
    pub version: Option<String>,
    /// Who acts and where.
    #[command(flatten)]
    pub actor: ActorArgs,
}

/// Arguments of `keelson reject`.
#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    /// The application (with --env), or a cluster whose canary holds (`name`, `env/name` or
    /// `env/target/name`).
    pub cluster: String,
    /// The environment: reject what the application awaits there (approval or a held canary).
    #[arg(long)]
    pub env: Option<String>,
    /// Why (kept in the history and shown by `status`).
    #[arg(long)]
    pub reason: String,
    /// Who acts and where.
    #[command(flatten)]
    pub actor: ActorArgs,
}

/// Arguments of `keelson retry`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// The application (with --env), or a cluster (`name`, `env/name` or `env/target/name`).
    pub cluster: String,
    /// The environment: try the application's clusters there again.
    #[arg(long)]
    pub env: Option<String>,
    /// Who acts and where.
    #[command(flatten)]
    pub actor: ActorArgs,
}

/// Who acts on a delivery control, and where: the local state store or a daemon's API.
#[derive(Debug, clap::Args)]
pub struct ActorArgs {
    /// A running daemon's API (`keelson up`); without it the local state store is used.
    #[arg(long, env = "KEELSON_SERVER", hide_env_values = true)]
    pub server: Option<String>,
    /// Act as this user (needs `allowAs: true` in the identities file; through --server the
    /// API token says who acts).
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
}

/// Arguments of `keelson pin`.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// The application.
    pub app: String,
    /// The version to hold it at.
    pub version: String,
    /// The environment.
    #[arg(long)]
    pub env: String,
    /// Why (recorded, and shown in every plan).
    #[arg(long)]
    pub reason: String,
    /// Lapse by itself: after a duration (4h) or at a time (2026-12-07T09:00:00Z).
    #[arg(long, value_parser = crate::controls::parse_until)]
    pub until: Option<jiff::Timestamp>,
    /// Pin a version Keelson never saw (Git does not name it and it never ran).
    #[arg(long)]
    pub force: bool,
    /// Who acts and where.
    #[command(flatten)]
    pub actor: ActorArgs,
}

/// Who may read the dashboard and the status from another host.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Open the dashboard and the status to every host that can connect. Without it, a
    /// connection from another host (or through a proxy) needs an API token.
    #[arg(long, env = "KEELSON_PUBLIC_READ")]
    pub public_read: bool,
}

/// Arguments of `keelson ui`.
#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
    /// Where to serve it (loopback by default; from other hosts it needs --public-read).
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub listen: String,
    /// Who may read it.
    #[command(flatten)]
    pub reads: ReadArgs,
    /// How often to observe the targets again.
    #[arg(long, default_value = "1s")]
    pub interval: crate::spec::Duration,
}

/// Arguments of `keelson completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `keelson unpin`.
#[derive(Debug, clap::Args)]
pub struct UnpinArgs {
    /// The application.
    pub app: String,
    /// The environment.
    #[arg(long)]
    pub env: String,
    /// Who acts and where.
    #[command(flatten)]
    pub actor: ActorArgs,
}

/// Arguments of `keelson veto`.
#[derive(Debug, clap::Args)]
pub struct VetoArgs {
    /// The application.
    pub app: String,
    /// The version.
    pub version: String,
    /// Only in this environment (default: every environment).
    #[arg(long)]
    pub env: Option<String>,
    /// Why (recorded, and shown in every plan).
    #[arg(long)]
    pub reason: String,
    /// Who acts and where.
    #[command(flatten)]
    pub actor: ActorArgs,
}

/// Arguments of `keelson unveto`.
#[derive(Debug, clap::Args)]
pub struct UnvetoArgs {
    /// The application.
    pub app: String,
    /// The version.
    pub version: String,
    /// The environment it was vetoed in (default: the veto for every environment).
    #[arg(long)]
    pub env: Option<String>,
    /// Who acts and where.
    #[command(flatten)]
    pub actor: ActorArgs,
}

/// Arguments of `keelson adopt`.
#[derive(Debug, clap::Args)]
pub struct AdoptArgs {
    /// The cluster (`name`, `env/name` or `env/target/name`).
    pub cluster: String,
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: String,
    /// The config repository and the state directory.
    #[command(flatten)]
    pub location: Location,
}

/// Arguments of `keelson down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The config repository (its state directory holds the local target).
    #[arg(
        long,
        default_value = ".",
        env = "KEELSON_REPO",
        hide_env_values = true
    )]
    pub repo: PathBuf,
    /// Where Keelson keeps its state (default: <repo>/.keelson).
    #[arg(long, env = "KEELSON_STATE_DIR", hide_env_values = true)]
    pub state_dir: Option<PathBuf>,
    /// Only this application's clusters.
    #[arg(long)]
    pub app: Option<String>,
}

/// Arguments of `keelson demo-app`.
#[derive(Debug, clap::Args)]
pub struct DemoAppArgs {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long, env = "PORT")]
    pub port: u16,
    /// Never report healthy on /healthz.
    #[arg(long)]
    pub fail_health: bool,
    /// Report healthy only after this long, e.g. 2s.
    #[arg(long)]
    pub healthy_after: Option<crate::spec::Duration>,
    /// Share of requests to / that fail with 500, e.g. 0.3.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Extra latency per request, e.g. 50ms.
    #[arg(long)]
    pub latency: Option<crate::spec::Duration>,
    /// Exit with status 1 after this long, e.g. 10s.
    #[arg(long)]
    pub crash_after: Option<crate::spec::Duration>,
}

/// Arguments of `keelson local-agent`.
#[derive(Debug, clap::Args)]
pub struct LocalAgentArgs {
    /// The agent's directory (normally <state-dir>/local).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Where to serve the proxies' Prometheus metrics (`GET /metrics`), or `off`. The CLI
    /// starts the agent with its own environment, so KEELSON_LOCAL_METRICS set for `apply`
    /// reaches it.
    #[arg(long, env = "KEELSON_LOCAL_METRICS", default_value = "127.0.0.1:9464")]
    pub metrics_address: String,
}

/// Arguments of `keelson validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The config repository.
    #[arg(
        long,
        default_value = ".",
        env = "KEELSON_REPO",
        hide_env_values = true
    )]
    pub repo: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl Cli {
    /// How output looks, from `--color`.
    pub fn style(&self) -> Style {
        Style {
            color: self.color.enabled(),
        }
    }
}

/// Runs a parsed command line; `main` turns the result into the exit code.
pub fn run(cli: Cli) -> Result<Exit, CliError> {
    let style = cli.style();
    // Verbs that print and end die quietly when their reader goes (`keelson status | head -1`),
    // as other command-line tools do, instead of panicking on a broken pipe. Servers keep
    // ignoring SIGPIPE.
    if matches!(
        cli.command,
        Command::Validate(_)
            | Command::Plan(_)
            | Command::Status(_)
            | Command::History(_)
            | Command::Locks(_)
            | Command::Completions(_)
            | Command::Man
    ) {
        // SAFETY: setting a signal's disposition to its default has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| CliError::Runtime { source })?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Validate(args) => validate::run(&args, style),
            Command::Plan(args) => plan::run(&args, style).await,
            Command::Apply(args) => apply::run(&args, style).await,
            Command::PrComment(args) => review::pr_comment(&args, style).await,
            Command::Up(args) => up::run_up(&args).await,
            Command::Status(args) => status::status(&args, style).await,
            Command::History(args) => status::history(&args).await,
            Command::Suspend(args) => control::suspend(&args).await,
            Command::Resume(args) => control::resume(&args).await,
            Command::Locks(args) => control::locks(&args).await,
            Command::Rollback(args) => rollback::rollback(&args, style).await,
            Command::Approve(args) => match &args.cluster {
                Some(c) => judgment::approve(&args.actor.location, c),
                None => control::approve(&args).await,
            },
            Command::Reject(args) => match args.env {
                Some(_) => delivery::reject(&args).await,
                None => judgment::reject(&args).await,
            },
            Command::Retry(args) => match args.env {
                Some(_) => delivery::retry(&args).await,
                None => judgment::retry(&args),
            },
            Command::Pin(args) => delivery::pin(&args).await,
            Command::Unpin(args) => delivery::unpin(&args).await,
            Command::Veto(args) => delivery::veto(&args).await,
            Command::Unveto(args) => delivery::unveto(&args).await,
            Command::Adopt(args) => control::adopt(&args).await,
            Command::Down(args) => local::down(&args).await,
            Command::DemoApp(args) => local::demo_app(&args).await,
            Command::Ui(args) => ui::ui(&args).await,
            Command::Completions(args) => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(args.shell, &mut cmd, "keelson", &mut std::io::stdout());
                Ok(Exit::Success)
            }
            Command::Man => {
                let cmd = <Cli as clap::CommandFactory>::command();
                let mut out = Vec::new();
                clap_mangen::Man::new(cmd)
                    .render(&mut out)
                    .map_err(|source| CliError::File {
                        action: "write",
                        path: "stdout".into(),
                        source,
                    })?;
                std::io::Write::write_all(&mut std::io::stdout(), &out).map_err(|source| {
                    CliError::File {
                        action: "write",
                        path: "stdout".into(),
                        source,
                    }
                })?;
                Ok(Exit::Success)
            }
            Command::LocalAgent(args) => local::local_agent(&args).await,
        }
    });
    // Do not wait for background tasks (probes, pooled connections) at exit.
    runtime.shutdown_background();
    result
}
