"""The stream, generator to commit: producer, queue, router, batcher, consumers, checkpoint."""
