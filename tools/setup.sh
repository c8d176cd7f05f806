#!/usr/bin/env bash
# One-command set-up on Debian 12 or 13: apt packages, .venv, pinned Python packages.
# Idempotent: each step checks first and does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv python3-pip
              python3-matplotlib python3-scipy xvfb xauth zip unzip)
VENV=${VENV:-.venv}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

say() { printf '\n==> %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "Installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
else
  say "Debian packages present (${#APT_PACKAGES[@]} checked)"
fi

# Debian's Python, not a pyenv/conda one: only it can import qgis and osgeo.
SYS_PY=/usr/bin/python3
"$SYS_PY" -c "import qgis.core, osgeo.gdal" || { echo "Debian's python3 cannot import qgis/osgeo" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  say "Creating $VENV from $SYS_PY with system site packages"
  "$SYS_PY" -m venv --system-site-packages "$VENV"
fi

NUMPY_VERSION=$("$SYS_PY" -c "import numpy; print(numpy.__version__)")
mkdir -p "$VENV"
printf 'numpy==%s\n' "$NUMPY_VERSION" > "$VENV/constraints.txt"

stamp="$VENV/.requirements.sha"
want=$(cat requirements.txt "$VENV/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "Installing Python requirements (numpy held at Debian's $NUMPY_VERSION)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt -c "$VENV/constraints.txt"
  echo "$want" > "$stamp"
else
  say "Python requirements up to date"
fi

"$VENV/bin/python" - <<'PY'
import numpy, osgeo.gdal, qgis.core, torch, torchvision, safetensors, richdem, dask, distributed
print(f"numpy {numpy.__version__}, GDAL {osgeo.gdal.__version__}, QGIS {qgis.core.Qgis.QGIS_VERSION}, "
      f"torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
say "Set-up complete"
