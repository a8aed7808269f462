#!/usr/bin/env bash
# Installs what the browser test of chat-transport-ws needs, when missing:
# Debian's Chromium (/usr/bin/chromium), Node.js with npm, and the npm
# packages of tests/browser (playwright-core, which drives the installed
# Chromium; it downloads no browser of its own).
#
# Run with:
#   bash scripts/browser-setup.sh
#   cargo test -p chat-transport-ws --test browser
#
# Idempotent: does nothing for what is already there. Needs root (apt-get).
# The test finds the tools as `node` on PATH, `/usr/bin/chromium` (or
# $CHROMIUM) and tests/browser/node_modules/playwright-core.
set -euo pipefail

cd "$(dirname "$0")/.."
log() { echo "browser-setup: $*" >&2; }

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
# Fonts: a page without them renders boxes in the screenshot.
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)

if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
    log "npm install in tests/browser"
    # playwright-core never downloads a browser; keep it that way anyway.
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2 \
        || PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund >&2)
fi

log "node $(node --version), $("${CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null || echo 'chromium ?'), playwright-core $(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version")"
