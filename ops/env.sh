# Shared by the ops scripts: where things live, and installing what a fresh machine lacks.
# Source it; it defines functions and exports, and runs nothing by itself.

STEPVIEW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STEPVIEW_HOME="${STEPVIEW_HOME:-$HOME/.cache/stepview}"
# The build directory lives outside the clone so that fresh clones (and CI) reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STEPVIEW_HOME/target}"
export PATH="$HOME/.cargo/bin:$PATH"
STEPVIEW_BIN="$CARGO_TARGET_DIR/release/stepview"
TANSU_VERSION=0.6.0
mkdir -p "$STEPVIEW_HOME"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it by hand, or run as root)"; fi
}

# Debian packages the build needs: libclang-dev for RocksDB's bindings, a C/C++ toolchain for
# RocksDB and librdkafka; and those a caller names (the tests: prometheus for promtool, chromium
# for the page test).
# Each is decided by the package's own install state, never by a file name that another package
# can also provide (libclang-cpp14 ships a `libclang-cpp.so` that is not what bindgen loads).
package_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

ensure_packages() {
  local wanted=(libclang-dev g++ make curl ca-certificates "$@") missing=() package
  for package in "${wanted[@]}"; do package_installed "$package" || missing+=("$package"); done
  # python3 runs the scripts' small helpers and pip installs schemathesis; any python3 on PATH
  # will do (pyenv's included).
  command -v python3 >/dev/null || missing+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
}

# Python packages the tests run, decided by pip's own record of the package and version:
# schemathesis checks the OpenAPI document against a live instance; bkapi-client-core is
# BlueKing's toolkit for API clients, with which a test calls stepview as a SaaS would;
# mysql-replication (with pymysql) reads MariaDB's binlog and confluent-kafka writes the change
# events for the change-data-capture tests (tests/cdc/).
PYTHON_PACKAGES=("schemathesis==4.32.5" "bkapi-client-core==1.2.0" "mysql-replication==1.0.17" "confluent-kafka==2.16.1")
ensure_python_packages() {
  local wanted name version flags=()
  # Debian's own python3 refuses installs outside a virtualenv unless told (PEP 668).
  if [ -e "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
    flags+=(--break-system-packages)
  fi
  for wanted in "${PYTHON_PACKAGES[@]}"; do
    name="${wanted%%==*}" version="${wanted##*==}"
    # grep reads all of pip's output (no -q): with pipefail, pip writing into a closed pipe
    # failed the check, and the package was installed again on every run.
    if ! python3 -m pip show "$name" 2>/dev/null | grep -x "Version: $version" >/dev/null; then
      say "installing $wanted (PyPI)"
      python3 -m pip install -q --disable-pip-version-check "${flags[@]}" "$wanted" \
        || die "cannot install $name from PyPI (pip install $wanted)"
    fi
  done
  # pip may put its scripts outside PATH (user installs).
  PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  export PATH
}

# Says once, before the long steps start, how long a machine's first run takes and why.
announce_first_build() {
  local steps=()
  tansu_installed || steps+=("the Tansu broker (~15 min)")
  [ -x "$STEPVIEW_BIN" ] || steps+=("stepview with RocksDB and librdkafka (~25 min)")
  if [ ${#steps[@]} -gt 0 ]; then
    say "first run on this machine: building ${steps[*]} from source on $(nproc) cores."
    say "This happens once (kept in $STEPVIEW_HOME and ~/.cargo/bin); later runs start in seconds."
  fi
}

# Test and benchmark binaries pile up in the shared build directory, about 400 MB each: every
# clone at another path (CI's) and every change links a new set, and an old set is never read
# again. Of each test or benchmark only the newest binary stays (proc-macro libraries, *.so,
# stay: everything depends on them); cargo links again any it still needs. (The directory
# filled a disk twice.)
prune_build_dir() {
  local deps="$CARGO_TARGET_DIR/release/deps" name
  [ -d "$deps" ] || return 0
  for name in $(find "$deps" -maxdepth 1 -type f -executable ! -name '*.*' -printf '%f\n' | sed 's/-[0-9a-f]*$//' | sort -u); do
    ls -t "$deps" | grep -E "^$name-[0-9a-f]+$" | tail -n +2 | sed "s|^|$deps/|" | xargs -r rm -f
  done
}

# The local Kafka-protocol broker (Tansu, from crates.io), decided by what cargo installed.
tansu_installed() {
  cargo install --list 2>/dev/null | grep "^tansu v$TANSU_VERSION:" >/dev/null && command -v tansu >/dev/null
}

ensure_tansu() {
  if ! tansu_installed; then
    say "installing the Tansu broker $TANSU_VERSION (one-time build, ~15 min on 2 cores)"
    # Its own build directory, removed afterwards: nothing of it is reused, and it is large.
    CARGO_TARGET_DIR="$STEPVIEW_HOME/tansu-build" \
      cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore
    rm -rf "$STEPVIEW_HOME/tansu-build"
  fi
}

build_stepview() {
  say "building stepview (release; first build ~15 min on 2 cores, then incremental)"
  (cd "$STEPVIEW_ROOT" && cargo build --release --locked --bin stepview)
}

wait_for_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
