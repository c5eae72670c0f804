"""Workloads a provider runs in its sandbox: batch inference (``inference``) over model
artifacts (``models``), with engines for vLLM and transformers (``engines``) and a tiny seeded
test model (``tiny``). Nothing heavy is imported here."""
