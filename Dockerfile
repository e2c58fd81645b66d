# Hugging Face Space (Docker SDK, app_port 7860). Data lives in /data when persistent storage is
# mounted; otherwise the console warns that storage is ephemeral.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
WORKDIR /home/user/app
COPY --chown=user . .
USER user
RUN make setup
ENV STUDIO_HOST=0.0.0.0 \
    STUDIO_PORT=7860 \
    HF_HUB_DISABLE_TELEMETRY=1
EXPOSE 7860
CMD [".venv/bin/python", "launch.py"]
