#!/usr/bin/env bash
# Debian's Chromium for the real-browser UI tests (Playwright drives it via executable_path; the
# package's own browser download cannot run here). Idempotent: does nothing when it is installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
  echo "setup: chromium is missing and this user cannot install it (apt-get install chromium); browser tests will fail" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
echo "setup: installing Debian's chromium for the browser tests…"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
