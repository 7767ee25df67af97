#!/usr/bin/env bash
# Install the Debian packages that the browser, desktop and not-a-digit tests need, if missing.
# Needs root (CI runs as root); otherwise says what to install and carries on.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xdotool >/dev/null || need+=(xdotool)
# The TrueType glyphs of digitlab.negatives (fitting the not-a-digit detector, its tests).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: please install: sudo apt-get install ${need[*]}" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
