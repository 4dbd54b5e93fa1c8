#!/usr/bin/env bash
# Installs polyloop's build and test dependencies from Debian 12's archive.
# Idempotent and quick (no apt calls) when everything is already installed.
# Run as root (CI and the dev machines run as root); otherwise uses sudo.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap    # Bazel 4.2.3 (WORKSPACE mode; pulls in a JDK)
  clang-14           # the second compiler (--config=clang) and libFuzzer's (--config=fuzz)
  libclang-rt-14-dev # clang's sanitizer runtimes and libFuzzer (fuzz/)
  g++                # g++ 12 with the ASan/UBSan/TSan/LSan runtimes
  git
  libboost-dev       # Boost.Asio (header-only)
  libboost-test-dev  # Boost.Test (libboost_unit_test_framework)
  liburing-dev       # liburing 2.3
  libssl-dev         # OpenSSL 3 (net/tls.h)
  openssl            # the openssl CLI: test certificates and the real TLS peers of tls_test
  wrk                # HTTP load generator for the http benchmark (bench/loopbench)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=()
if ((EUID != 0)); then
  SUDO=(sudo)
fi
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
