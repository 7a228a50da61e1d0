//! The `vtwin` binary: `serve` and admin commands.
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use vtwin::api::{self, AppState};
use vtwin::engine::{auth::authz, inventory::Shape, Engine};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "vtwin", version, about = "A vSphere-compatible control plane for tasks and virtual storage")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Manage users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Manage datastores (with the server stopped; a running server has
    /// POST /admin/datastores/{moId}/remount).
    Datastore {
        #[command(subcommand)]
        cmd: DatastoreCmd,
    },
    /// Manage vCloud Director organizations and their users.
    Vcd {
        #[command(subcommand)]
        cmd: VcdCmd,
    },
}

#[derive(Subcommand)]
enum VcdCmd {
    /// Add a tenant organization.
    OrgAdd {
        name: String,
        #[arg(long, default_value = "")]
        full_name: String,
        #[arg(long, default_value = "./vtwin-data")]
        data_dir: PathBuf,
    },
    /// Add a user to an organization (or change its password and role).
    UserAdd {
        /// user@org
        principal: String,
        #[arg(long)]
        password: String,
        /// admin (Organization Administrator) or user (vApp User).
        #[arg(long, default_value = "user")]
        role: String,
        #[arg(long, default_value = "./vtwin-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DatastoreCmd {
    /// Bring a datastore back under a new mount path (a new volume uuid), as
    /// after a resignature or remount; VM files that name the old path are
    /// left as they are, for UpdateVirtualMachineFiles_Task.
    Remount {
        /// Datastore name (LocalDS_0).
        name: String,
        #[arg(long, default_value = "./vtwin-data")]
        data_dir: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, default_value = "./vtwin-data")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8989")]
    listen: String,
    /// Password of administrator@vsphere.local (else kept, or generated at first start).
    #[arg(long, env = "VTWIN_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Inventory shape at first start.
    #[arg(long, default_value_t = 1)]
    datacenters: usize,
    #[arg(long, default_value_t = 1)]
    hosts: usize,
    #[arg(long, default_value_t = 1)]
    datastores: usize,
    /// Completed tasks kept at most.
    #[arg(long, default_value_t = 10_000)]
    task_retention_count: usize,
    /// Completed tasks are dropped after this many seconds.
    #[arg(long, default_value_t = 86_400)]
    task_retention_secs: u64,
    /// Where the NBD server listens (exports need a ticket, see the README).
    #[arg(long, default_value = "127.0.0.1:10809")]
    nbd_listen: String,
    /// Test-control rules to load at start (a JSON array; see the README).
    #[arg(long, env = "VTWIN_TEST_CONTROL")]
    test_control: Option<PathBuf>,
    /// The store: a postgres:// URL (`?schema=NAME` for a schema of its
    /// own) for several nodes on one database; SQLite in the data directory
    /// when absent.
    #[arg(long, env = "VTWIN_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Serve the vCloud Director API here too (same certificate).
    #[arg(long)]
    vcd_listen: Option<String>,
    /// VCD tasks can be retrieved for this many seconds after they are
    /// created (their expiryTime).
    #[arg(long, default_value_t = vtwin::engine::vcd::DEFAULT_EXPIRY_SECS)]
    vcd_task_expiry: i64,
    /// This node's name among the nodes on one database (default: host
    /// name and listening port). A node restarted under the same name ends
    /// its earlier life's unfinished tasks at once.
    #[arg(long)]
    node_name: Option<String>,
    /// Seconds a node's lease lasts: the unfinished tasks of a node that
    /// stops renewing it end in error within the lease and a third.
    #[arg(long, default_value_t = vtwin::engine::node::DEFAULT_LEASE.as_secs_f64())]
    node_lease: f64,
    /// Seconds a session may stay idle before it ends (vCenter: 30 minutes).
    #[arg(long, default_value_t = vtwin::engine::auth::session::DEFAULT_IDLE_SECS)]
    session_idle_timeout: u64,
    /// Seconds a session lives at most, however busy it is.
    #[arg(long, default_value_t = vtwin::engine::auth::session::DEFAULT_MAX_SECS)]
    session_max_lifetime: u64,
    /// Sessions one user may hold at once (past it: LimitExceeded).
    #[arg(long, default_value_t = vtwin::engine::auth::session::DEFAULT_MAX_SESSIONS_PER_USER)]
    max_sessions_per_user: usize,
    /// Tasks not yet ended that one user may have (past it: LimitExceeded).
    #[arg(long, default_value_t = vtwin::engine::tasks::DEFAULT_LIVE_TASKS_PER_USER)]
    max_live_tasks_per_user: usize,
    /// vCloud Director tasks one user may have kept (they live until expiry).
    #[arg(long, default_value_t = vtwin::engine::tasks::DEFAULT_VCD_TASKS_PER_USER)]
    max_vcd_tasks_per_user: usize,
    /// Seconds a kept-alive HTTP connection may go without a request (and a
    /// request body or a response may stall) before it is closed.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    http_idle_timeout: f64,
    /// Seconds a new HTTP connection (or a started request head) has to
    /// deliver a complete request head.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", hide = true)]
    http_header_timeout: f64,
    /// Open HTTP(S) connections at most (all API listeners together);
    /// beyond it new connections are closed at once.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds an NBD connection may go without a request before it is closed.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    nbd_idle_timeout: f64,
    /// Seconds an NBD client has to finish option negotiation.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", hide = true)]
    nbd_handshake_timeout: f64,
    /// Open NBD connections at most.
    #[arg(long, default_value_t = 1024)]
    nbd_max_connections: usize,
    /// Also serve GET /metrics here, without a session (a loopback
    /// address only); on the API listener /metrics needs a session with
    /// System.Read.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<String>,
}

fn secs(flag: &str, v: f64) -> anyhow::Result<std::time::Duration> {
    anyhow::ensure!(v.is_finite() && v > 0.0 && v < 1e9, "--{flag} must be a positive number of seconds");
    Ok(std::time::Duration::from_secs_f64(v))
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user (or change its password and role).
    Add {
        name: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value = "ReadOnly")]
        role: String,
        #[arg(long, default_value = "./vtwin-data")]
        data_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::User { cmd: UserCmd::Add { name, password, role, data_dir } } => {
            let r = authz::role_by_name(&role)
                .ok_or_else(|| anyhow::anyhow!("unknown role '{role}': use Admin, ReadOnly or NoAccess"))?;
            let store = vtwin::store::open(&data_dir, None)?;
            vtwin::engine::add_user(store.as_ref(), &name, &password, r.id)?;
            println!("user {name} has role {} on the root folder", r.name);
            Ok(())
        }
        Cmd::Datastore { cmd: DatastoreCmd::Remount { name, data_dir } } => {
            let store = vtwin::store::open(&data_dir, None)?;
            let data_dir = std::fs::canonicalize(&data_dir)?;
            let shape = Shape { datacenters: 1, hosts: 1, datastores: 1 };
            let opened = Engine::open(store, data_dir, shape, None, Default::default())?;
            let eng = opened.engine;
            let ds = eng.datastore_named(&name).ok_or_else(|| anyhow::anyhow!("no datastore named {name}"))?;
            let path = eng.remount_datastore(&ds).map_err(|f| anyhow::anyhow!(f.message))?;
            println!("{name} ({}) is now mounted at {path}", ds.value);
            Ok(())
        }
        Cmd::Vcd { cmd: VcdCmd::OrgAdd { name, full_name, data_dir } } => {
            let store = vtwin::store::open(&data_dir, None)?;
            let o = vtwin::engine::vcd::add_org(store.as_ref(), &name, &full_name).map_err(|e| anyhow::anyhow!(e))?;
            println!("organization {} is urn:vcloud:org:{}", o.name, o.id);
            Ok(())
        }
        Cmd::Vcd { cmd: VcdCmd::UserAdd { principal, password, role, data_dir } } => {
            let (user, org) = principal.rsplit_once('@').ok_or_else(|| anyhow::anyhow!("give the user as user@org"))?;
            let store = vtwin::store::open(&data_dir, None)?;
            vtwin::engine::vcd::add_user(store.as_ref(), org, user, &password, &role)
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("user {user} of {org} added");
            Ok(())
        }
        Cmd::Serve(a) => serve(*a),
    }
}

