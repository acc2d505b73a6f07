//! `kgw run` and `kgw quickstart`: store -> translate -> data plane, and the admin API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use proxy::{AccessLog, DataPlane, ProxyOptions};
use store::Store;
use tokio::sync::watch;

#[derive(Args)]
pub struct RunArgs {
    /// Manifest files or directories to read and watch (repeatable).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Where objects applied with `kgw apply` are kept [default: $XDG_STATE_HOME/kgw or ~/.local/state/kgw].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Address of the admin API (/config_dump, /stats, and what kgw apply/get/delete call).
    #[arg(long, default_value = "127.0.0.1:19000")]
    pub admin_address: SocketAddr,
    /// Accept admin writes from non-loopback clients that send this bearer token.
    #[arg(long, env = "KGW_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Access log: `-` for stdout, a file path, or `off`.
    #[arg(long, default_value = "-")]
    pub access_log: String,
    /// How long the upstream has to send its whole response, counted from the end of the
    /// request (Envoy's route timeout and default): before the response headers, the client
    /// gets 504; once they are sent, the response is cut (HTTP/1.1: the connection closes;
    /// HTTP/2: the stream is reset). WebSocket tunnels are exempt once upgraded.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub route_timeout: Duration,
    /// How long a client has to send a whole request head from its first byte; then 408 and the
    /// connection closes (nginx's client_header_timeout default; Envoy has none by default).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub request_headers_timeout: Duration,
    /// How long a request body may stall (no byte from the client) before the request ends with
    /// 408, and a response may move no byte either way before both connections close (Envoy's
    /// stream_idle_timeout default).
    #[arg(long, default_value = "5m", value_parser = parse_positive_duration)]
    pub stream_idle_timeout: Duration,
    /// Close a client connection that sends no request for this long after its last one
    /// (Envoy's common_http_protocol_options.idle_timeout default).
    #[arg(long, default_value = "1h", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,
    /// On SIGTERM: stop accepting, let requests in flight finish for at most this long, then
    /// exit (Envoy's --drain-time-s default, 600 s). Keep it below the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub drain_time: Duration,
    /// Close upstream connections idle in their pool for this long (Envoy's default: 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,
    /// Do not set TCP_USER_TIMEOUT (keepAliveTime + probes x interval) on sockets of clusters
    /// with tcpKeepalive. It is our addition to Envoy's behaviour: with it, a request in flight
    /// on a peer that vanished fails on the keepalive clock instead of after ~15 minutes.
    #[arg(long)]
    pub no_tcp_user_timeout: bool,
    /// Never send a request again after a reused upstream connection failed (the close race).
    #[arg(long)]
    pub no_retry: bool,
    /// Read Gateways, HTTPRoutes, Services, EndpointSlices and BackendConfigPolicies from a
    /// Kubernetes API server (KUBECONFIG, ~/.kube/config, or the in-cluster service account, as
    /// kubectl finds it) and write their status back.
    #[arg(long)]
    pub kubernetes: bool,
    /// Refuse client connections beyond this many (accepted and closed at once, counted in
    /// `downstream_global_cx_overflow`) [default: the open files limit less its reserve: a
    /// tenth of the limit, 64 to 1024 descriptors, kept for kgw's own files and upstream
    /// connects].
    #[arg(long)]
    pub max_downstream_connections: Option<u64>,
    /// Give each Gateway without spec.addresses its own address from this CIDR (e.g.
    /// 127.0.10.0/24), as a LoadBalancer controller gives each LoadBalancer Service one: its
    /// listeners bind that address only, and its status.addresses says it. A Gateway keeps its
    /// address while it exists; new ones take the lowest free address, oldest first. Without a
    /// pool, such a Gateway binds every interface (status.addresses: 0.0.0.0 and ::).
    #[arg(long, value_parser = parse_address_pool)]
    pub gateway_address_pool: Option<translate::AddressPool>,
    /// With --kubernetes: watch only this namespace.
    #[arg(long, requires = "kubernetes")]
    pub namespace: Option<String>,
    /// Serve the validating admission webhook (`POST /validate`, TLS) on this address, so the API
    /// server refuses what `kgw apply` would refuse. Needs --webhook-cert and --webhook-key.
    #[arg(long, requires_all = ["webhook_cert", "webhook_key"])]
    pub webhook_address: Option<SocketAddr>,
    /// The webhook's TLS certificate chain (PEM).
    #[arg(long)]
    pub webhook_cert: Option<PathBuf>,
    /// The webhook's TLS private key (PEM).
    #[arg(long)]
    pub webhook_key: Option<PathBuf>,
    /// With --kubernetes: the Lease whose holder writes statuses (replicas elect one).
    #[arg(long, default_value = "kgw-status-writer", requires = "kubernetes")]
    pub lease_name: String,
    /// With --kubernetes: how long a status writer's Lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration, requires = "kubernetes")]
    pub lease_duration: Duration,
    /// The zone this proxy runs in (kgateway's KGATEWAY_NODE_ZONE), for zone-aware load
    /// balancing: a cluster with `loadBalancer.zoneAware` prefers endpoints whose EndpointSlice
    /// `zone` is this one. Without it, zone-aware routing is off.
    #[arg(long, env = "KGATEWAY_NODE_ZONE")]
    pub zone: Option<String>,
}

