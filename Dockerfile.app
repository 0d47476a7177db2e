# The VQA service image: the Flask app under gunicorn with CPU PyTorch. No model is baked in:
# mount one at /models (base at /models/base, adapters at /models/adapters). docs/containers.md
# has the build arguments, the volumes, the environment and how CI builds it.

# Any Debian-based image with Python 3.11 (python3) and venv: the official slim image by default,
# or the local debootstrap image docker/make_base_image.sh builds where no registry is reachable.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
FROM ${BASE_IMAGE}

# Where PyTorch comes from: the CPU wheels by default (no CUDA libraries). A build that cannot reach
# them passes another index, or an empty value for pip's configured one (PyPI's wheel brings CUDA).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_VERSION=26.3
ARG APP_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A venv: Debian's own python3 refuses system-wide pip installs (PEP 668), and one layout serves both bases.
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir "pip==${PIP_VERSION}" \
    && groupadd --gid "$APP_UID" vqa \
    && useradd --uid "$APP_UID" --gid vqa --create-home --home-dir /home/vqa --shell /usr/sbin/nologin vqa \
    && install -d -o vqa -g vqa -m 0750 /var/lib/vqa /var/lib/vqa/spool

# Dependencies before code, so editing the app does not reinstall PyTorch. The list is read from
# pyproject.toml (the one place it is kept); torch first, from TORCH_INDEX_URL.
COPY pyproject.toml docker/pyproject_deps.py /tmp/build/
RUN python /tmp/build/pyproject_deps.py /tmp/build/pyproject.toml /tmp/build \
    && pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r /tmp/build/torch.txt \
    && pip install --no-cache-dir -r /tmp/build/requirements.txt \
    && if pip show watchdog >/dev/null 2>&1; then echo "PyPI's watchdog was installed; it would shadow the project's package" >&2; exit 1; fi \
    && rm -rf /tmp/build

WORKDIR /opt/vqa
COPY app/ ./app/
COPY watchdog/ ./watchdog/
COPY scripts/ ./scripts/
COPY gunicorn.conf.py ./
# PYTHONPATH puts the project's packages ahead of site-packages: `python -m watchdog` is this project's.
ENV PYTHONPATH=/opt/vqa
RUN python -c "import app, watchdog; assert watchdog.__file__ == '/opt/vqa/watchdog/__init__.py', watchdog.__file__"

# Paths inside the container (app/config.py documents each variable). Models and images are mounted.
ENV VQA_MODEL_DIR=/models/base \
    VQA_ADAPTERS_DIR=/models/adapters \
    VQA_DATA_DIR=/data \
    VQA_IMAGES_ROOT=/data/images \
    VQA_SPOOL_DIR=/var/lib/vqa/spool \
    WATCHDOG_STATE_FILE=/var/lib/vqa/watchdog_state.json \
    HF_HUB_OFFLINE=1 \
    HOME=/home/vqa

USER ${APP_UID}:${APP_UID}
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=4)"]
# Workers, threads and batching come from the environment through gunicorn.conf.py (WEB_CONCURRENCY,
# GUNICORN_THREADS, VQA_MAX_BATCH, ...; flags here would override them); it also flushes queued events on
# exit. The heartbeat file on tmpfs so a slow or read-only root filesystem cannot stall workers.
CMD ["gunicorn", "--config", "/opt/vqa/gunicorn.conf.py", "--bind", "0.0.0.0:5000", \
     "--worker-tmp-dir", "/dev/shm", "app:create_app()"]
