FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY migrations ./migrations
RUN pip install --no-cache-dir -e .
USER nobody
EXPOSE 8080
CMD ["collector", "serve"]
