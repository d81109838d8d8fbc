#!/usr/bin/env bash
# Builds the wheel of the compiled core (core/: Rust through PyO3, built by maturin) once
# per content of core/, and prints its path. `make` installs it into the venv.
#
#   core/wheel.sh PYTHON    PYTHON: the interpreter the build tool runs on (the wheel is
#                           abi3, cp311-abi3: any CPython >= 3.11)
#
# Cached under $MUTAGG_CACHE_DIR/core (default ~/.cache/mutation-aggregator/core, beside
# the Kafka jars of services/services.sh), outside the checkout, so a fresh clone whose
# core/ did not change builds nothing:
#   wheels/HASH/     the wheel of core/ whose sources (and build tool pins) hash to HASH
#   target/          cargo's build directory (CARGO_TARGET_DIR): an edit recompiles what changed
#   maturin-HASH/    a venv holding requirements/maturin.txt (pinned with hashes), by its hash
#
# Needs cargo, Rust >= RUST_MIN (PyO3 0.27, and the crates Cargo.lock pins): found on PATH,
# else in ~/.cargo/bin (where rustup puts it), else $CARGO.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${1:?usage: core/wheel.sh PYTHON}
RUST_MIN=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' core/Cargo.toml)
CACHE_DIR=${MUTAGG_CACHE_DIR:-$HOME/.cache/mutation-aggregator}/core
BUILD_LOCK=requirements/maturin.txt

# Every file the build reads, by name and content.
sources=$(find core -path core/target -prune -o -type f \( -name '*.rs' -o -name 'Cargo.*' -o -name '*.toml' \) \
  -print | LC_ALL=C sort)
hash=$(sha256sum $sources "$BUILD_LOCK" | sha256sum | cut -c1-16)
wheels=$CACHE_DIR/wheels/$hash
if compgen -G "$wheels/*.whl" >/dev/null; then
  ls "$wheels"/*.whl
  exit 0
fi

cargo=$(command -v cargo || true)
if [[ -z $cargo && -x $HOME/.cargo/bin/cargo ]]; then cargo=$HOME/.cargo/bin/cargo; fi
cargo=${CARGO:-$cargo}
fail() {
  echo "core/wheel.sh: $1" >&2
  echo "  The compiled core (core/) needs Rust >= $RUST_MIN: install it with rustup (https://rustup.rs)," >&2
  echo "  or your system's package (Debian 13: apt-get install cargo), then run make again." >&2
  exit 1
}
[[ -n $cargo && -x $cargo ]] || fail "cargo is not on PATH, nor in ~/.cargo/bin"
version=$("$cargo" --version | awk '{print $2}')
[[ $(printf '%s\n%s\n' "$RUST_MIN" "${version%%-*}" | sort -V | head -1) == "$RUST_MIN" ]] \
  || fail "$cargo is version $version, older than $RUST_MIN"
export PATH=$(dirname "$cargo"):$PATH  # maturin runs cargo, and cargo rustc, by name (and pip maturin)

tool_hash=$(sha256sum "$BUILD_LOCK" requirements/pip.txt | sha256sum | cut -c1-16)
tool=$CACHE_DIR/maturin-$tool_hash
if [[ ! -x $tool/bin/maturin ]]; then
  rm -rf "$tool"
  "$PYTHON" -m venv "$tool"
  "$tool/bin/pip" install --quiet --disable-pip-version-check --require-hashes --only-binary :all: \
    -r requirements/pip.txt
  "$tool/bin/pip" install --quiet --disable-pip-version-check --require-hashes --only-binary :all: -r "$BUILD_LOCK"
fi

echo "core/wheel.sh: building the compiled core with $cargo ($version); a build from scratch takes minutes" >&2
mkdir -p "$CACHE_DIR/wheels"
staging=$(mktemp -d "$CACHE_DIR/wheels/.building-XXXXXX")
trap 'rm -rf "$staging"' EXIT
PATH=$tool/bin:$PATH CARGO_TARGET_DIR=$CACHE_DIR/target "$tool/bin/pip" wheel --quiet --disable-pip-version-check --no-deps \
  --no-build-isolation --wheel-dir "$staging" ./core >&2
rm -rf "$wheels"
mv "$staging" "$wheels"  # whole, or not at all
trap - EXIT
ls "$wheels"/*.whl
