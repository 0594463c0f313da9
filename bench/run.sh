#!/usr/bin/env bash
# bench/run.sh — rustworkers against nginx, gunicorn and uhttp-workers, on loopback.
#
#   bash bench/run.sh                      # everything: install, build, measure, write
#   BENCH_DURATION=3s BENCH_ROUNDS=1 bash bench/run.sh   # quicker, noisier
#
# Idempotent: installs only what is missing (wrk, nginx-light via apt; gunicorn and
# uhttp-workers 1.8.1 into bench/.venv), builds `cargo build --release`, starts every
# server on a free 127.0.0.1 port, runs wrk with the same parameters against each, in
# interleaved rounds, and writes bench/results/latest.md (also printed). Every server
# started here is stopped on exit, by pid. Every load run is bounded (wrk -d).
#
# The load generator runs on the same machine as the servers: absolute numbers say little,
# ratios measured side by side in one run say more. See docs/benchmarks.md.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
VENV="$HERE/.venv"
PY="$VENV/bin/python"
RW="$ROOT/target/release/rustworkers"
OUT_DIR="$HERE/results"
OUT="$OUT_DIR/latest.md"

DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-2}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNS:-32}
RESPAWN_RUNS=${BENCH_RESPAWN_RUNS:-10}
WRK_ARGS=(-t"$THREADS" -c"$CONNS" -d"$DURATION" --latency)

log() { printf '[bench] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- cleanup, by pid only
PIDS=()
TMP=$(mktemp -d /tmp/rwbench.XXXXXX)
chmod 755 "$TMP" # nginx workers run as nobody and must read the static file

cleanup() {
    local pid c
    for pid in "${PIDS[@]}"; do for c in $(children "$pid"); do PIDS+=("$c"); done; done
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Children of a pid (one level), from /proc.
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true; }
# Remember a server and its current children, so cleanup kills the workers too.
track() {
    local pid=$1 c
    PIDS+=("$pid")
    for c in $(children "$pid"); do PIDS+=("$c"); done
}

# ---------------------------------------------------------------- 1. install and build
install_deps() {
    local nginx_bin
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    if ! command -v wrk >/dev/null || [ ! -x "$nginx_bin" ]; then
        log "installing wrk and nginx-light (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y wrk nginx-light >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y wrk nginx-light >/dev/null; }
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    [ -x "$NGINX" ] || { log "nginx not found after install"; exit 1; }

    if [ ! -x "$PY" ]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    # uhttp-workers 1.8.1 declares uhttp-server>=2.6.0 but does not run with 3.x
    # (HttpServer.read_sockets was removed): pin the last 2.x.
    if ! "$PY" - <<'EOF' 2>/dev/null; then
import importlib.metadata as m
assert m.version("uhttp-workers") == "1.8.1"
assert m.version("uhttp-server") == "2.6.2"
import gunicorn  # noqa: F401
EOF
        log "installing gunicorn, uhttp-workers==1.8.1, uhttp-server==2.6.2 into $VENV"
        "$VENV/bin/pip" install -q gunicorn 'uhttp-workers==1.8.1' 'uhttp-server==2.6.2'
    fi

    log "cargo build --release"
    (cd "$ROOT" && cargo build --release -q)
}

# ---------------------------------------------------------------- helpers
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_200 URL [seconds]: poll until the URL answers 200.
wait_200() {
    local url=$1 secs=${2:-20} i
    for i in $(seq $((secs * 20))); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" = 200 ] && return 0
        sleep 0.05
    done
    log "timeout waiting for 200 from $url"
    return 1
}

rss_kib() { awk '/^VmRSS/ {print $2}' /proc/"$1"/status 2>/dev/null || echo 0; }
# PSS: shared pages (forked-from-master copy-on-write memory, libraries) split between sharers.
pss_kib() { awk '/^Pss:/ {print $2}' /proc/"$1"/smaps_rollup 2>/dev/null || echo 0; }

# p99 from wrk --latency output, in ms.
to_ms() {
    awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); printf "%.2f", v/1000 }
           else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.2f", v }
           else if (v ~ /m$/)  { sub(/m$/,"",v);  printf "%.2f", v*60000 }
           else if (v ~ /s$/)  { sub(/s$/,"",v);  printf "%.2f", v*1000 }
           else print "n/a" }'
}

