"""Experiments on the memory: binding tasks and task files, the prompts a memory is read with,
evaluation, metrics and intervals, and the recall runner (``fmi recall``)."""
