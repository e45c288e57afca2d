# The Switchyard gateway image, deployed by helm/switchyard.
#
#   docker build -t registry.example.com/switchyard:0.1.0 .
#   helm install sy helm/switchyard --set image.repository=registry.example.com/switchyard
#
# Not built in this repository's CI: its machines reach package registries only, not image
# registries, so the python:3.11-slim base cannot be pulled there. The chart is tested by
# rendering it (tests/unit/test_helm_chart.py), not by running this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed non-root user; the chart's securityContext runs as the same ids (10001).
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin switchyard

WORKDIR /src
# Only what `pip install .` needs (see .dockerignore); the source tree is removed after, the
# installed package (with the shipped difficulty model) lives in site-packages.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY router ./router
COPY backends ./backends
COPY policies ./policies
RUN pip install . && rm -rf /src

WORKDIR /
USER 10001:10001
EXPOSE 8080

ENTRYPOINT ["switchyard"]
CMD ["serve", "--policy", "/etc/switchyard/policy.yaml", "--host", "0.0.0.0", "--port", "8080"]
