#!/usr/bin/env bash
# Installs what building and testing sluice needs and a fresh machine may lack.
# Idempotent and quiet when everything is present.
#   scripts/install-deps.sh            # everything scripts/test needs
#   scripts/install-deps.sh --build    # only what building sluice needs (scripts/demo)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# librdkafka is built from source by rdkafka-sys: a C toolchain, make, perl (its configure),
# pkg-config, OpenSSL and zlib headers, and curl for the readiness checks.
missing=()
for pkg in build-essential pkg-config libssl-dev zlib1g-dev perl curl python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

command -v cargo >/dev/null || die "cargo is needed (Rust 1.95 or newer)"
[ "${1:-}" = "--build" ] && exit 0

# Debian's Chromium for the console's browser test (headless; no chromedriver needed).
if ! command -v chromium >/dev/null && ! dpkg -s chromium >/dev/null 2>&1; then
  log "installing chromium"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
fi

command -v java >/dev/null || die "Java 17 or newer is needed for the Kafka broker"
command -v mvn >/dev/null || die "Maven is needed to fetch the Kafka broker's jars"
command -v npm >/dev/null || die "Node.js with npm is needed for Azurite (the Azure Blob Storage emulator)"
command -v go >/dev/null || die "Go is needed to build fake-gcs-server (the GCS emulator)"
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    log "adding the $comp component"
    rustup component add "$comp" >&2
  fi
done
# cargo-fuzz for the fuzz targets (fuzz/), which build with a nightly toolchain.
if rustup toolchain list 2>/dev/null | grep -q '^nightly' && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install --locked cargo-fuzz@0.13.2 >&2
fi
"$SCRIPTS_DIR/kafka.sh" fetch
"$SCRIPTS_DIR/registry.sh" fetch
"$SCRIPTS_DIR/azurite.sh" fetch
"$SCRIPTS_DIR/gcs.sh" fetch
"$SCRIPTS_DIR/python-env.sh"
