"""What a trial depends on: source tree, code closure, input files, libraries."""
