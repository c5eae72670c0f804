"""The OpenAI-compatible HTTP API (FastAPI on uvicorn): ``/v1/files``, ``/v1/batches``,
``/v1/models``. One router per resource; every handler a thin call into the batch service and
the coordinator core that gRPC serves."""
