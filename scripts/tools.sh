#!/usr/bin/env bash
# Installs the command-line tools the README's walk-throughs use (make test
# runs them): curl and jq, with apt-get when they are missing.
set -euo pipefail
missing=()
for tool in curl jq; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "tools.sh: installing ${missing[*]} with apt-get (the walk-throughs use them)" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tools.sh: no apt-get here: install ${missing[*]} yourself" >&2; exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
