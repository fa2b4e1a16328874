"""Loading frozen language models: the registry, offline assets, GGUF conversion and tiny random
models for tests."""
