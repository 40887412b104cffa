# The billing gateway: `serve` against the upstreams configured by GATEWAY_* variables.
#   docker build -t billing-gateway .
#   docker run -p 8000:8000 -e GATEWAY_API_KEYS=... -e GATEWAY_ALMANAC_TOKEN=... billing-gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home gateway

USER gateway
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

ENTRYPOINT ["billing-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--workers", "2"]
