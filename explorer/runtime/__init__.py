"""Where and how the computation runs: the device and host→device copies, mixed precision, the
optimizer, progress reports. Knows nothing of models, data or the workspace."""