/// Each waiting client holds a connection: allow as many open files as the
/// hard limit lets us.
fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let r = getrlimit(Resource::Nofile);
    if r.current < r.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: r.maximum, maximum: r.maximum });
    }
}

/// Bind with a deep accept queue: many clients (waiters, say) may connect
/// at once.
async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let sock = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        sock.set_reuseaddr(true)?;
        match sock.bind(a).and_then(|_| sock.listen(4096)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("{addr} resolves to no address"), anyhow::Error::from))
}

/// Give memory freed by connections that are gone back to the system: the
/// allocator purges its free pages lazily, on later allocations, so after a
/// burst (a flood of connections, say) an idle server would keep them.
fn start_memory_purger() {
    let _ = std::thread::Builder::new().name("mem-purge".into()).spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        vtwin::sys::release_free_memory();
    });
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    raise_nofile_limit();
    start_memory_purger();
    let store = vtwin::store::open(&a.data_dir, a.database.as_deref())?;
    let data_dir = std::fs::canonicalize(&a.data_dir)?;
    let shape = Shape { datacenters: a.datacenters, hosts: a.hosts, datastores: a.datastores };
    let retention = vtwin::engine::tasks::Retention {
        max_completed: a.task_retention_count,
        max_age: std::time::Duration::from_secs(a.task_retention_secs),
    };
    let opened = Engine::open(store, data_dir.clone(), shape, a.admin_password, retention)?;
    if let Some(pw) = &opened.generated_password {
        println!("generated password for administrator@vsphere.local: {pw}");
    }
    let tls = if a.plain_http { None } else { Some(api::tls::acceptor(&data_dir)?) };
    if let Some(f) = &a.test_control {
        let n = opened.engine.control().load_file(f)?;
        tracing::info!(rules = n, file = %f.display(), "test-control rules loaded");
    }
    let limits = api::Limits {
        header_timeout: secs("http-header-timeout", a.http_header_timeout)?,
        idle_timeout: secs("http-idle-timeout", a.http_idle_timeout)?,
        max_connections: a.max_connections.max(1),
        ..Default::default()
    };
    let nbd_limits = api::nbd::NbdLimits {
        handshake_timeout: secs("nbd-handshake-timeout", a.nbd_handshake_timeout)?,
        idle_timeout: secs("nbd-idle-timeout", a.nbd_idle_timeout)?,
        max_connections: a.nbd_max_connections.max(1),
    };
    let nbd_tickets: Arc<api::nbd::Bindings> = Default::default();
    let engine = opened.engine.into_shared();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = listen(&a.listen).await?;
        let addr = listener.local_addr()?;
        let node = a.node_name.clone().unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
        anyhow::ensure!(a.node_lease.is_finite() && a.node_lease >= 0.05, "--node-lease must be at least 0.05 seconds");
        let node_id = engine.start_node(&node, std::time::Duration::from_secs_f64(a.node_lease))?;
        tracing::info!(node = %node_id, "node started");
        let (nbd, nbd_addr) = api::nbd::listen(&a.nbd_listen)
            .await
            .map_err(|e| anyhow::anyhow!("NBD listen on {}: {e}", a.nbd_listen))?;
        println!("vtwin NBD on nbd://{nbd_addr}");
        tokio::spawn(api::nbd::serve(engine.clone(), nbd, nbd_tickets.clone(), nbd_limits));
        engine.set_vcd_task_expiry_secs(a.vcd_task_expiry);
        engine.sessions().set_lifetimes(vtwin::engine::auth::session::Lifetimes {
            idle_ms: a.session_idle_timeout.saturating_mul(1000).min(i64::MAX as u64) as i64,
            max_ms: a.session_max_lifetime.saturating_mul(1000).min(i64::MAX as u64) as i64,
        });
        engine.sessions().set_max_per_user(a.max_sessions_per_user);
        engine.tasks().set_caps(vtwin::engine::tasks::TaskCaps {
            live_per_user: a.max_live_tasks_per_user,
            vcd_per_user: a.max_vcd_tasks_per_user,
        });
        if let Some(v) = &a.vcd_listen {
            let listener = listen(v).await?;
            let addr = listener.local_addr()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            println!("vtwin VCD on {scheme}://{addr}");
            let vstate = Arc::new(AppState {
                engine: engine.clone(),
                tls: tls.is_some(),
                metrics: Default::default(),
                nbd_addr: Some(nbd_addr),
                nbd_tickets: nbd_tickets.clone(),
                vcd: true,
                limits: limits.clone(),
            });
            tokio::spawn(api::serve(vstate, listener, tls.clone()));
        }
        let state = Arc::new(AppState {
            engine: engine.clone(),
            tls: tls.is_some(),
            metrics: Default::default(),
            nbd_addr: Some(nbd_addr),
            nbd_tickets: nbd_tickets.clone(),
            vcd: false,
            limits: limits.clone(),
        });
        if let Some(m) = &a.metrics_listen {
            let listener = listen(m).await?;
            let maddr = listener.local_addr()?;
            anyhow::ensure!(
                maddr.ip().is_loopback(),
                "--metrics-listen serves without a session: give a loopback address, not {maddr}"
            );
            println!("vtwin metrics on http://{maddr}/metrics");
            tokio::spawn(api::serve_metrics(state.clone(), listener));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("vtwin listening on {scheme}://{addr}");
        std::io::stdout().flush()?;
        tracing::info!(%addr, scheme, data_dir = %data_dir.display(), "ready");
        let r = tokio::select! {
            r = api::serve(state, listener, tls) => r,
            _ = shutdown_signal() => Ok(()),
        };
        engine.sessions().flush();
        engine.stop_node();
        r
    })
}

fn hostname() -> String {
    let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
