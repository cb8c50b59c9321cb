"""The real test bed: ZooKeeper processes and throwaway TLS certificates for the tests and the demo."""
