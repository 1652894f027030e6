#!/usr/bin/env bash
# Create .venv (if missing) and install LiteZoo with the tested, pinned dependencies. Safe to re-run.
# --test: also install the DICOM network peers the tests start on 127.0.0.1 (Debian packages orthanc,
# orthanc-dicomweb and dcmtk) with apt-get when run as root; elsewhere it says so, and the tests that need them skip,
# naming the package.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
if [ "${1:-}" = "--test" ]; then
  missing=()
  command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
  [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
  command -v storescu >/dev/null || missing+=(dcmtk)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
        || echo "setup.sh: apt-get could not install ${missing[*]}; the tests that need them will skip" >&2
    else
      echo "setup.sh: ${missing[*]} not installed (needs root and apt-get); the tests that need them will skip" >&2
    fi
  fi
fi
