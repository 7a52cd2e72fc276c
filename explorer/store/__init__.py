"""The workspace: the SQLite catalog of records, the artifact files they point to (every file
name and the loaders that read them back, `artifacts`), and the background jobs that fill it.

Only explorer.pipeline (which publishes), explorer.present (which reads) and the CLI use it: the
training, memorization, unlearning and evaluation packages never see a workspace."""
