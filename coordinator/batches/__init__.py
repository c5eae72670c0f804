"""OpenAI-style batches over the coordinator core: a batch file becomes one job's input
(``translate``), the job's outputs become the batch's output and error files (``results``), and
``service`` keeps the batch objects, files, keys and models the HTTP API serves."""
