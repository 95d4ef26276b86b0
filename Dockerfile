# CPU image of the inference service. Build: docker build -t meesho-attributes .
# The demo model repository is baked in; mount your own over /app/models/demo or set
# CATALOG_SERVICE_REPOSITORY to another mounted path. Stop with a timeout above the 20 s drain:
# docker run --stop-timeout 30 ...
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY requirements/constraints.txt ./requirements/constraints.txt
COPY catalog ./catalog
COPY service ./service
COPY model_training/__init__.py ./model_training/__init__.py
COPY export/__init__.py ./export/__init__.py
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt '.[serve]'

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
COPY --chown=app models/demo /app/models/demo
WORKDIR /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status == 200 else 1)"
# SIGTERM drains in-flight requests before exit; give it longer than the drain timeout.
STOPSIGNAL SIGTERM
ENV CATALOG_SERVICE_REPOSITORY=/app/models/demo
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
