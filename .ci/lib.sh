# Sourced by the .ci scripts: small helpers they share.

# need_packages PKG...: installs the Debian packages that are missing (apt-get update first,
# once per run). Fails loudly rather than letting a gate skip for want of a tool.
need_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "${FLEETPROV_APT_UPDATED:-}" ]; then
    apt-get update -qq
    export FLEETPROV_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
