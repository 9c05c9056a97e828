# The project's own processes (control plane, model servers, meshctl train, fault proxy) in one
# image; docker-compose.yml and k8s/ pick the process with the command. Envoy, NATS, Toxiproxy,
# MLflow's UI, Prometheus and Grafana run from their own official images.
#
# The install mirrors scripts/setup-venv.sh: two pip phases, service stack first, ML stack second
# (MLflow must come after xds-protos; see /work/shared/ENVIRONMENT.md). torch is pinned to a CPU
# release in pyproject.toml; a plain package index serves its CUDA build (GBs). To get the CPU
# wheel, pass your CPU wheel index as a build argument (no index is named here):
#   docker compose build --build-arg PIP_EXTRA_INDEX_URL=<cpu wheel index>
FROM python:3.11.13-slim-bookworm

# libgomp1: OpenMP runtime that the xgboost and onnxruntime wheels link against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    MESH_HOME=/var/lib/mesh

WORKDIR /app
# Dependencies first, read from pyproject.toml (which changes rarely), so that a code change does
# not reinstall them.
COPY pyproject.toml README.md ./
# Build-time only (not kept in the image's environment).
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --upgrade pip setuptools wheel \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
open('/tmp/phase1.txt', 'w').write('\n'.join(p['dependencies'])); \
open('/tmp/phase2.txt', 'w').write('\n'.join(p['optional-dependencies']['ml']))" \
 && pip install -r /tmp/phase1.txt \
 && pip install -r /tmp/phase2.txt \
 && rm /tmp/phase1.txt /tmp/phase2.txt
COPY data_plane data_plane
COPY control_plane control_plane
COPY model_servers model_servers
COPY training training
COPY chaos chaos
COPY tui tui
COPY meshctl meshctl
COPY envoy envoy
# Editable: the code stays in /app, so data_plane.settings.REPO_ROOT and the Envoy templates
# (control_plane/xds/bootstrap.py reads /app/envoy/) resolve exactly as in a checkout.
RUN pip install --no-deps -e .
# Fail the build, not the first request, when the stack does not import together.
RUN python -c "import mlflow, envoy.config.cluster.v3, grpc, xgboost, torch, onnxruntime, control_plane.xds" \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/mesh mesh \
 && mkdir -p /var/lib/mesh && chown mesh:mesh /var/lib/mesh

USER mesh
# MESH_HOME: registry (sqlite + artifacts), control-plane state and ledger, logs, operator token.
VOLUME /var/lib/mesh
EXPOSE 8001 8002 8003 8101 8102 8100 18000
CMD ["meshctl", "--help"]
