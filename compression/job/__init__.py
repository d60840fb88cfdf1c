"""The job runner: load, compress (stages), write and verify artifacts, measure."""
