FROM python:3.11-slim
WORKDIR /app
# torch pinned first, so no dependency resolves a different release.
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md constraints.txt ./
COPY api api
COPY core core
COPY workers workers
COPY compression compression
COPY storage storage
COPY web web
COPY mpclient mpclient
# the versions the tests ran with (constraints.txt is the lock)
RUN pip install --no-cache-dir -c constraints.txt .
# not root: an unprivileged user owns the data folder (named volumes copy this ownership when created)
RUN useradd --create-home --uid 10001 modelpress && mkdir -p /data && chown modelpress:modelpress /data
USER modelpress
ENV MODELPRESS_HOME=/data
EXPOSE 8000
CMD ["modelpress", "api", "--host", "0.0.0.0", "--port", "8000"]
