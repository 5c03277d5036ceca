# One image for api, cache and consumer; each compose service picks its module.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY standin ./standin
COPY tools ./tools
RUN pip install . \
 && useradd --system --uid 10001 rinha \
 && mkdir -p /run/rinha /var/lib/rinha/spool /var/lib/rinha/cache \
 && chown -R rinha /run/rinha /var/lib/rinha
USER rinha
CMD ["python", "-m", "services.api"]
