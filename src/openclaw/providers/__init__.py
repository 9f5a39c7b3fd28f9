"""Model backends: each turns a ``ModelRequest`` into a stream of ``ProviderEvent``s."""
