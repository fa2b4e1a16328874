"""The fast memory: keys and values, writing, search and retrieval, the read hooks, fitting on
training data, free-form statements and asking."""
