# gpumesh workload image, vLLM: the batch-inference workload on a CUDA GPU with the vLLM engine
#   python -m provider_node.workloads.inference --engine vllm --model MODEL_DIR --input I \
#       --output O --params JSON --result R
# (`--engine auto`, the default, picks vLLM for a Hugging Face model directory when vLLM and a
# GPU are there, transformers otherwise; rescore and finetune run on torch as in worker-torch).
# Installs the project with the [gpu] extra (vllm, which pins its own torch: vllm 0.33.0 pins
# torch==2.14.0, inside the project's torch>=2.13,<2.15). No network at run time; read-only-root
# friendly: HOME, TMPDIR and vLLM/Triton/torch compile caches all fall under /work (a tmpfs,
# which must allow exec: Triton loads the kernels it compiles from there):
#   docker run --rm --gpus all --read-only --network none \
#       --tmpfs /work:rw,exec,size=16g,uid=10001,gid=10001,mode=0700 \
#       -v "$PWD/task:/task" gpumesh-worker-vllm:dev provider_node.workloads.inference \
#       --engine vllm --model /task/model --input /task/in.jsonl --output /task/out.jsonl \
#       --params '{"max_new_tokens": 64}' --result /task/result.json
#
# The build context is the REPOSITORY ROOT, not docker/:
#   docker build -f docker/worker-vllm.Dockerfile -t gpumesh-worker-vllm:dev .
# (docker/worker-vllm.Dockerfile.dockerignore is the ignore file BuildKit uses for it.)
# torch and vLLM bring their CUDA libraries as nvidia-* wheels; the CUDA base image supplies
# the matching user-space setup (NVIDIA_* env for the container toolkit); the host needs an
# NVIDIA driver new enough for the CUDA version of those wheels.
#
# Base image: pinned by tag. Digest pinning goes where `# pin:` says: append @sha256:<digest>
# to the tag (resolve it with `docker buildx imagetools inspect <image:tag>`). No digest is
# given here: it could not be resolved offline, and a made-up one would break every build.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
# pin: @sha256:...   (append to CUDA_IMAGE above)

# ---- build: a virtualenv with the project, vLLM and their dependencies (pip install .[gpu]) --
FROM ${CUDA_IMAGE} AS build
ARG EXTRAS=gpu
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
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
 && python -I -c "import importlib.metadata as m, provider_node.workloads.inference; \
        print('vllm', m.version('vllm'), 'torch', m.version('torch'))"

# ---- runtime ---------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# python3-dev + gcc: Triton (under vLLM and torch.compile) JIT-builds a small C launcher
# against Python.h at run time; util-linux: prlimit.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-dev gcc libc6-dev util-linux \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /work \
        --shell /usr/sbin/nologin worker \
 && mkdir -p /work \
 && chown worker:worker /work \
 && chmod 0700 /work
COPY --from=build /opt/venv /opt/venv
# The environment the daemon gives its workloads (provider_node/runtime/base.py base_env), and
# vLLM's: no usage reporting, caches under HOME.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/work \
    TMPDIR=/work \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TQDM_DISABLE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    CUDA_DEVICE_ORDER=PCI_BUS_ID
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["python", "-m"]
CMD ["provider_node.workloads.inference", "--help"]
