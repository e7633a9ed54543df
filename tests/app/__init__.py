"""A small FastAPI app shaped like the vuemantics backend's WebSocket flow, for the
two-instance integration test (tests/test_fastapi_two_instances.py). Run with
``uvicorn app.main:app --app-dir tests`` and ``REDIS_URL`` set."""
