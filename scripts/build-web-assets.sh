#!/usr/bin/env bash
# Install the web app's front-end libraries from npm (exact versions of package-lock.json)
# and copy the files the pages load into forgellm/web/static/vendor/. Nothing is loaded
# from a CDN: the app works offline.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
frontend="$here/forgellm/web/frontend"
vendor="$here/forgellm/web/static/vendor"

cd "$frontend"
npm ci --no-audit --no-fund --loglevel=error

rm -rf "$vendor"
mkdir -p "$vendor"
cp node_modules/chart.js/dist/chart.umd.min.js "$vendor/chart.umd.min.js"
cp node_modules/socket.io-client/dist/socket.io.min.js "$vendor/socket.io.min.js"
# Licences travel with the files we serve.
cp node_modules/chart.js/LICENSE.md "$vendor/chart.js.LICENSE.md"
cp node_modules/socket.io-client/LICENSE "$vendor/socket.io-client.LICENSE"
echo "web assets copied to $vendor"
