//! The `provhost` command line: the clap types of every command and the dispatch to one
//! file per command family (`add`, `db`, `request`, `log`, `computer`, `image`, `user`,
//! `node`, `check`, `call`, `test`, `serve`, `status`, `docs`, `init`); `exit` turns outcomes into
//! exit codes and messages, `list` prints listings, `progress` draws progress at a
//! terminal, `notify` talks to systemd. Binary side: command bodies use `anyhow` and print;
//! what they read and write goes through the library (`provhost::db`, `provhost::host`, …).

mod add;
mod call;
mod check;
mod computer;
mod db;
mod docs;
pub mod exit;
mod image;
mod init;
mod list;
mod log;
mod node;
mod notify;
mod progress;
mod request;
mod serve;
mod sshkey;
mod status;
mod test;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use provhost::db::{Db, DbError, DbOptions, OpenMode, RetryPolicy};
use provhost::Config;

#[derive(Parser)]
#[command(
    name = "provhost",
    version,
    about = "Provision computers for reservations; hypervisor and OS specifics live in Rhai scripts",
    after_help = exit::HELP
)]
pub struct Cli {
    /// Configuration file (default: ./provhost.toml if present, else
    /// /etc/provhost/provhost.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "PROVHOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Compile every module script and check it against the routine contract; list every
    /// error and exit 3 if any fails. Then warn of scripts no database row names and used
    /// rows no script serves (exit code unchanged). `provhost loadstates` lists the
    /// load-state names `ctx.loadlog` takes.
    Check {
        /// Files or folders (default: the configured scripts folder, then a cross-check
        /// with the database's provisioning and OS rows when it can be opened).
        paths: Vec<PathBuf>,
        #[command(flatten)]
        url: UrlArg,
    },
    /// List VCL's load-state names (`computerloadstate`), the names `ctx.loadlog(name,
    /// text)` accepts, with their meaning (also in docs/script-api.md).
    Loadstates,
    /// Run one routine of one module and print what it returned (as JSON).
    Call(call::CallArgs),
    /// Run the modules' unit tests (`NAME.test.rhai` beside `NAME.rhai`) against a
    /// recording fake host; one line per test, exit 1 if one failed (docs/script-tests.md).
    Test(test::TestArgs),
    /// The database: `db init`.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Add users, images, computers, and provisioning and OS modules.
    Add {
        #[command(subcommand)]
        command: add::AddCommand,
    },
    /// Images: `image list`, `image build-test` (the image library's test image).
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Computers: `computer list`, `computer set-state NAME available|maintenance`.
    Computer {
        #[command(subcommand)]
        command: computer::ComputerCommand,
    },
    /// Users: `user list`.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Management nodes: `node list` (with the daemon holding each).
    Node {
        #[command(subcommand)]
        command: node::NodeCommand,
    },
    /// Reservation requests: `request new|connect|end|cancel|list`.
    Request {
        #[command(subcommand)]
        command: request::RequestCommand,
    },
    /// The load-log timeline of a reservation, with elapsed times (`--follow`: as it grows,
    /// until the request ends).
    Log(log::LogArgs),
    /// Create what a new management node needs: configuration file, data folder, the
    /// node's SSH key (0600 in a 0700 folder), the SQLite database. Keeps (and names)
    /// what exists; never overwrites.
    Init(init::InitArgs),
    /// Print shell completions: `provhost completions bash > /etc/bash_completion.d/provhost`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The reservation life cycle on a real VM (QEMU on this machine, the test image, a
    /// user logging in over SSH), start to end, with nothing configured (a fresh SQLite
    /// database `demo.db` in the data folder). Needs root; falls back to the simulator,
    /// saying why, where VMs cannot run.
    Demo {
        /// Use the simulated computer (no VM, no root needed).
        #[arg(long)]
        sim: bool,
    },
    /// Run the management-node daemon: poll, claim, run state flows, hot-reload scripts.
    Serve {
        /// Process what is due (and what that makes due) and exit when nothing is left.
        #[arg(long)]
        once: bool,
        /// Serve the status page, its JSON and /metrics at ADDR (e.g. 127.0.0.1:8080;
        /// default: `[http] listen`, empty = off). Not loopback: needs a bearer token
        /// (`[http] token` or PROVHOST_HTTP_TOKEN).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        #[command(flatten)]
        url: UrlArg,
    },
    /// What the management nodes, computers, reservations and modules are doing now (the
    /// status page's data, from the database and what a running daemon publishes).
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        url: UrlArg,
    },
    /// Generate the script API reference from the registered functions.
    Docs {
        /// Where to write it (`-` for standard output).
        #[arg(long, default_value = "docs/script-api.md")]
        out: PathBuf,
    },
}

impl Command {
    /// The log level when `PROVHOST_LOG` does not say: `check` prints its own report (its
    /// log lines would only repeat it); the demo prints the load-log timeline, and only
    /// warnings (e.g. the KVM fallback) add to it.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Check { .. } | Command::Test(_) | Command::Completions { .. } => "off",
            Command::Init(_) => "warn",
            Command::Demo { .. } => "warn",
            _ => "info",
        }
    }

    /// A command that only reads the database and prints (a listing, the load-states, a
    /// load-log): piped into `head` or `grep -q`, it ends quietly when the reader goes, as
    /// Unix tools do, instead of panicking on the closed pipe. Commands that run routines,
    /// serve or write files keep Rust's ignored SIGPIPE (a closed pipe is an error they see).
    pub fn prints_only(&self) -> bool {
        match self {
            Command::Loadstates | Command::Log { .. } => true,
            Command::Computer { command } => {
                matches!(command, computer::ComputerCommand::List { .. })
            }
            Command::Image { command } => matches!(command, image::ImageCommand::List { .. }),
            Command::User { command } => matches!(command, user::UserCommand::List { .. }),
            Command::Node { command } => matches!(command, node::NodeCommand::List { .. }),
            Command::Request { command } => matches!(command, request::RequestCommand::List { .. }),
            _ => false,
        }
    }
}