declare -A RPS_SUM P99_SUM RUNS NON2XX ERRS RPS_ALL URL_OF
ORDER=()
add_target() { ORDER+=("$1"); URL_OF[$1]=$2; RPS_SUM[$1]=0; P99_SUM[$1]=0; RUNS[$1]=0; NON2XX[$1]=0; ERRS[$1]=0; RPS_ALL[$1]=""; }

run_wrk() {
    local name=$1 url=${URL_OF[$1]} out rps p99 non2xx errs
    out=$(wrk "${WRK_ARGS[@]}" "$url" 2>&1) || true
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out" | to_ms)
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
    errs=$(awk '/Socket errors:/ {gsub(",",""); print $4+$6+$8+$10}' <<<"$out")
    [ -n "$rps" ] || { log "wrk failed for $name: $out"; rps=0; p99=0; }
    RPS_SUM[$name]=$(awk -v a="${RPS_SUM[$name]}" -v b="$rps" 'BEGIN {print a+b}')
    P99_SUM[$name]=$(awk -v a="${P99_SUM[$name]}" -v b="$p99" 'BEGIN {print a+b}')
    RUNS[$name]=$((RUNS[$name] + 1))
    NON2XX[$name]=$((NON2XX[$name] + ${non2xx:-0}))
    ERRS[$name]=$((ERRS[$name] + ${errs:-0}))
    RPS_ALL[$name]="${RPS_ALL[$name]}${RPS_ALL[$name]:+ / }$(printf '%.0f' "$rps")"
    log "$(printf '%-16s %10.0f req/s  p99 %7s ms  non-2xx %s  socket errors %s' "$name" "$rps" "$p99" "${non2xx:-0}" "${errs:-0}")"
}

rps_of() { awk -v s="${RPS_SUM[$1]}" -v n="${RUNS[$1]}" 'BEGIN {printf "%.0f", (n ? s/n : 0)}'; }
p99_of() { awk -v s="${P99_SUM[$1]}" -v n="${RUNS[$1]}" 'BEGIN {printf "%.2f", (n ? s/n : 0)}'; }
ratio() { awk -v a="$(rps_of "$1")" -v b="$(rps_of "$2")" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "n/a"}'; }

# ---------------------------------------------------------------- main
install_deps
mkdir -p "$OUT_DIR"
START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# The 2 KiB static file, served by both nginx and rustworkers at /static/f2k.txt.
mkdir -p "$TMP/root/static"
head -c 2048 /dev/zero | tr '\0' 'x' >"$TMP/root/static/f2k.txt"
chmod -R a+rX "$TMP/root"

# -- rustworkers: sync /health, static, native echo (2), python (2), wsgi (2)
RW_PORT=$(free_port)
cat >"$TMP/rw.toml" <<EOF
[server]
bind = ["127.0.0.1:$RW_PORT"]
access_log = "off"

[[static]]
prefix = "/static/"
path = "$TMP/root/static"
authoritative = true

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "echo"
routes = ["/echo/**"]
native = "echo"
num_workers = 2

[[pool]]
name = "python"
routes = ["/api/**"]
python = "hello_worker:HelloWorker"
interpreter = "$PY"
module_path = ["$HERE/apps"]
num_workers = 2

