#!/usr/bin/env bash
# Builds the Python package's wheel (manylinux2014, with zig) and runs its tests in fresh virtual environments
# (outside the repository):
#   - on `python3` (or $PYTHON) with numpy 2, Optuna and psycopg, which includes the Optuna example's workers
#     (one killed and resumed) on SQLite, and on a throwaway PostgreSQL server (scripts/with-postgres.sh) where
#     PostgreSQL's server programs are installed;
#   - on Python 3.9, the oldest the wheel supports, with numpy 1, where a Python 3.9 is installed.
# Needs `cargo build --release` first (the tests compare with the `lenet5` program).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

venv() { # venv DIR PYTHON PACKAGES...: a virtual environment at DIR with PACKAGES installed
  local dir=$1 python=$2
  shift 2
  "$python" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
}

python=${PYTHON:-python3}
# The wheel as it would be published: linked by zig against glibc 2.17 (manylinux2014), so that it installs on
# any Linux of the last decade, not only on one as new as this machine's.
venv "$work/build" "$python" "maturin>=1.9.4,<2" ziglang
PATH="$work/build/bin:$PATH" "$work/build/bin/maturin" build --release --locked --manifest-path python/Cargo.toml \
  --zig --compatibility manylinux2014 --out "$work/wheels"
wheel=$(ls "$work"/wheels/lenet5-*.whl)
echo "wheel: $(basename "$wheel"), $(du -k "$wheel" | cut -f1) KiB"

run_tests() { # run_tests VENV: the suite on the installed wheel, from outside the source tree
  (cd "$work" && LENET5_BIN="$repo/target/release/lenet5" "$1/bin/python" -m pytest -q -p no:cacheprovider \
    "$repo/python/tests")
}

# The driver the Python guide's PostgreSQL recipe installs, as it installs it.
venv "$work/numpy2" "$python" "$wheel" "numpy>=2" pytest optuna "psycopg[binary]"
if ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1; then
  export -f run_tests
  export work repo
  LENET5_REQUIRE_OPTUNA=1 LENET5_REQUIRE_POSTGRES=1 scripts/with-postgres.sh bash -c 'run_tests "$work/numpy2"'
else
  echo "note: no PostgreSQL server programs here; the Optuna example is tested on SQLite only"
  LENET5_REQUIRE_OPTUNA=1 run_tests "$work/numpy2"
fi

find_python39() { # a Python 3.9 that can make virtual environments: on the PATH, or one of pyenv's
  local p
  for p in python3.9 $(ls -d "$(pyenv root 2>/dev/null)"/versions/3.9*/bin/python3.9 2>/dev/null); do
    if "$p" -c 'import venv' >/dev/null 2>&1; then
      echo "$p"
      return
    fi
  done
}
python39=$(find_python39)
if [ -n "$python39" ]; then
  venv "$work/numpy1" "$python39" "$wheel" "numpy<2" pytest
  run_tests "$work/numpy1"
else
  echo "note: no Python 3.9 here; the wheel is tested on $("$python" --version) only"
fi
