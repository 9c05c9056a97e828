#!/usr/bin/env bash
# Best-effort system tools from Debian's packages: promtool (alert-rule checks in the tests) and wrk
# (the serving benchmark's load driver; it falls back to the Python engine without it).
# Never fatal: without root or apt-get it says what to install and carries on.
set -u
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "==> optional tools missing: ${need[*]} (install them with your package manager; tests that need promtool will say so)"
  exit 0
fi
echo "==> installing system tools: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/dev/null 2>&1 \
  || echo "==> could not install ${need[*]} (no package index?); continuing without"
exit 0
