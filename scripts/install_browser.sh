#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian's packages (chromium, chromium-driver)
# for the dashboard's browser test, unless they are already there. Needs root (or sudo).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "error: chromium and chromium-driver are missing and installing them needs root (apt-get install chromium chromium-driver)" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
command -v chromium >/dev/null && command -v chromedriver >/dev/null