[[pool]]
name = "wsgi"
routes = ["/wsgi/**"]
wsgi = "wsgi_hello:app"
interpreter = "$PY"
module_path = ["$HERE/apps"]
num_workers = 2
env = { SCRIPT_NAME = "/wsgi" }
EOF
RUST_LOG=warn "$RW" -c "$TMP/rw.toml" 2>"$TMP/rw.log" &
RW_PID=$!
PIDS+=("$RW_PID")

# -- nginx: one worker process (a single event loop, like the rustworkers dispatcher)
NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    types { text/plain txt; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /static/ { root $TMP/root; }
    }
}
EOF
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# -- gunicorn: 2 sync workers, the same hello handler as a WSGI app
GUNI_PORT=$(free_port)
"$VENV/bin/gunicorn" -w 2 -k sync -b "127.0.0.1:$GUNI_PORT" --chdir "$HERE/apps" \
    --log-level warning wsgi_hello:app 2>"$TMP/gunicorn.log" &
GUNI_PID=$!
PIDS+=("$GUNI_PID")

# -- uhttp-workers 1.8.1: Dispatcher + WorkerPool, 2 workers
UH_PORT=$(free_port)
(cd "$HERE/apps" && exec "$PY" uhttp_hello.py "$UH_PORT" 2) 2>"$TMP/uhttp.log" &
UH_PID=$!
PIDS+=("$UH_PID")

UHTTP_OK=1
wait_200 "http://127.0.0.1:$RW_PORT/health"
wait_200 "http://127.0.0.1:$RW_PORT/static/f2k.txt"
wait_200 "http://127.0.0.1:$RW_PORT/echo/x"
wait_200 "http://127.0.0.1:$RW_PORT/api/hello"
wait_200 "http://127.0.0.1:$RW_PORT/wsgi/api/hello"
wait_200 "http://127.0.0.1:$NGINX_PORT/static/f2k.txt"
wait_200 "http://127.0.0.1:$GUNI_PORT/api/hello"
wait_200 "http://127.0.0.1:$UH_PORT/api/hello" || { UHTTP_OK=0; log "uhttp-workers did not start: $(tail -5 "$TMP/uhttp.log")"; }
for p in "$GUNI_PID" "$UH_PID" "$NGINX_PID"; do track "$p"; done
# Same bytes from both static servers?
cmp -s <(curl -s "http://127.0.0.1:$RW_PORT/static/f2k.txt") <(curl -s "http://127.0.0.1:$NGINX_PORT/static/f2k.txt") ||
    { log "static bodies differ"; exit 1; }

add_target rw_health "http://127.0.0.1:$RW_PORT/health"
add_target nginx_static "http://127.0.0.1:$NGINX_PORT/static/f2k.txt"
add_target rw_static "http://127.0.0.1:$RW_PORT/static/f2k.txt"
add_target rw_echo "http://127.0.0.1:$RW_PORT/echo/x"
add_target rw_python "http://127.0.0.1:$RW_PORT/api/hello"
add_target rw_wsgi "http://127.0.0.1:$RW_PORT/wsgi/api/hello"
add_target gunicorn "http://127.0.0.1:$GUNI_PORT/api/hello"
[ "$UHTTP_OK" = 1 ] && add_target uhttp "http://127.0.0.1:$UH_PORT/api/hello"

# -- 2. load: every target once per round, rounds interleaved so drift hits all alike
for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: wrk ${WRK_ARGS[*]}"
    for name in "${ORDER[@]}"; do run_wrk "$name"; done
done

