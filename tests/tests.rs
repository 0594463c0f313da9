//! Integration tests: the real binary, real worker processes, real sockets.
//! One test binary; one module per area (ripgrep style).

mod util;
mod python_unit;
mod http_front;
mod static_serving;
mod config_cli;
mod python_workers;
mod lifecycle;
mod accept_limits;
mod pools;
mod supervision;
