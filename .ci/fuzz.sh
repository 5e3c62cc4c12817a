#!/usr/bin/env bash
# A bounded fuzz run of every target (FUZZ_SECONDS each, default 60) on the stable toolchain.
# cargo-fuzz's default AddressSanitizer mode needs nightly flags, so the targets run with
# `--sanitizer none`: libFuzzer still finds panics, aborts, hangs and runaway allocations.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
for target in $(cargo fuzz list); do
  echo "--- fuzz $target for ${secs}s"
  mkdir -p "corpus/$target"
  # The committed corpus is read, new finds go to a scratch directory, so runs stay reproducible.
  scratch=$(mktemp -d)
  cargo fuzz run --sanitizer none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 | tail -n 12
  rm -rf "$scratch"
done
