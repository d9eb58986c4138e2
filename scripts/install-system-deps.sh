#!/usr/bin/env bash
# Install the Debian packages listed in $1 that are missing. As root it runs apt-get;
# otherwise it prints the command to run. On macOS there is nothing to install.
set -euo pipefail
list=${1:-apt-packages.txt}
if [ "$(uname -s)" != "Linux" ] || ! command -v dpkg-query >/dev/null 2>&1; then
  echo "system-deps: not a Debian-like system, nothing to install"; exit 0
fi
missing=()
while read -r pkg; do
  case "$pkg" in ''|'#'*) continue ;; esac
  # node and npm may come from elsewhere (nvm, nodesource): accept them on PATH.
  if [ "$pkg" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < "$list"
if [ ${#missing[@]} -eq 0 ]; then echo "system-deps: all present"; exit 0; fi
if [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "system-deps: missing ${missing[*]}; install them with:" >&2
  echo "  sudo apt-get install ${missing[*]}" >&2
  echo "ForgeLLM still runs without them (slower MLX on CPU, no browser tests)." >&2
fi