# -- e. memory after the load (warm processes)
MEM_ROWS=""
mem_row() { # server role pid
    MEM_ROWS+="| $1 | $2 | $3 | $(mib "$(rss_kib "$3")") | $(mib "$(pss_kib "$3")") |"$'\n'
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }
# group_total PID...: "RSS | PSS" in MiB, summed over the pids.
group_total() {
    local pid r=0 p=0
    for pid in "$@"; do r=$((r + $(rss_kib "$pid"))); p=$((p + $(pss_kib "$pid"))); done
    echo "$(mib "$r") | $(mib "$p")"
}
RW_WORKERS=$("$PY" - "http://127.0.0.1:$RW_PORT/status" <<'EOF'
import json, sys, urllib.request
for p in json.load(urllib.request.urlopen(sys.argv[1]))["pools"]:
    for w in p["workers"]:
        if w["alive"]:
            print(p["name"], w["pid"])
EOF
)
pool_pids() { while read -r p pid; do if [ "$p" = "$1" ]; then echo "$pid"; fi; done <<<"$RW_WORKERS"; }
mem_row rustworkers dispatcher "$RW_PID"
while read -r pool pid; do mem_row rustworkers "$pool worker" "$pid"; done <<<"$RW_WORKERS"
mem_row gunicorn master "$GUNI_PID"
for c in $(children "$GUNI_PID"); do mem_row gunicorn worker "$c"; done
if [ "$UHTTP_OK" = 1 ]; then
    mem_row uhttp-workers dispatcher "$UH_PID"
    for c in $(children "$UH_PID"); do mem_row uhttp-workers "worker (child)" "$c"; done
fi
mem_row nginx master "$NGINX_PID"
for c in $(children "$NGINX_PID"); do mem_row nginx worker "$c"; done
# Totals now, while the processes live (the report is written after they stop).
# shellcheck disable=SC2046 # word splitting of pid lists is intended
{
    TOT_RW_PY=$(group_total "$RW_PID" $(pool_pids python))
    TOT_RW_WSGI=$(group_total "$RW_PID" $(pool_pids wsgi))
    TOT_RW_ECHO=$(group_total "$RW_PID" $(pool_pids echo))
    TOT_RW_ALL=$(group_total "$RW_PID" $(pool_pids echo) $(pool_pids python) $(pool_pids wsgi))
    TOT_GUNI=$(group_total "$GUNI_PID" $(children "$GUNI_PID"))
    TOT_UH="n/a | n/a"
    [ "$UHTTP_OK" = 1 ] && TOT_UH=$(group_total "$UH_PID" $(children "$UH_PID"))
    TOT_NGINX=$(group_total "$NGINX_PID" $(children "$NGINX_PID"))
}

# -- d. worker respawn: SIGKILL → replacement answering, 1-worker pools
log "respawn: stopping the load servers first (quiet machine for the timing)"
for p in "$RW_PID" "$NGINX_PID"; do kill -TERM "$p" 2>/dev/null || true; done
RS_PORT=$(free_port)
cat >"$TMP/rs.toml" <<EOF
[server]
bind = ["127.0.0.1:$RS_PORT"]
access_log = "off"

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "echo"
routes = ["/echo/**"]
native = "echo"
num_workers = 1
max_restarts = 1000

[[pool]]
name = "python"
routes = ["/api/**"]
python = "hello_worker:HelloWorker"
interpreter = "$PY"
module_path = ["$HERE/apps"]
num_workers = 1
max_restarts = 1000
EOF
RUST_LOG=warn "$RW" -c "$TMP/rs.toml" 2>"$TMP/rs.log" &
RS_PID=$!
PIDS+=("$RS_PID")
wait_200 "http://127.0.0.1:$RS_PORT/echo/x"
wait_200 "http://127.0.0.1:$RS_PORT/api/pid"
respawn() { "$PY" "$HERE/tools/respawn.py" --runs "$RESPAWN_RUNS" "$@" || true; }
RESP_ECHO=$(respawn "http://127.0.0.1:$RS_PORT/echo/x" --status "http://127.0.0.1:$RS_PORT/status" --pool echo)
RESP_PY=$(respawn "http://127.0.0.1:$RS_PORT/api/pid" --status "http://127.0.0.1:$RS_PORT/status" --pool python)
# The same measurement on gunicorn and uhttp-workers, each restarted with 1 worker
# (max_restarts raised as for rustworkers, so 10 kills do not mark the pool degraded).
for p in "$GUNI_PID" "$UH_PID"; do kill -TERM "$p" 2>/dev/null || true; done
G1_PORT=$(free_port)
"$VENV/bin/gunicorn" -w 1 -k sync -b "127.0.0.1:$G1_PORT" --chdir "$HERE/apps" \
    --log-level warning wsgi_hello:app 2>"$TMP/gunicorn1.log" &
