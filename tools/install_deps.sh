#!/usr/bin/env bash
# Installs polyloop's build and test dependencies from Debian 12's archive.
# Idempotent and quick (no apt calls) when everything is already installed.
# Run as root (CI and the dev machines run as root); otherwise uses sudo.
#
#   tools/install_deps.sh --peers   also installs what `loopbench --peers` compares
#                                   polyloop with that the build does not need:
#                                   python3-uvloop (the asyncio and uvloop peers run
#                                   with /usr/bin/python3) and nginx-light (the http
#                                   peer; loopbench runs its own nginx process with a
#                                   generated configuration, and the package's own
#                                   service is not needed)
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
  libuv1-dev         # libuv 1.44, for loopbench's libuv peer (bench/peers)
)

for arg in "$@"; do
  case "$arg" in
    --peers) PACKAGES+=(python3-uvloop nginx-light) ;;
    *) echo "install_deps: unknown argument '$arg' (usage: install_deps.sh [--peers])" >&2; exit 2 ;;
  esac
done

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
