# Sourced (POSIX sh) by examples/go/run.sh and examples/node/run.sh.
#
# check_provision LABEL STATUS OUTPUT_FILE THING_PATTERN
#   shows OUTPUT_FILE, then exits non-zero with a reason unless the run exited 0 (STATUS),
#   printed a line matching "^Thing registered: THING_PATTERN" and printed no private key.
check_provision() {
    cat "$3"
    if [ "$2" -ne 0 ]; then
        echo "run.sh: $1: the example exited with $2" >&2
        exit 1
    fi
    if ! grep -q "^Thing registered: $4" "$3"; then
        echo "run.sh: $1: no thing matching $4 was registered" >&2
        exit 1
    fi
    if grep -q "PRIVATE KEY" "$3"; then
        echo "run.sh: $1: the output contains a private key" >&2
        exit 1
    fi
}