G1_PID=$!
PIDS+=("$G1_PID")
wait_200 "http://127.0.0.1:$G1_PORT/api/pid"
RESP_GUNI=$(respawn "http://127.0.0.1:$G1_PORT/api/pid")
RESP_UH='{"error": "uhttp-workers not running"}'
if [ "$UHTTP_OK" = 1 ]; then
    U1_PORT=$(free_port)
    (cd "$HERE/apps" && exec "$PY" uhttp_hello.py "$U1_PORT" 1 1000) 2>"$TMP/uhttp1.log" &
    U1_PID=$!
    PIDS+=("$U1_PID")
    wait_200 "http://127.0.0.1:$U1_PORT/api/pid"
    RESP_UH=$(respawn "http://127.0.0.1:$U1_PORT/api/pid")
fi
jf() { "$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get(sys.argv[2], d.get("error", "n/a")))' "$1" "$2" 2>/dev/null || echo n/a; }

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# -- 3. the report
{
    echo "# rustworkers benchmark — latest run"
    echo
    echo "- date: $START_DATE"
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -srm)"
    echo "- load average before / after: $LOAD_BEFORE / $LOAD_AFTER (other work was running: numbers are noisy)"
    echo "- rustworkers $("$RW" --version | awk '{print $2}') at $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- src || echo ' (+ uncommitted src changes)'), release build"
    echo "- $("$NGINX" -v 2>&1 | sed 's/.*: //'), $("$VENV/bin/gunicorn" --version), uhttp-workers 1.8.1 (uhttp-server 2.6.2), $("$PY" --version), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
    echo "- load: \`wrk ${WRK_ARGS[*]} URL\`, same for every target, $ROUNDS interleaved round(s); req/s and p99 are the mean over rounds"
    echo "- wrk, the servers and their workers all share the same $(nproc) CPUs over loopback"
    echo
    echo "## Throughput"
    echo
    echo "| target | URL path | req/s (mean) | per round | p99 ms | non-2xx | socket errors |"
    echo "|---|---|---:|---|---:|---:|---:|"
    for name in "${ORDER[@]}"; do
        path=${URL_OF[$name]#http://127.0.0.1:*/}
        echo "| $name | /$path | $(rps_of "$name") | ${RPS_ALL[$name]} | $(p99_of "$name") | ${NON2XX[$name]} | ${ERRS[$name]} |"
    done
    echo
    echo "## Ratios (same run, side by side)"
    echo
    echo "| comparison | ratio |"
    echo "|---|---:|"
    echo "| rustworkers static 2 KiB / nginx static 2 KiB (worker_processes 1) | $(ratio rw_static nginx_static) |"
    echo "| rustworkers /health (sync) / nginx static 2 KiB | $(ratio rw_health nginx_static) |"
    echo "| rustworkers native echo pool (2 workers) / rustworkers /health: IPC cost | $(ratio rw_echo rw_health) |"
    echo "| rustworkers python pool / gunicorn sync (2 workers each) | $(ratio rw_python gunicorn) |"
    echo "| rustworkers wsgi pool / gunicorn sync (2 workers each) | $(ratio rw_wsgi gunicorn) |"
    if [ "$UHTTP_OK" = 1 ]; then
        echo "| rustworkers python pool / uhttp-workers (2 workers each) | $(ratio rw_python uhttp) |"
        echo "| rustworkers wsgi pool / uhttp-workers | $(ratio rw_wsgi uhttp) |"
    fi
    echo "| rustworkers python pool / rustworkers native echo pool | $(ratio rw_python rw_echo) |"
    echo
    echo "## Worker respawn: SIGKILL → replacement answers 200 (1-worker pool, polled every 1 ms)"
    echo
    echo "| server / worker | median ms | min ms | max ms | runs ms | non-200 answers while waiting |"
    echo "|---|---:|---:|---:|---|---|"
    for row in "rustworkers native echo|$RESP_ECHO" "rustworkers python shim|$RESP_PY" "gunicorn sync|$RESP_GUNI" "uhttp-workers|$RESP_UH"; do
        label=${row%%|*}
        j=${row#*|}
        echo "| $label | $(jf "$j" median_ms) | $(jf "$j" min_ms) | $(jf "$j" max_ms) | $(jf "$j" runs_ms) | $(jf "$j" statuses_while_waiting) |"
    done
    echo
    echo "## Memory: VmRSS and PSS after the load runs"
    echo
    echo "| server | process | pid | RSS MiB | PSS MiB |"
    echo "|---|---|---:|---:|---:|"
    printf '%s' "$MEM_ROWS"
    echo
    echo "| setup (all its processes) | total RSS MiB | total PSS MiB |"
    echo "|---|---:|---:|"
    echo "| rustworkers dispatcher + python pool (2 workers) | $TOT_RW_PY |"
    echo "| rustworkers dispatcher + wsgi pool (2 workers) | $TOT_RW_WSGI |"
    echo "| rustworkers dispatcher + native echo pool (2 workers) | $TOT_RW_ECHO |"
    echo "| rustworkers, whole bench instance (3 pools, 6 workers) | $TOT_RW_ALL |"
    echo "| gunicorn master + 2 sync workers | $TOT_GUNI |"
    echo "| uhttp-workers dispatcher + 2 workers | $TOT_UH |"
    echo "| nginx master + 1 worker | $TOT_NGINX |"
    echo
    echo "RSS counts shared pages in every process that maps them; PSS splits them between the sharers (gunicorn and uhttp-workers fork their workers from the master, so their workers share copy-on-write pages; rustworkers' Python workers are exec'd fresh, its native workers are forked without exec)."
    echo
    echo "## Notes"
    echo
    echo "- nginx runs \`worker_processes 1\` (one event loop, like the one rustworkers dispatcher), \`sendfile on\`, \`access_log off\`, default keep-alive (1000 requests per connection)."
    echo "- rustworkers runs with \`access_log = \"off\"\` and \`RUST_LOG=warn\`; gunicorn with its defaults (no access log); uhttp-workers with LOG_WARNING."
    echo "- gunicorn's sync worker closes the connection after every response (no keep-alive), so wrk reconnects for each request there; rustworkers, nginx and uhttp-workers keep connections alive."
    echo "- uhttp-workers 1.8.1 needs uhttp-server 2.x: with uhttp-server 3.x (what pip resolves from its \`>=2.6.0\` pin) the dispatcher crashes (\`HttpServer\` has no \`read_sockets\`)."
    echo "- All servers run at the same time (idle ones only heartbeat); the respawn timings run after the load servers are stopped, on 1-worker pools with \`max_restarts = 1000\` (rustworkers, uhttp-workers) so that 10 kills in a row do not degrade the pool; gunicorn has no such limit."
    echo "- A respawn run's clock starts just before the SIGKILL and stops at the first 200 from a new pid; the 500s listed are requests the dispatcher had already handed to the killed worker (answered 500, as documented), 503 is 'no live worker'."
    echo "- Exact command: \`bash bench/run.sh\` (environment: BENCH_DURATION=$DURATION BENCH_ROUNDS=$ROUNDS BENCH_THREADS=$THREADS BENCH_CONNS=$CONNS BENCH_RESPAWN_RUNS=$RESPAWN_RUNS)."
} >"$OUT"

cat "$OUT"
