//! Integration tests: the real binary, real worker processes, real sockets.
//! One test binary; one module per area (ripgrep style).

mod accept_limits;
mod asgi;
mod config_cli;
mod django;
mod hostile;
mod http_front;
mod lifecycle;
mod loops;
mod pools;
mod python_unit;
mod python_workers;
mod reload;
mod static_serving;
mod supervision;
mod util;
mod websocket;
mod websocket_py;
