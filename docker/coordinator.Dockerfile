# gpumesh coordinator image: `gpumesh coordinator serve` (the gRPC API for submitters and
# providers, artifacts, health and reflection; SQLite store and blockstore in /data; on-chain
# settlement when given --chain-url/--deployment/--chain-key-file). The same image runs the
# one-shot `gpumesh chain deploy` of docker/compose.yaml.
#
# The build context is the REPOSITORY ROOT, not docker/:
#   docker build -f docker/coordinator.Dockerfile -t gpumesh-coordinator:dev .
# (docker/coordinator.Dockerfile.dockerignore is the ignore file BuildKit uses for it.)
#
# Base image: pinned by tag. Digest pinning goes where `# pin:` says: append @sha256:<digest>
# to the tag (resolve it with `docker buildx imagetools inspect <image:tag>`). No digest is
# given here: it could not be resolved offline, and a made-up one would break every build.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# pin: @sha256:...   (append to PYTHON_IMAGE above)

# ---- build: a virtualenv with the project and its dependencies (pip install .[cpu]) ---------
FROM ${PYTHON_IMAGE} AS build
# The [cpu] extra pins torch (keep TORCH_VERSION equal to that pin, tests/test_docker_files.py
# checks it); torch's CPU build comes from TORCH_INDEX_URL. An empty TORCH_INDEX_URL with
# EXTRAS="" installs PyPI's default (CUDA) torch instead.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"; fi
WORKDIR /src
COPY pyproject.toml README.md ./
# gpumesh/chain/contracts_build is a symlink to ../../contracts/build (the compiled contracts
# that ship in the package): copy its target too so the symlink resolves in the build.
COPY contracts/build contracts/build
COPY gpumesh gpumesh
COPY coordinator coordinator
COPY provider_node provider_node
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".${EXTRAS:+[$EXTRAS]}" \
 && python -I -c "from gpumesh.chain.artifacts import find_build_dir as f; d = f(); \
        assert 'site-packages' in str(d), d; print('contracts:', d)"

# ---- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 gpumesh \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/gpumesh \
        --shell /usr/sbin/nologin gpumesh \
 && mkdir -p /data /chain \
 && chown gpumesh:gpumesh /data /chain
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /usr/local/lib/gpumesh/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GPUMESH_COORDINATOR_DATA_DIR=/data
# /data: coordinator.db + ipfs/ blockstore (mount a volume); /chain: deployment.json and
# coordinator.key from `gpumesh chain deploy --out /chain` (a volume shared with the deployer).
USER 10001:10001
WORKDIR /home/gpumesh
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/gpumesh/healthcheck.py", "127.0.0.1:50051"]
ENTRYPOINT ["gpumesh"]
CMD ["coordinator", "serve", "--listen", "0.0.0.0:50051", "--data-dir", "/data"]
