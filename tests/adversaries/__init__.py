"""Adversarial provider workloads for end-to-end tests of spot-checked verification.

Each module is a drop-in for ``provider_node.workloads.inference`` (same CLI, output JSONL and
result JSON), or for ``provider_node.workloads.finetune`` (``skip_steps``), configured by the JSON
in env ``GPUMESH_ADVERSARY``:

* ``tests.adversaries.wrong_outputs``: honest inference, then plausible wrong completions on a
  seeded, predictable fraction of tasks.
* ``tests.adversaries.smaller_model``: the model with its last decoder layers removed.
* ``tests.adversaries.lazy_copy``: colluders sharing a directory; copies a stored output for the
  same prompt set instead of computing.
* ``tests.adversaries.skip_steps``: a fine-tune that trains only part of each checkpoint segment
  but writes every checkpoint, manifest and loss line (its replays stay honest).

A provider runs one with :func:`tests.adversaries.common.provider_env` (``tests`` is not an
installed package, so that env also puts the repository root on the workload's ``PYTHONPATH``).
"""
