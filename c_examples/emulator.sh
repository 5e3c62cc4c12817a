# Sourced (POSIX sh) by the scripts that run a local emulator for a while: run_demo.sh,
# bench/soak.sh, bench/measure.sh.
#
# emulator_start BINARY STATE_DIR READY_FILE [SERVE_ARGS...]
#   starts `BINARY serve` on an ephemeral loopback port with its state in STATE_DIR, waits (at
#   most 30 s) until it has written its port to READY_FILE, and sets emulator_pid and
#   emulator_port. Returns non-zero, with a reason on stderr, if it exits or is not ready in time.
# emulator_stop
#   stops it (SIGTERM, then waits); safe to call more than once, e.g. from an exit trap.
# emulator_workdir NAME
#   makes a scratch directory, sets work to it, and arranges that on exit or interrupt the
#   emulator is stopped and the directory removed.

emulator_pid=
emulator_port=

emulator_start() {
    _bin=$1 _state=$2 _ready=$3
    shift 3
    "$_bin" serve --state-dir "$_state" --port 0 --ready-file "$_ready" "$@" &
    emulator_pid=$!
    _tries=0
    while [ ! -s "$_ready" ]; do
        if ! kill -0 "$emulator_pid" 2>/dev/null; then
            echo "the emulator exited before it was ready" >&2
            return 1
        fi
        _tries=$((_tries + 1))
        if [ "$_tries" -gt 300 ]; then
            echo "the emulator was not ready within 30 s" >&2
            return 1
        fi
        sleep 0.1
    done
    emulator_port=$(cat "$_ready")
}

emulator_stop() {
    if [ -n "$emulator_pid" ]; then
        kill -TERM "$emulator_pid" 2>/dev/null || true
        wait "$emulator_pid" 2>/dev/null || true
        emulator_pid=
    fi
}

emulator_workdir() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/fleetprov-$1.XXXXXX")
    trap '_emulator_cleanup' EXIT
    trap 'exit 130' INT TERM
}

_emulator_cleanup() {
    emulator_stop
    rm -rf "$work"
}
