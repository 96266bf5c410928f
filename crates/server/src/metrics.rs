//! What `/metrics` reports, in the Prometheus text format (`prometheus-client`): requests by
//! route and status with their latencies, sandboxes created and execs run by driver with the
//! execs' durations, and at scrape time the sandboxes by driver and status and the execs the
//! daemon follows. Routes are the matched templates (`/api/sandboxes/{id}`), never raw paths, so
//! the label sets stay bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use stockade_core::SandboxInfo;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The matched route template; `unmatched` when no route answered.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabels {
    driver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabels {
    driver: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecEndLabels {
    driver: String,
    /// `exited` (a code), `signaled`, `timed_out`, `oom` or `lost`.
    outcome: String,
}

/// Request latencies: 0.5 ms to about 16 s.
fn request_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Exec durations: 1 ms to about 9 h.
fn exec_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 3.0, 16))
}

/// The daemon's metrics: one registry, written to by the request layer and the exec pumps.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    sandboxes_created: Family<DriverLabels, Counter>,
    execs_started: Family<DriverLabels, Counter>,
    execs_ended: Family<ExecEndLabels, Counter>,
    exec_seconds: Family<DriverLabels, Histogram, fn() -> Histogram>,
    sandboxes: Family<SandboxLabels, Gauge>,
    execs_running: Gauge,
    /// One scrape at a time: the sandbox gauges are cleared and set again on each.
    scraping: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stockade");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            request_seconds as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to its response head; a stream's body is not counted)",
            request_seconds.clone(),
        );
        let sandboxes_created = Family::<DriverLabels, Counter>::default();
        registry.register(
            "sandboxes_created",
            "Sandboxes created through the API, by driver",
            sandboxes_created.clone(),
        );
        let execs_started = Family::<DriverLabels, Counter>::default();
        registry.register(
            "execs_started",
            "Execs started through the API, by driver",
            execs_started.clone(),
        );
        let execs_ended = Family::<ExecEndLabels, Counter>::default();
        registry.register(
            "execs_ended",
            "Execs the daemon saw end, by driver and outcome",
            execs_ended.clone(),
        );
        let exec_seconds = Family::<DriverLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            exec_seconds as fn() -> Histogram,
        );
        registry.register(
            "exec_duration_seconds",
            "Wall time of the execs that ended, by driver",
            exec_seconds.clone(),
        );
        let sandboxes = Family::<SandboxLabels, Gauge>::default();
        registry.register(
            "sandboxes",
            "Sandboxes by driver and status, when scraped",
            sandboxes.clone(),
        );
        let execs_running = Gauge::default();
        registry.register(
            "execs_running",
            "Execs the daemon follows now",
            execs_running.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            sandboxes_created,
            execs_started,
            execs_ended,
            exec_seconds,
            sandboxes,
            execs_running,
            scraping: tokio::sync::Mutex::new(()),
        }
    }
}

impl Metrics {
    /// A request answered: `route` is the matched template, `None` when no route matched.
    pub fn request(&self, method: &str, route: Option<&str>, status: u16, seconds: f64) {
        let route = route.unwrap_or("unmatched").to_owned();
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.clone(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route,
            })
            .observe(seconds);
    }

    pub fn sandbox_created(&self, driver: &str) {
        self.sandboxes_created
            .get_or_create(&DriverLabels {
                driver: driver.to_owned(),
            })
            .inc();
    }

    pub fn exec_started(&self, driver: &str) {
        self.execs_started
            .get_or_create(&DriverLabels {
                driver: driver.to_owned(),
            })
            .inc();
    }

    /// An exec ended: `exit` is `None` when it was lost.
    pub fn exec_ended(&self, driver: &str, exit: Option<&stockade_core::ExecExit>) {
        let outcome = match exit {
            None => "lost",
            Some(e) if e.oom => "oom",
            Some(e) if e.timed_out => "timed_out",
            Some(e) if e.code.is_none() => "signaled",
            Some(_) => "exited",
        };
        self.execs_ended
            .get_or_create(&ExecEndLabels {
                driver: driver.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(exit) = exit {
            self.exec_seconds
                .get_or_create(&DriverLabels {
                    driver: driver.to_owned(),
                })
                .observe(exit.duration_ms as f64 / 1000.0);
        }
    }

    /// The text of a scrape: the gauges are set from `sandboxes` and `execs_running` first.
    pub async fn render(&self, sandboxes: &[SandboxInfo], execs_running: usize) -> String {
        let _one = self.scraping.lock().await;
        self.sandboxes.clear();
        for s in sandboxes {
            self.sandboxes
                .get_or_create(&SandboxLabels {
                    driver: s.driver.clone(),
                    status: s.status.as_str().to_owned(),
                })
                .inc();
        }
        self.execs_running
            .set(i64::try_from(execs_running).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}
