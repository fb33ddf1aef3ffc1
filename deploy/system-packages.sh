#!/usr/bin/env bash
# System tools the test suite and benchmarks need, installed from Debian when missing:
#   chromium + chromium-driver  the dashboard's browser test (headless Chromium)
#   wrk                         `sigflow bench api` (HTTP load generator)
# Idempotent: does nothing when every tool is there. Called by `make install`.
set -euo pipefail
declare -A TOOLS=([chromium]=chromium [chromedriver]=chromium-driver [wrk]=wrk)
missing=()
for tool in "${!TOOLS[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${TOOLS[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing Debian packages: ${missing[*]}; install them (apt-get install -y ${missing[*]})" \
       "- the browser test and the API benchmark need them" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
