//! The common runtime of SEER's servers (`utility-server`, `key-authority`): settings layered
//! from defaults, a TOML file and environment variables; `tracing` to stderr (text or JSON);
//! Prometheus metrics on a listener of their own; and a gRPC
//! server that always carries `grpc.health.v1`, reflection and `seer.v1.Node`, with graceful
//! shutdown on SIGINT/SIGTERM. Each program adds its own services on top.

pub mod db;
pub mod gate;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod settings;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;

pub use gate::{Access, AccessTable, Gate, GateRefusal, RefusalSink};
pub use grpc::{GrpcListener, announce, serve, shutdown_signal};
pub use limits::LimitSettings;
pub use metrics::{Metrics, MetricsSettings};
pub use node::NodeService;
pub use settings::{LogFormat, LogSettings, ServerSettings, load_settings, to_redacted_toml};
