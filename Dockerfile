# The aifactory image: one image, two commands (`aifactory operator`, `aifactory api`), chosen by the chart's args.
# No torch: model servers run as Slurm jobs on the cluster, never in this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

# ssh-cli transport and token minting reach the login node with asyncssh (pure Python): no OS packages needed.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aifactory ./aifactory
COPY operator ./operator
COPY api ./api
COPY recipes ./recipes
RUN pip install . && rm -rf /src

# A fixed numeric uid so that `runAsNonRoot` can be checked by the kubelet.
RUN groupadd --system --gid 10001 aifactory \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin aifactory
USER 10001:10001
WORKDIR /tmp

EXPOSE 8001 8080
ENTRYPOINT ["aifactory"]
CMD ["operator"]