#[derive(Args)]
pub struct QuickstartArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Where the sample httpbin backend listens; the httpbin Service's EndpointSlice points here.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub backend_address: SocketAddr,
    /// The port of the sample Gateway's `http` listener.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Print the sample app as `kubectl apply -f -` takes it (with its Namespaces and the
    /// kgateway GatewayClass), then exit: the same sample in a cluster.
    #[arg(long)]
    pub print_manifest: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let nanos = api::duration::parse_go_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (e.g. 15s, 1m)"))?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| format!("duration {s:?} must not be negative"))
}

fn parse_address_pool(s: &str) -> Result<translate::AddressPool, String> {
    translate::AddressPool::parse(s)
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("duration {s:?} must be more than 0 (e.g. 60s)")),
        d => Ok(d),
    }
}

pub async fn quickstart(args: QuickstartArgs) -> anyhow::Result<()> {
    if args.print_manifest {
        print!("{}", cluster_sample_manifest(args.backend_address, args.port));
        return Ok(());
    }
    let backend = crate::sample_backend::start(args.backend_address)
        .await
        .with_context(|| format!("cannot start the sample backend on {}", args.backend_address))?;
    tracing_init();
    tracing::info!(address = %backend, "sample httpbin backend serving");
    let manifest = sample_manifest(backend, args.port);
    run(args.run, Some(manifest)).await
}

/// The sample app for a cluster: what `kgw quickstart` serves, with the Namespaces and the
/// GatewayClass an API server needs first.
fn cluster_sample_manifest(backend: SocketAddr, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: kgateway-system
---
apiVersion: v1
kind: Namespace
metadata:
  name: httpbin
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: kgateway
spec:
  controllerName: {controller}
---
{sample}"#,
        controller = store::kubernetes::CONTROLLER_NAME,
        sample = sample_manifest(backend, port)
    )
}

/// What kgateway's "Sample app" guide sets up, with the httpbin Service's endpoint on loopback.
fn sample_manifest(backend: SocketAddr, port: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: http
  namespace: kgateway-system
spec:
  gatewayClassName: kgateway
  listeners:
  - protocol: HTTP
    port: {gateway_port}
    name: http
    allowedRoutes:
      namespaces:
        from: All
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: httpbin
  labels:
    app: httpbin
    service: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: {port}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-sample
  namespace: httpbin
  labels:
    kubernetes.io/service-name: httpbin
addressType: {family}
endpoints:
- addresses:
  - "{ip}"
  conditions:
    ready: true
ports:
- name: http
  port: {port}
  protocol: TCP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: httpbin
  namespace: httpbin
  labels:
    example: httpbin-route
spec:
  parentRefs:
  - name: http
    namespace: kgateway-system
  hostnames:
  - "www.example.com"
  rules:
  - backendRefs:
    - name: httpbin
      port: 8000
"#,
        gateway_port = port,
        ip = backend.ip(),
        port = backend.port(),
        family = if backend.is_ipv4() { "IPv4" } else { "IPv6" },
    )
}

