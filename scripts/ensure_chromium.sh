#!/usr/bin/env bash
# Installs Debian's chromium for the HTML report's browser test (tests/support/browser.py drives it
# through Playwright, which never downloads a browser of its own) when it is missing and we can
# (root with apt-get, as on CI). Otherwise the browser test skips and says why.
set -u
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian chromium for the report browser test…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium: the browser test will be skipped" >&2
else
  echo "chromium not found and not installable here: the browser test will be skipped" >&2
fi
exit 0