/// Let a closed stdout end the process silently (SIGPIPE's default action) for commands
/// that only print: see [`Command::prints_only`].
pub fn quiet_on_closed_pipe(command: &Command) {
    if command.prints_only() {
        // SAFETY: setting a signal's disposition to its default has no memory effects;
        // done before any thread of ours writes to a pipe.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
}

/// Where the database is: `--url`, else `[database] url`, else the SQLite file in the data folder.
#[derive(Debug, Clone, Args)]
pub struct UrlArg {
    /// Database URL (`sqlite://PATH` or `mysql://USER@HOST/DB`); default: `[database] url`
    /// in provhost.toml, else `sqlite://<data_dir>/provhost.db`.
    #[arg(long, env = "PROVHOST_DATABASE_URL")]
    pub url: Option<String>,
}

impl UrlArg {
    /// The URL to open.
    pub fn resolve(&self, config: &Config) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| config.database.url_or_default(&config.paths.data_dir))
    }
}

/// The longest a one-shot command waits for the database to answer at all (a host that
/// drops packets instead of refusing).
const CONNECT_BUDGET: Duration = Duration::from_secs(10);

/// Open the database for a one-shot command: one connection try (an unreachable server
/// fails at once, in one line; the daemon keeps its retry policy), a short wait for a
/// pooled connection, a few quick retries of each statement after that. With
/// [`OpenMode::Existing`] nothing is created: a missing SQLite file is named, with the
/// `db init` that makes it.
pub async fn open_db(url: &str, mode: OpenMode) -> anyhow::Result<Db> {
    let opts = DbOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        sqlite_busy_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
    };
    let shown = provhost::db::pool::redact_url(url);
    let db = match tokio::time::timeout(CONNECT_BUDGET, Db::open(url, opts, mode)).await {
        Ok(Ok(db)) => db,
        // One try: the last error alone says it ("cannot connect to …: Connection refused").
        Ok(Err(DbError::Unavailable { last, .. })) => return Err((*last).into()),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => anyhow::bail!(
            "cannot connect to {shown}: no answer within {} s (is the server up and reachable from here?)",
            CONNECT_BUDGET.as_secs()
        ),
    };
    Ok(db.with_retry(RetryPolicy {
        attempts: 3,
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(1),
    }))
}

/// Log lines to stderr, secrets redacted; `PROVHOST_LOG` overrides `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROVHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour codes only for a person at a terminal: a log file gets plain text, the
    // journal (JOURNAL_STREAM) plain text without timestamps and with priorities.
    let sink = provhost::prim::redact_log::stderr_sink();
    let format = match format {
        LogFormat::Text => provhost::prim::redact_log::Format::Text,
        LogFormat::Json => provhost::prim::redact_log::Format::Json,
    };
    provhost::prim::redact_log::init(format, filter, sink);
}

/// Run one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        // Before any configuration is read: init may be what writes it.
        Command::Init(args) => {
            init::run(cli.config.as_deref(), args.clone()).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            use std::io::Write as _;
            // Into memory first: clap_complete panics on a failed write; a closed pipe
            // (`| head`) is no error for us.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "provhost", &mut script);
            let mut out = std::io::stdout().lock();
            match out.write_all(&script).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    anyhow::bail!("writing the completions to standard output: {e}")
                }
                _ => return Ok(ExitCode::SUCCESS),
            }
        }
        // Copies made by the routine `call` runs get progress bars at a terminal. Not the
        // demo (it prints its timeline to stdout as it goes, which a redrawn bar would
        // overwrite) nor the daemon (its copies are logged).
        Command::Call(_) => progress::CopyProgress::install(),
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    let config_file = Config::locate(cli.config.as_deref());
    match cli.command {
        Command::Check { paths, url } => Ok(check::run(&config, paths, url).await),
        Command::Loadstates => {
            for (name, pretty) in provhost::vcl::LOAD_STATES {
                println!("{name:<24} {pretty}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Call(args) => call::run(&config, args).await,
        Command::Test(args) => test::run(&config, args),
        Command::Db { command } => {
            db::run(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Image { command } => {
            image::run(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Computer { command } => {
            computer::run(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::User { command } => {
            user::run(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Node { command } => {
            node::run(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Request { command } => {
            request::run(&config, command).await?;
            // A daemon on this machine picks the new request up at once.
            provhost::daemon::wake(&config.paths.data_dir);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { once, http, url } => {
            serve::run(&config, config_file, once, url, http).await
        }
        Command::Status { json, url } => {
            status::run(&config, json, url).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Add { command } => {
            add::run(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { sim } => {
            let mut out = std::io::stdout();
            provhost::demo::run(&config, &provhost::demo::DemoOptions { sim }, &mut out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Log(args) => log::run(&config, args).await,
        Command::Init(_) | Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        Command::Docs { out } => docs::run(&config, out),
    }
}