static TRACING: std::sync::Once = std::sync::Once::new();

fn tracing_init() {
    TRACING.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("KGW_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    });
}

pub async fn run(args: RunArgs, sample: Option<String>) -> anyhow::Result<()> {
    tracing_init();
    let started = Instant::now();
    let fd_limit = proxy::raise_fd_limit();
    tracing::info!(
        before = fd_limit.before,
        now = fd_limit.now,
        reserve = fd_limit.reserve(),
        "open files limit"
    );
    // In Kubernetes mode the API server is the only source: objects a standalone run applied
    // must not shadow the cluster's.
    let state_dir =
        (!args.kubernetes).then(|| args.state_dir.clone().unwrap_or_else(crate::default_state_dir));
    let store = Arc::new(Store::open(state_dir.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?);
    match &state_dir {
        Some(dir) => tracing::info!(state_dir = %dir.display(), "state directory"),
        None => {
            tracing::info!("Kubernetes mode: the API server is the only source; no state directory is read")
        }
    }

    // Bind the admin port first: a second kgw on the same port fails here, before serving.
    let admin_listener = tokio::net::TcpListener::bind(args.admin_address)
        .await
        .with_context(|| {
            format!(
                "cannot listen on the admin address {} (is another kgw running? use --admin-address)",
                args.admin_address
            )
        })?;

    if let Some(manifest) = sample {
        let applied = store
            .apply(&manifest, "quickstart")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for a in applied {
            tracing::info!("{}/{} {}", a.key.kind.resource(), a.key.name, a.action);
        }
    }
    if let (Some(address), Some(cert), Some(key)) =
        (args.webhook_address, &args.webhook_cert, &args.webhook_key)
    {
        crate::webhook::serve(address, cert, key).await?;
    }
    let mut cluster_synced = None;
    let status_writer = if args.kubernetes {
        let client = kube::Client::try_default()
            .await
            .context("cannot reach Kubernetes (set KUBECONFIG, or run in a cluster)")?;
        cluster_synced = Some(store::kubernetes::watch_cluster(
            store.clone(),
            client.clone(),
            args.namespace.clone(),
        ));
        let lease_namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let leader = store::kubernetes::elect(
            client.clone(),
            lease_namespace,
            args.lease_name.clone(),
            args.lease_duration,
        );
        Some(Arc::new(store::kubernetes::StatusWriter::new(client, leader)))
    } else {
        None
    };
    let (status_tx, mut status_rx) = watch::channel(Arc::new(translate::Statuses::new()));
    if let Some(writer) = status_writer {
        let store = store.clone();
        // Statuses are written from their own task, coalesced: the control loop never waits on
        // the API server.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = status_rx.changed() => if changed.is_err() { return },
                    // A replica that just took over the Lease writes what it has, changed or not.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => if !writer.must_resync() { continue },
                }
                let statuses = status_rx.borrow_and_update().clone();
                writer.write(&store, &statuses).await;
            }
        });
    }
    let file_errors = store::watch_files(store.clone(), args.files.clone()).await;
    if !file_errors.is_empty() {
        bail!("{}", file_errors.join("\n"));
    }

    let access_log = match args.access_log.as_str() {
        "off" => AccessLog::disabled(),
        "-" => AccessLog::to_writer(Box::new(std::io::stdout())),
        path => AccessLog::to_writer(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the access log {path}"))?,
        )),
    };
    let options = ProxyOptions {
        route_timeout: args.route_timeout,
        request_headers_timeout: args.request_headers_timeout,
        stream_idle_timeout: args.stream_idle_timeout,
        idle_timeout: args.idle_timeout,
        upstream_idle_timeout: args.upstream_idle_timeout,
        tcp_user_timeout: !args.no_tcp_user_timeout,
        retry_on_reused_connection: !args.no_retry,
        max_downstream_connections: args
            .max_downstream_connections
            .unwrap_or_else(|| fd_limit.connection_budget()),
        connection_descriptor_budget: fd_limit.connection_budget(),
        zone: args.zone.clone().filter(|z| !z.is_empty()),
    };
    // Kept to write out the access log's last lines at exit.
    let access_log_at_exit = access_log.clone();
    let data_plane = DataPlane::new(options, access_log);
    data_plane.spawn_maintenance();
    let (served_tx, served_rx) = watch::channel(0u64);

    // The control loop: every change of the store makes one translation; changes that arrive
    // while translating are coalesced into the next one.
    let mut changes = store.subscribe();
    let loop_store = store.clone();
    let loop_plane = data_plane.clone();
    let first = Arc::new(tokio::sync::Notify::new());
    let first_done = first.clone();
    // The address pool's assignments live as long as the process (see AddressPool); shared with
    // the control thread, and kept if a translation fails.
    let address_pool = Arc::new(std::sync::Mutex::new(args.gateway_address_pool.clone()));
    tokio::spawn(async move {
        let mut version = 0u64;
        loop {
            let generation = *changes.borrow_and_update();
            let t = Instant::now();
            let resources = loop_store.resources();
            let read_at = t.elapsed();
            version += 1;
            let now = SystemTime::now();
            // Translation takes CPU in proportion to the resources: on the control-plane
            // thread, never on a worker that carries traffic.
            let pool = address_pool.clone();
            let Some((resources, (snapshot, mut statuses))) = admin::on_control_thread(move || {
                let addressing = pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .map(|p| p.assign(&resources))
                    .unwrap_or_default();
                let translated = translate::translate_with(&resources, &addressing, version, now);
                (resources, translated)
            })
            .await
            else {
                tracing::error!(
                    version,
                    "translation failed (see above); the last snapshot keeps serving"
                );
                // The next change may translate: configuration updates go on.
                if changes.changed().await.is_err() {
                    break;
                }
                continue;
            };
            let translated_at = t.elapsed();
            // Applying it builds each changed cluster's balancer (a ring hash or maglev table can
            // take a while): on a blocking thread too, not a worker that carries traffic.
            let plane = loop_plane.clone();
            let snapshot = Arc::new(snapshot);
            let failed = match tokio::task::spawn_blocking(move || plane.update(snapshot)).await {
                Ok(failed) => failed,
                Err(e) => {
                    tracing::error!(version, "applying the snapshot failed: {e}");
                    Vec::new()
                }
            };
            let applied_at = t.elapsed();
            for (addr, why) in failed {
                tracing::error!(%addr, "listener not bound: {why}");
                translate::listener_not_programmed(&resources, &mut statuses, addr, &why, now);
            }
            let statuses = loop_store.set_statuses(statuses);
            let _ = status_tx.send(statuses);
            // Timings from the start of this round: resources read, translated, applied by the
            // data plane, statuses kept.
            tracing::debug!(version, objects = resources.len(), ?read_at, ?translated_at, ?applied_at, elapsed = ?t.elapsed(), "snapshot served");
            let _ = served_tx.send(generation);
            if version == 1 {
                first_done.notify_one();
            }
            if changes.changed().await.is_err() {
                break;
            }
        }
    });
    first.notified().await;

    let admin = Arc::new(admin::Admin {
        store: store.clone(),
        data_plane: data_plane.clone(),
        served: served_rx,
        token: args.admin_token.clone(),
        cluster_synced,
    });
    tokio::spawn(admin::serve(admin, admin_listener));
    tracing::info!(admin = %args.admin_address, elapsed = ?started.elapsed(), "ready");

    shutdown_signal().await;
    tracing::info!(drain_time = ?args.drain_time, "draining: new connections refused, requests in flight finish");
    // A second signal ends the drain at once.
    let drained = tokio::select! {
        all_done = data_plane.drain(args.drain_time) => all_done,
        () = shutdown_signal() => false,
    };
    tracing::info!(drained, "shutting down");
    // Last, once no request is logged any more: the lines still buffered (up to 1 s of them).
    access_log_at_exit.flush();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
