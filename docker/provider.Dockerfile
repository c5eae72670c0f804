# gpumesh provider daemon image: `gpumesh provider run` (registers with a coordinator, leases
# tasks, runs the workloads `python -m provider_node.workloads.*` as child processes, uploads
# results). Wallet key, model cache and task workdirs live in /data (mount a volume: the wallet
# key is the provider's identity and its payouts).
#
# The build context is the REPOSITORY ROOT, not docker/:
#   docker build -f docker/provider.Dockerfile -t gpumesh-provider:dev .               # CPU torch
#   docker build -f docker/provider.Dockerfile -t gpumesh-provider:cuda \
#       --build-arg TORCH_INDEX_URL= --build-arg EXTRAS= .                            # CUDA torch
# (docker/provider.Dockerfile.dockerignore is the ignore file BuildKit uses for it.)
#
# Sandbox: workloads run in bubblewrap inside the container, so they never see /data (the wallet
# key). bwrap builds its sandbox from unprivileged user namespaces, which Docker's default seccomp
# and AppArmor profiles refuse: run the container with `--security-opt seccomp=unconfined
# --security-opt apparmor=unconfined` (docker/compose.yaml does; no capability is added). Without
# a working sandbox the daemon refuses to start (`--runtime process --unisolated` overrides it,
# and then workloads can read the key).
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
# gpumesh/chain/contracts_build is a symlink to ../../contracts/build: copy its target too.
COPY contracts/build contracts/build
COPY gpumesh gpumesh
COPY coordinator coordinator
COPY provider_node provider_node
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".${EXTRAS:+[$EXTRAS]}" \
 && python -I -c "import torch, transformers, peft, provider_node.workloads.inference; \
        print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# bubblewrap: the sandboxed runtime where it can work; util-linux: prlimit (task memory caps).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap util-linux \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gpumesh \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/gpumesh \
        --shell /usr/sbin/nologin gpumesh \
 && mkdir -p /data \
 && chown gpumesh:gpumesh /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    GPUMESH_PROVIDER_DATA_DIR=/data
USER 10001:10001
WORKDIR /home/gpumesh
# No EXPOSE: the daemon only dials out (to the coordinator); it listens on nothing.
ENTRYPOINT ["gpumesh"]
# auto: the bwrap sandbox (the container needs seccomp=unconfined and apparmor=unconfined for
# its user namespaces; compose.yaml sets them); without a working sandbox the daemon refuses to start.
CMD ["provider", "run", "--data-dir", "/data", "--runtime", "auto"]
