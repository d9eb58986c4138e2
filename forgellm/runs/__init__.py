"""The run-folder format, owned in one place (layout in docs/run-format.md).

The trainer writes a run folder through these modules and every reader (CLI, web app,
analysis, eval, publishing, model resolution) asks them instead of parsing the files again:

- `layout`: file names, the one "is this a run folder" rule, finding a run by name, its config.
- `events`: the typed ``metrics.jsonl`` events, their writer and readers.
- `checkpoints`: checkpoint manifests, the one "best checkpoint" rule, choosing a checkpoint.
- `lock`: the run lock that makes the trainer the run's one writer.
- `summary`: status, progress, best and last metrics of a run, as every screen shows them.
"""
