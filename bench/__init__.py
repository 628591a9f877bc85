"""zkalloc-np benchmarks: prover allocation patterns, one allocator per subprocess."""
