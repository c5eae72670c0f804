# gpumesh workload image, torch: the task programs a provider runs, as a container of their own
#   python -m provider_node.workloads.inference|rescore|finetune --model M --input I --output O \
#       --params JSON --result R
# (torch + transformers + peft + gguf; the same CLI the daemon runs as child processes today).
# It needs no network at run time (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE: models come in as
# files) and runs with a read-only root filesystem: everything it writes goes to /work
# (HOME and TMPDIR), which is meant to be a tmpfs or the task's mounted workdir:
#   docker run --rm --read-only --network none --cap-drop ALL \
#       --tmpfs /work:rw,exec,size=4g,uid=10001,gid=10001,mode=0700 \
#       -v "$PWD/task:/task" gpumesh-worker-torch:cpu provider_node.workloads.inference \
#       --model /task/model.gguf --input /task/in.jsonl --output /task/out.jsonl \
#       --params '{"max_new_tokens": 16}' --result /task/result.json
#
# The build context is the REPOSITORY ROOT, not docker/:
#   docker build -f docker/worker-torch.Dockerfile -t gpumesh-worker-torch:cpu .             # CPU
#   docker build -f docker/worker-torch.Dockerfile -t gpumesh-worker-torch:cuda \
#       --build-arg TORCH_INDEX_URL= --build-arg EXTRAS= .                                  # CUDA
# The CUDA build takes PyPI's default torch wheel, which brings its CUDA runtime libraries as
# nvidia-* wheels: the host needs only the NVIDIA driver and container toolkit (`--gpus all`).
# (docker/worker-torch.Dockerfile.dockerignore is the ignore file BuildKit uses for it.)
#
# Base image: pinned by tag. Digest pinning goes where `# pin:` says: append @sha256:<digest>
# to the tag (resolve it with `docker buildx imagetools inspect <image:tag>`). No digest is
# given here: it could not be resolved offline, and a made-up one would break every build.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# pin: @sha256:...   (append to PYTHON_IMAGE above)

# ---- build: a virtualenv with the project and its dependencies (pip install .[cpu]) ---------
FROM ${PYTHON_IMAGE} AS build
# The [cpu] extra pins torch (keep TORCH_VERSION equal to that pin, tests/test_docker_files.py
# checks it); torch's CPU build comes from TORCH_INDEX_URL.
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
 && python -I -c "import torch, transformers, peft, gguf; \
        import provider_node.workloads.inference, provider_node.workloads.rescore, provider_node.workloads.finetune; \
        print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# util-linux: prlimit, for a runtime that caps a task's memory as the daemon does.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /work \
        --shell /usr/sbin/nologin worker \
 && mkdir -p /work \
 && chown worker:worker /work \
 && chmod 0700 /work
COPY --from=build /opt/venv /opt/venv
# The environment the daemon gives its workloads (provider_node/runtime/base.py base_env).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/work \
    TMPDIR=/work \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TQDM_DISABLE=1
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["python", "-m"]
CMD ["provider_node.workloads.inference", "--help"]
