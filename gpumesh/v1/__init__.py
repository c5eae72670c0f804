"""Generated protobuf/gRPC stubs for the gpumesh.v1 API (see proto/; regenerate with
``python proto/generate.py``)."""
