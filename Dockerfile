# The mutation aggregator image: the `mutagg` console script and the edge client,
# installed (not editable) into a virtualenv on python:3.11-slim, run as a non-root
# user. Nothing is written under / at run time (byte code is compiled at build), so
# Kubernetes can mount the root read-only (k8s/ mounts /tmp and the data volume).
#   docker build -t mutation-aggregator:dev .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, in their own layer: a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN /opt/venv/bin/python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.run([sys.executable, '-m', 'pip', 'install', *deps], check=True)"
# Every package of [tool.setuptools.packages.find] (tests/k8s checks this list).
COPY mutagg ./mutagg
COPY dataflows ./dataflows
COPY operators ./operators
COPY sinks ./sinks
COPY sources ./sources
COPY schemas ./schemas
COPY edge ./edge
COPY bench ./bench
RUN /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/mutagg --help >/dev/null

FROM python:3.11-slim
RUN groupadd --system --gid 10001 mutagg \
 && useradd --system --uid 10001 --gid mutagg --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mutagg \
 && mkdir -p /var/lib/mutagg \
 && chown mutagg:mutagg /var/lib/mutagg
COPY --from=build /opt/venv /opt/venv
# HOME on /tmp: anything that caches under $HOME writes to the pod's emptyDir.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/mutagg
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 9500 9464
ENTRYPOINT ["mutagg"]
CMD ["--help"]
