# The mutation aggregator image: the `mutagg` console script and the edge client,
# installed (not editable) into a virtualenv on python:3.11-slim, run as a non-root
# user. Nothing is written under / at run time (byte code is compiled at build), so
# Kubernetes can mount the root read-only (k8s/ mounts /tmp and the data volume).
#   docker build -t mutation-aggregator:dev .
# Reproducible: both stages are one base image named by digest (python:3.11-slim as
# published on 2026-08-05: Python 3.11.15 on Debian trixie, the multi-platform index),
# and the dependencies are exactly requirements/runtime.txt, each file checked against
# its hash (the compiled core's build tool too; its crates are Cargo.lock's). To move
# the base: `docker buildx imagetools inspect python:3.11-slim`, and put the `Digest:` it
# prints in both FROM lines.
FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The compiled core's toolchain, in the build stage only: Debian 13's Rust (1.85;
# core/Cargo.toml asks for 1.74 or later).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cargo \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, in their own layer: a code change does not reinstall them. The
# lock's pins and hashes, wheels only; CI tests the same pins (requirements/dev.txt is
# runtime.txt plus the dev tools; tests/unit/test_lock_files.py keeps them in step).
# First the pip of requirements/pip.txt, the one `make` installs with too.
COPY requirements/pip.txt requirements/runtime.txt ./requirements/
RUN /opt/venv/bin/pip install --require-hashes --only-binary :all: -r requirements/pip.txt \
 && /opt/venv/bin/pip install --require-hashes --only-binary :all: -r requirements/runtime.txt
# The compiled core (core/, Python module mutagg_core): its wheel built by the maturin of
# requirements/maturin.txt (pinned with hashes) in a venv of its own, installed into the
# job's venv as a wheel; neither the build tool nor cargo reaches the image. Before the
# Python code: a code change does not rebuild it.
COPY requirements/maturin.txt ./requirements/
COPY core ./core
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --only-binary :all: -r requirements/pip.txt \
 && /opt/build/bin/pip install --require-hashes --only-binary :all: -r requirements/maturin.txt \
 && PATH=/opt/build/bin:$PATH /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels ./core \
 && /opt/venv/bin/pip install --no-deps /wheels/mutagg_core-*.whl \
 && /opt/venv/bin/python -c "import mutagg_core"
COPY pyproject.toml README.md ./
# Every package of [tool.setuptools.packages.find] (tests/k8s checks this list).
COPY mutagg ./mutagg
COPY dataflows ./dataflows
COPY operators ./operators
COPY sinks ./sinks
COPY sources ./sources
COPY schemas ./schemas
COPY edge ./edge
COPY bench ./bench
# The project alone, built with the lock's setuptools (no isolated build environment
# fetching an unpinned one).
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/mutagg --help >/dev/null

FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff
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
