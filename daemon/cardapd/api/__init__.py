"""Layer 6: thin gRPC servicers over the engine; role table, error mapping, servers."""
