FROM python:3.11-slim
WORKDIR /app
# CPU build of torch, pinned (the default index would pull a CUDA build).
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY api api
COPY workers workers
COPY compression compression
COPY storage storage
COPY web web
RUN pip install --no-cache-dir .
ENV MODELPRESS_HOME=/data
EXPOSE 8000
CMD ["modelpress", "api", "--host", "0.0.0.0", "--port", "8000"]
