"""The control plane's HTTP API (FastAPI): app factory (``app.create_app``), routers per
caller kind, authentication, the one error mapping, request/response models and the
OpenAPI export. May import use cases, ports and adapters (composition), never boto3
directly except in ``deps`` where clients are built."""
