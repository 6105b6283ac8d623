# connect-collector: built as a wheel, installed (not editable) into a slim runtime image.
#   docker build -t connect-collector .
#   docker run --rm connect-collector collector --version

# -- build: the wheel, and wheels of every runtime dependency --------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY collector ./collector
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /dist/connect_collector-*.whl

# -- runtime: the installed wheel, a non-root user, a health check ---------------------
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --user-group collector
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels connect-collector \
 && rm -rf /wheels
USER collector
WORKDIR /home/collector
ENV PYTHONUNBUFFERED=1
EXPOSE 8080
# /healthz answers while the process is alive; the port follows COLLECTOR_API__PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COLLECTOR_API__PORT', '8080'), timeout=2)"
CMD ["collector", "serve"]
